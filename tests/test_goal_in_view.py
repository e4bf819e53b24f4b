"""omega.diagnostics.goal_in_view on hand-made recordings: the goal counts as in view only
within the radius of the hero, and episodes are grouped by how they ended."""

import json

import pytest

from omega.diagnostics import goal_in_view


def _frame(hero: tuple[int, int], goal: tuple[int, int] | None) -> bytes:
    """A screen with the hero and the goal at (row, col), 1-based tty coordinates."""
    out = b"\033[2J"
    for (row, col), char in ((hero, b"@"), (goal, b">")):
        if row is not None:
            out += b"\033[%d;%dH" % (row, col) + char
    return out


def test_goal_in_view_by_ending(tmp_path, capsys, write_ttyrec):
    recs = tmp_path / "recs"
    recs.mkdir()
    # Seed 1: the goal 3 columns away in 2 of 4 frames (in view at radius 4), 6 away in one.
    write_ttyrec(recs / "seed1.ttyrec3.bz2", [_frame((5, 10), (5, 16)), _frame((5, 13), (5, 16)),
                                       _frame((5, 14), (5, 16)), _frame((5, 10), (None, 0))])
    # Seed 2: the goal is never within 4 cells; the hero stands on 2 cells.
    write_ttyrec(recs / "seed2.ttyrec3.bz2", [_frame((8, 10), (2, 40)), _frame((8, 11), (2, 40)),
                                       _frame((8, 10), (2, 40))])
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"seeds": [1, 2], "endings": ["solved", "time_limit"],
                              "lengths": [4, 3]}))
    goal_in_view.main(["--eval-json", str(ev), "--records", str(recs), "--json",
                       str(tmp_path / "out.json")])
    out = json.loads((tmp_path / "out.json").read_text())
    first, second = out["episodes"]
    assert first["goal_in_view_share"] == pytest.approx(0.5)
    assert first["first_in_view_frame"] == 1 and first["distinct_cells"] == 3
    assert second["goal_in_view_share"] == 0 and second["first_in_view_frame"] is None
    assert second["distinct_cells"] == 2
    # Seed 2 spends 2 of its 3 frames on one cell (map row 8 - 2, col 10 - 1).
    assert second["busiest_cell"] == [6, 9] and second["top4_share"] == pytest.approx(1.0)
    assert first["busiest_cell"] == [3, 9] and first["top4_share"] == pytest.approx(1.0)
    assert out["by_ending"]["time_limit"]["mean_top4_share"] == pytest.approx(1.0)
    assert out["by_ending"]["time_limit"]["never_in_view"] == 1
    assert out["by_ending"]["solved"]["never_in_view"] == 0
    assert "time_limit" in capsys.readouterr().out
    # A wider radius sees seed 1's far frame too.
    assert goal_in_view.summarise(ev, recs, radius=6)["episodes"][0]["goal_in_view_share"] \
        == pytest.approx(0.75)


def test_bad_inputs_are_one_line_and_exit_2(tmp_path, capsys):
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"seeds": [7], "endings": ["solved"]}))
    assert goal_in_view.main(["--eval-json", str(ev), "--records", str(tmp_path)]) == 2
    assert "no recording" in capsys.readouterr().err
    (tmp_path / "seed7.ttyrec3.bz2").write_bytes(b"not a recording")
    assert goal_in_view.main(["--eval-json", str(ev), "--records", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    for bad in (tmp_path / "missing.json", tmp_path / "seed7.ttyrec3.bz2"):
        assert goal_in_view.main(["--eval-json", str(bad), "--records", str(tmp_path)]) == 2
        assert "cannot read" in capsys.readouterr().err

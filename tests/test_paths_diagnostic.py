"""omega.diagnostics.paths on hand-made recordings: a stay is a frame pair with the hero on the
same cell, a revisit a move back onto a cell stood on before, and frames without the hero
(the end-of-game screens) are left out."""

import json

import pytest

from omega.diagnostics import paths


def _frame(hero: tuple[int, int] | None) -> bytes:
    """A screen with the hero '@' at (row, col) (1-based tty; row 1 is the message line)."""
    out = b"\033[2J"
    if hero is not None:
        out += b"\033[%d;%dH@" % hero
    return out


def test_paths_by_ending(tmp_path, capsys, write_ttyrec):
    recs = tmp_path / "recs"
    recs.mkdir()
    # Seed 1: east, a bump (stays), east, back west (a revisit), then the end screen.
    write_ttyrec(recs / "seed1.ttyrec3.bz2", [
        _frame((5, 10)), _frame((5, 11)), _frame((5, 11)), _frame((5, 12)), _frame((5, 11)),
        _frame(None),
    ])
    # Seed 2: three new cells in a row.
    write_ttyrec(recs / "seed2.ttyrec3.bz2", [_frame((3, 3)), _frame((3, 4)), _frame((4, 5))])
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"seeds": [1, 2], "endings": ["time_limit", "solved"],
                              "lengths": [5, 2]}))
    assert paths.main(["--eval-json", str(ev), "--records", str(recs), "--json",
                       str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    wander, straight = out["episodes"]
    assert (wander["moves"], wander["stays"], wander["revisits"], wander["new_cells"]) == \
        (4, 1, 1, 3)
    assert (straight["moves"], straight["stays"], straight["revisits"],
            straight["new_cells"]) == (2, 0, 0, 3)
    assert out["by_ending"]["time_limit"]["stay_rate"] == pytest.approx(0.25)
    assert out["by_ending"]["time_limit"]["revisit_rate"] == pytest.approx(0.25)
    assert out["by_ending"]["solved"]["stay_rate"] == 0.0
    assert "time_limit" in capsys.readouterr().out


def test_a_missing_recording_is_one_line_and_exit_2(tmp_path, capsys):
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"seeds": [7], "endings": ["died"]}))
    assert paths.main(["--eval-json", str(ev), "--records", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no recording" in err and err.count("\n") == 1

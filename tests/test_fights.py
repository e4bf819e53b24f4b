"""omega.diagnostics.fights on hand-made recordings: a monster counts as next to the hero only
in the 8 neighbouring cells, an attack is the next frame's "You hit/miss/kill", and the killer
is read from the end-of-game screens."""

import json

import pytest

from omega.diagnostics import fights


def _frame(message: str = "", hero: tuple[int, int] | None = (5, 10),
           monster: tuple[int, int] | None = None, extra: str = "") -> bytes:
    """A screen with a message, the hero '@' and a jackal 'd' at (row, col) (1-based tty)."""
    out = b"\033[2J"
    if message:
        out += b"\033[1;1H" + message.encode()
    for pos, char in ((hero, b"@"), (monster, b"d")):
        if pos is not None:
            out += b"\033[%d;%dH" % pos + char
    if extra:
        out += b"\033[10;1H" + extra.encode()
    return out


def test_fights_by_ending(tmp_path, capsys, write_ttyrec):
    recs = tmp_path / "recs"
    recs.mkdir()
    # Seed 1 dies: the jackal is next to the hero in 3 frames, the hero hits back once; the
    # frames after "You die..." (the disclosure screens) are not counted, but name the killer.
    write_ttyrec(recs / "seed1.ttyrec3.bz2", [
        _frame(monster=(5, 11)),
        _frame("You hit the jackal.  The jackal bites!", monster=(6, 11)),
        _frame("The jackal bites!", monster=(4, 9)),
        _frame("The jackal bites!--More--", monster=(4, 9)),
        _frame("You die...--More--", monster=(4, 9)),
        _frame("", hero=None, extra="Killed by a jackal"),
    ])
    # Seed 2 is solved: the jackal two cells away (not next to the hero), then adjacent once,
    # and the hero's next frame kills it.
    write_ttyrec(recs / "seed2.ttyrec3.bz2", [
        _frame(monster=(5, 12)),
        _frame(monster=(5, 11)),
        _frame("You kill the jackal!"),
    ])
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"seeds": [1, 2], "endings": ["died", "solved"],
                              "lengths": [5, 3]}))
    assert fights.main(["--eval-json", str(ev), "--records", str(recs), "--json",
                        str(tmp_path / "out.json")]) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    died, solved = out["episodes"]
    assert died["frames_monster_next_to_hero"] == 4  # the frame of "You die" is not counted
    assert died["attacked_next_frame"] == 1
    # Frames 0-3 are one contact; the next frame keeps it after frames 0-2 (frame 4 is death's).
    assert died["contacts"] == 1 and died["still_next_to_monster_next_frame"] == 3
    assert died["hero_attack_messages"] == 1 and died["monster_attack_messages"] == 3
    assert died["killed_by"] == "jackal"
    assert solved["frames_monster_next_to_hero"] == 1 and solved["attacked_next_frame"] == 1
    assert solved["killed_by"] is None
    assert solved["contacts"] == 1 and solved["still_next_to_monster_next_frame"] == 0
    assert out["by_ending"]["died"]["attack_rate_next_to_monster"] == pytest.approx(0.25)
    assert out["by_ending"]["solved"]["attack_rate_next_to_monster"] == pytest.approx(1.0)
    assert out["by_ending"]["died"]["contact_kept_rate"] == pytest.approx(0.75)
    assert out["by_ending"]["died"]["mean_contact_frames"] == pytest.approx(4.0)
    assert out["killed_by"] == {"jackal": 1}
    assert "killed by: jackal 1" in capsys.readouterr().out


def test_bad_inputs_are_one_line_and_exit_2(tmp_path, capsys):
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"seeds": [7], "endings": ["died"]}))
    assert fights.main(["--eval-json", str(ev), "--records", str(tmp_path)]) == 2
    assert "no recording" in capsys.readouterr().err
    (tmp_path / "seed7.ttyrec3.bz2").write_bytes(b"not a recording")
    assert fights.main(["--eval-json", str(ev), "--records", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert fights.main(["--eval-json", str(tmp_path / "missing.json"), "--records",
                        str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err

"""How the agent fights, per way the episodes ended: does it hit back at monsters next to it?

Reads an ``omega eval --json F --record DIR`` evaluation (the JSON's seeds and endings and
each episode's recording). For every frame with the hero (``@``) on the map it counts a
monster next to the hero when one of the 8 neighbouring cells shows a letter (NetHack draws
monsters as letters; with ``@`` for the hero, the rest of a MiniHack room is punctuation), and
counts the hero as having attacked when the next frame's message line says ``You hit``,
``You miss`` or ``You kill``, and the contact as kept when the next frame still has a monster
next to the hero (a contact: a run of such frames). From the message line it also counts the monsters' attacks
(``The <monster> bites!``, ``hits!``, ``misses!``, ...) and reads what killed the hero
(``killed by a ...`` on the end-of-game screens). An agent that attacks in about 1 of 8 frames
with a monster beside it is moving as if the monster were not there; one that keeps the
contact for longer takes more bites::

    omega eval --dir RUN --json eval.json --record recs
    python -m omega.diagnostics.fights --eval-json eval.json --records recs
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from omega.diagnostics._common import MAP_ROWS, eval_recordings, recorded_eval_parser, report

HERO_ATTACK = re.compile(r"\bYou (?:hit|miss|kill)\b")
MONSTER_ATTACK = re.compile(r"\bThe [a-z][a-z -]* (?:bites|hits|misses|just misses|stings|"
                            r"butts|kicks|claws|touches|thrusts)\b")
KILLED_BY = re.compile(r"killed by (?:an? )?([a-z][a-z -]*[a-z])", re.IGNORECASE)


def _monster_next_to_hero(tiles: np.ndarray) -> bool | None:
    """None without the hero on the map; else whether a letter is in its 8 neighbours."""
    hero = np.argwhere(tiles == ord("@"))
    if not len(hero):
        return None
    y, x = hero[0]
    around = tiles[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
    letters = ((around >= ord("a")) & (around <= ord("z"))) | \
        ((around >= ord("A")) & (around <= ord("Z")))
    return bool(letters.any())


def episode_fights(episode) -> dict:
    """Counts for one recording (:class:`omega.viz.ttyrec.Episode`)."""
    chars = np.asarray(episode.chars)
    lines = [episode.text(t).split("\n", 1)[0] for t in range(len(chars))]
    died = next((t for t, line in enumerate(lines) if "You die" in line), len(lines))
    next_to = attacked = still = contacts = hero_attacks = monster_attacks = 0
    adjacent = [_monster_next_to_hero(chars[t][MAP_ROWS]) for t in range(died)]
    for t in range(died):
        hero_attacks += len(HERO_ATTACK.findall(lines[t]))
        monster_attacks += len(MONSTER_ATTACK.findall(lines[t]))
        if adjacent[t] and t + 1 < len(lines):
            next_to += 1
            contacts += not (t and adjacent[t - 1])
            attacked += bool(HERO_ATTACK.search(lines[t + 1]))
            still += bool(t + 1 < died and adjacent[t + 1])
    killer = None
    for t in range(died, len(lines)):
        found = KILLED_BY.search(episode.text(t))
        if found:
            killer = found.group(1)
            break
    return {"frames_monster_next_to_hero": next_to, "attacked_next_frame": attacked,
            "still_next_to_monster_next_frame": still, "contacts": contacts,
            "hero_attack_messages": hero_attacks, "monster_attack_messages": monster_attacks,
            "killed_by": killer}


def summarise(eval_json: Path, records: Path) -> dict:
    """Raises ValueError (one line) for a missing or unreadable eval JSON or recording."""
    episodes = [{"seed": seed, "ending": ending, "length": length, **episode_fights(episode)}
                for seed, ending, length, episode in eval_recordings(eval_json, records)]
    by_ending = {}
    for ending in dict.fromkeys(e["ending"] for e in episodes):
        group = [e for e in episodes if e["ending"] == ending]
        next_to = sum(e["frames_monster_next_to_hero"] for e in group)
        attacked = sum(e["attacked_next_frame"] for e in group)
        still = sum(e["still_next_to_monster_next_frame"] for e in group)
        contacts = sum(e["contacts"] for e in group)
        by_ending[ending] = {
            "episodes": len(group),
            "frames_monster_next_to_hero": next_to,
            "attack_rate_next_to_monster": attacked / next_to if next_to else None,
            "contact_kept_rate": still / next_to if next_to else None,
            "mean_contact_frames": next_to / contacts if contacts else None,
            "hero_attack_messages": sum(e["hero_attack_messages"] for e in group),
            "monster_attack_messages": sum(e["monster_attack_messages"] for e in group),
        }
    killers = Counter(e["killed_by"] for e in episodes if e["killed_by"])
    return {"eval_json": str(eval_json), "records": str(records), "by_ending": by_ending,
            "killed_by": dict(killers.most_common()), "episodes": episodes}


def print_summary(out: dict) -> None:
    def share(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    print(f"{'ending':<12} {'episodes':>8} {'next to a monster':>18} {'attacked':>9} "
          f"{'still next':>11} {'contact':>8} {'hero hits':>10} {'monster hits':>13}")
    for ending, s in out["by_ending"].items():
        contact = s["mean_contact_frames"]
        print(f"{ending:<12} {s['episodes']:>8} {s['frames_monster_next_to_hero']:>18} "
              f"{share(s['attack_rate_next_to_monster']):>9} {share(s['contact_kept_rate']):>11} "
              f"{'-' if contact is None else f'{contact:.1f}':>8} "
              f"{s['hero_attack_messages']:>10} {s['monster_attack_messages']:>13}")
    if out["killed_by"]:
        print("killed by: " + ", ".join(f"{k} {n}" for k, n in out["killed_by"].items()))


def main(argv: list[str] | None = None) -> int:
    args = recorded_eval_parser("fights", __doc__).parse_args(argv)
    return report("fights", lambda: summarise(args.eval_json, args.records), print_summary,
                  args.json)


if __name__ == "__main__":
    sys.exit(main())

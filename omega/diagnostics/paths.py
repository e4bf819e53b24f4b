"""Where the steps go: per way the episodes ended, how many of the agent's moves did not move
the hero, and how many took it back to a cell it had already stood on.

Reads an ``omega eval --json F --record DIR`` evaluation (the JSON's seeds and endings and each
episode's recording). A frame's hero is the ``@`` on the map rows; between two frames the
hero either stayed on its cell (a move into a wall, tree or boulder that did not give: MiniHack
charges no game time for it, so the monsters do not move either, but the step counts towards
the time limit; or a fight) or moved, onto a new cell of the episode or back onto one it
had stood on. An agent that takes the short way to the goal has few of either; one that
wanders has many revisits, one whose best-looking move is a wall has many stays::

    omega eval --dir RUN --json eval.json --record recs
    python -m omega.diagnostics.paths --eval-json eval.json --records recs
"""

from __future__ import annotations

import sys

import numpy as np

from omega.diagnostics._common import MAP_ROWS, eval_recordings, recorded_eval_parser, report


def hero_cells(chars: np.ndarray) -> list[tuple[int, int] | None]:
    """The hero's (row, column) on the map rows of every frame ([T, rows, cols] tty chars),
    None where no ``@`` is drawn (the end-of-game screens)."""
    cells = []
    for frame in chars:
        hero = np.argwhere(frame[MAP_ROWS] == ord("@"))
        cells.append((int(hero[0][0]), int(hero[0][1])) if len(hero) else None)
    return cells


def episode_path(cells: list[tuple[int, int] | None]) -> dict:
    """Counts over the consecutive frame pairs that both show the hero: ``moves`` (pairs),
    ``stays`` (same cell), ``revisits`` (onto a cell stood on before in the episode),
    ``new_cells`` (cells stood on, the first one included)."""
    seen: set[tuple[int, int]] = set()
    moves = stays = revisits = 0
    for before, after in zip(cells[:-1], cells[1:], strict=True):
        if before is None or after is None:
            continue
        seen.add(before)
        moves += 1
        if after == before:
            stays += 1
        elif after in seen:
            revisits += 1
        seen.add(after)
    if cells and cells[0] is not None:
        seen.add(cells[0])
    return {"moves": moves, "stays": stays, "revisits": revisits, "new_cells": len(seen)}


def summarise(eval_json, records) -> dict:
    """Raises ValueError (one line) for a missing or unreadable eval JSON or recording."""
    episodes = [{"seed": seed, "ending": ending, "length": length,
                 **episode_path(hero_cells(np.asarray(episode.chars)))}
                for seed, ending, length, episode in eval_recordings(eval_json, records)]
    by_ending = {}
    for ending in dict.fromkeys(e["ending"] for e in episodes):
        group = [e for e in episodes if e["ending"] == ending]
        moves = sum(e["moves"] for e in group)
        by_ending[ending] = {
            "episodes": len(group),
            "mean_moves": moves / len(group),
            "stay_rate": sum(e["stays"] for e in group) / moves if moves else None,
            "revisit_rate": sum(e["revisits"] for e in group) / moves if moves else None,
            "mean_new_cells": sum(e["new_cells"] for e in group) / len(group),
        }
    return {"eval_json": str(eval_json), "records": str(records), "by_ending": by_ending,
            "episodes": episodes}


def print_summary(out: dict) -> None:
    def share(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    print(f"{'ending':<12} {'episodes':>8} {'moves':>7} {'stayed':>7} {'revisited':>10} "
          f"{'cells':>6}")
    for ending, s in out["by_ending"].items():
        print(f"{ending:<12} {s['episodes']:>8} {s['mean_moves']:>7.1f} "
              f"{share(s['stay_rate']):>7} {share(s['revisit_rate']):>10} "
              f"{s['mean_new_cells']:>6.1f}")


def main(argv: list[str] | None = None) -> int:
    args = recorded_eval_parser("paths", __doc__).parse_args(argv)
    return report("paths", lambda: summarise(args.eval_json, args.records), print_summary,
                  args.json)


if __name__ == "__main__":
    sys.exit(main())

"""How often the goal was in the agent's view, per way the episodes ended.

Reads an ``omega eval --json F --record DIR`` evaluation: the JSON's seeds and endings and
each episode's recording. For every frame it finds the hero (``@``) and the goal glyph (``>``
by default) on the map rows and counts the goal as in view when it lies within ``radius``
cells of the hero in both directions (the ``glyphs_crop`` window: radius 4 for a 9x9 crop).
Failed episodes that almost never had the goal in view are an exploration problem (finding
the goal), failures with the goal in view a problem of going there. Where the hero lingers
tells the two kinds of search apart: ``busiest_cell`` and ``top4_share`` (the share of the
frames spent on the episode's 4 most visited cells) are high for a policy pulled back to
one place of the map, low for one that roams::

    omega eval --dir RUN --json eval.json --record recs
    python -m omega.diagnostics.goal_in_view --eval-json eval.json --records recs --radius 4
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np

from omega.diagnostics._common import MAP_ROWS, eval_recordings, recorded_eval_parser, report


def episode_view(chars: np.ndarray, goal: str = ">", radius: int = 4) -> dict:
    """For one recording's frames [T, rows, cols] of characters: frames with the hero on the
    map, the share of them with the goal within ``radius``, the first such frame (None: never),
    the distinct hero cells, the most visited one ([row, col] on the map rows; None without
    the hero) and the share of the frames on the 4 most visited."""
    hero_frames = in_view = 0
    first = None
    cells: collections.Counter[tuple[int, int]] = collections.Counter()
    for t, screen in enumerate(chars):
        tiles = screen[MAP_ROWS]
        hero = np.argwhere(tiles == ord("@"))
        if not len(hero):
            continue
        hy, hx = hero[0]
        hero_frames += 1
        cells[(int(hy), int(hx))] += 1
        goals = np.argwhere(tiles == ord(goal))
        if len(goals) and (np.abs(goals - hero[0]).max(axis=1) <= radius).any():
            in_view += 1
            first = t if first is None else first
    busiest = cells.most_common(4)
    return {"hero_frames": hero_frames, "goal_in_view_share": in_view / max(hero_frames, 1),
            "first_in_view_frame": first, "distinct_cells": len(cells),
            "busiest_cell": list(busiest[0][0]) if busiest else None,
            "top4_share": sum(n for _, n in busiest) / max(hero_frames, 1)}


def summarise(eval_json: Path, records: Path, goal: str = ">", radius: int = 4) -> dict:
    """Raises ValueError (one line) for a missing or unreadable eval JSON or recording."""
    episodes = []
    for seed, ending, length, episode in eval_recordings(eval_json, records):
        view = episode_view(np.asarray(episode.chars), goal, radius)
        episodes.append({"seed": seed, "ending": ending, "length": length, **view})
    by_ending = {}
    for ending in dict.fromkeys(e["ending"] for e in episodes):
        group = [e for e in episodes if e["ending"] == ending]
        by_ending[ending] = {
            "episodes": len(group),
            "mean_goal_in_view_share": float(np.mean([e["goal_in_view_share"] for e in group])),
            "never_in_view": sum(e["first_in_view_frame"] is None for e in group),
            "mean_distinct_cells": float(np.mean([e["distinct_cells"] for e in group])),
            "mean_top4_share": float(np.mean([e["top4_share"] for e in group])),
        }
    return {"eval_json": str(eval_json), "records": str(records), "goal": goal,
            "radius": radius, "by_ending": by_ending, "episodes": episodes}


def main(argv: list[str] | None = None) -> int:
    parser = recorded_eval_parser("goal_in_view", __doc__)
    parser.add_argument("--goal", default=">", help="the goal's map character (default: >)")
    parser.add_argument("--radius", type=int, default=4,
                        help="cells from the hero that count as in view (4: a 9x9 crop)")
    args = parser.parse_args(argv)
    if len(args.goal) != 1 or args.radius < 0:
        parser.error("--goal is one map character and --radius a count of cells >= 0")
    return report("goal_in_view",
                  lambda: summarise(args.eval_json, args.records, args.goal, args.radius),
                  print_summary, args.json)


def print_summary(out: dict) -> None:
    print(f"{'ending':<12} {'episodes':>8} {'goal in view':>13} {'never seen':>10} {'cells':>6} "
          f"{'top-4 share':>11}")
    for ending, s in out["by_ending"].items():
        print(f"{ending:<12} {s['episodes']:>8} {s['mean_goal_in_view_share']:>13.2f} "
              f"{s['never_in_view']:>10} {s['mean_distinct_cells']:>6.1f} "
              f"{s['mean_top4_share']:>11.2f}")


if __name__ == "__main__":
    sys.exit(main())

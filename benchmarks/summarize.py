"""Prints the markdown rows of docs/benchmarks.md from the JSON files benchmarks/learning.py wrote.

    python benchmarks/summarize.py benchmarks/results/ppo_*.json
"""

from __future__ import annotations

import json
import sys


def main(paths: list[str]) -> None:
    print("| config | env | seed | env steps | wall (s) | steps/s | eval success [95% CI] "
          "| eval return | env steps to train success ≥ 0.95 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        data = json.load(open(path))
        for r in data["runs"]:
            e = r["eval"]
            lo, hi = e["success_rate_ci95"]
            print(f"| `{data['config']}` | {data['env_id']} | {r['seed']} | {r['env_steps']:,} "
                  f"| {r['train_wall_s']:.0f} | {r['mean_env_steps_per_s']:,.0f} "
                  f"| {e['success_rate']:.2f} [{lo:.2f}, {hi:.2f}] | {e['mean_return']:.3f} "
                  f"| {r['steps_to_train_success_0.95'] or 'not reached'} |")


if __name__ == "__main__":
    main(sys.argv[1:])

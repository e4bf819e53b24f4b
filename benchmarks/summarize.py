"""Prints the markdown rows of the experiment log (docs/experiments/) from the JSON files benchmarks/learning.py wrote.

    python benchmarks/summarize.py benchmarks/results/ppo_*.json
"""

from __future__ import annotations

import json
import sys


def steps_to_sustained(curve: list, threshold: float = 0.95, rows: int = 2) -> int | None:
    """Env steps of the first log row that starts ``rows`` consecutive rows with a training
    success rate >= threshold. One row alone can be a handful of lucky episodes (the first
    interval of Room-5x5 often is)."""
    ok = [c[1] is not None and c[1] >= threshold for c in curve]
    for i in range(len(curve) - rows + 1):
        if all(ok[i:i + rows]):
            return int(curve[i][0])
    return None


def summary(paths: list[str]) -> None:
    """One row per config: the numbers the issue targets, over all seeds."""
    print("| config | env | seeds | budget (env steps) | eval success, each seed | "
          "min eval success | mean wall (s) | env steps to train success ≥ 0.95 (2 log rows running), each seed |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        data = json.load(open(path))
        runs = data["runs"]
        succ = [r["eval"]["success_rate"] for r in runs]
        steps = [steps_to_sustained(r["curve"]) for r in runs]
        print(f"| `{data['config']}` | {data['env_id']} | {len(runs)} "
              f"| {max(r['env_steps'] for r in runs):,} | {', '.join(f'{x:.2f}' for x in succ)} "
              f"| {min(succ):.2f} | {sum(r['train_wall_s'] for r in runs) / len(runs):.0f} "
              f"| {', '.join(f'{x:,}' if x else 'not reached' for x in steps)} |")
    print()


def main(paths: list[str]) -> None:
    summary(paths)
    print("| config | env | seed | env steps | wall (s) | steps/s | eval success [95% CI] "
          "| eval actions | eval return | env steps to train success ≥ 0.95 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        data = json.load(open(path))
        for r in data["runs"]:
            e = r["eval"]
            lo, hi = e["success_rate_ci95"]
            print(f"| `{data['config']}` | {data['env_id']} | {r['seed']} | {r['env_steps']:,} "
                  f"| {r['train_wall_s']:.0f} | {r['mean_env_steps_per_s']:,.0f} "
                  f"| {e['success_rate']:.2f} [{lo:.2f}, {hi:.2f}] "
                  f"| {'greedy' if e.get('greedy', True) else 'sampled'} | {e['mean_return']:.3f} "
                  f"| {steps_to_sustained(r['curve']) or 'not reached'} |")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Learning benchmark: train a config on several seeds, evaluate each on 100 fixed seeds.

Usage (from the repository root):

    python benchmarks/learning.py --config configs/ppo/room_5x5.yaml --seeds 0 1 2 \\
        --out benchmarks/results/ppo_room_5x5.json

For each training seed it runs ``omega make`` + ``omega run`` (+ ``omega eval --episodes 100
--seed 1000000``), then prints a table (final eval success and return with 95% CIs, wall time,
env steps to first reach a training success rate of 0.95) and writes JSON and a PNG with the
learning curves (training success rate against env steps).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from omega.diagnostics.runs import run_seed

ROOT = Path(__file__).resolve().parents[1]


def plot(results: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in results:
        xs = [c[0] for c in r["curve"] if c[1] is not None]
        ys = [c[1] for c in r["curve"] if c[1] is not None]
        ax.plot(xs, ys, label=f"seed {r['seed']} (eval {r['eval']['success_rate']:.2f})")
    ax.set_xlabel("env steps")
    ax.set_ylabel("training success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=None, help="override train.total_env_steps")
    p.add_argument("--eval-seed", type=int, default=1_000_000)
    p.add_argument("--work", type=Path, default=ROOT / "experiments" / "bench")
    p.add_argument("--out", type=Path, default=None, help="JSON path (PNG next to it)")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.out or ROOT / "benchmarks" / "results" / f"{args.config.parent.name}_{args.config.stem}.json"
    results = [run_seed(args.config, s, args.work, args.steps, args.eval_seed) for s in args.seeds]
    env_id = yaml.safe_load(args.config.read_text())["env"]["id"]
    print(f"\n{args.config}  ({env_id}; eval: 100 episodes, seeds {args.eval_seed}..{args.eval_seed + 99})")
    print(f"{'seed':>4} {'env steps':>10} {'wall s':>7} {'steps/s':>8} {'eval success [95% CI]':>24} "
          f"{'eval return':>11} {'steps to train 0.95':>20}")
    for r in results:
        e = r["eval"]
        lo, hi = e["success_rate_ci95"]
        print(f"{r['seed']:>4} {r['env_steps']:>10,} {r['train_wall_s']:>7.0f} "
              f"{r['mean_env_steps_per_s']:>8.0f} {e['success_rate']:>8.2f} [{lo:.2f}, {hi:.2f}]    "
              f"{e['mean_return']:>11.3f} {str(r['steps_to_train_success_0.95']):>20}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": str(args.config), "env_id": env_id, "runs": results},
                              indent=2) + "\n")
    plot(results, f"{args.config.parent.name}/{args.config.stem}: {env_id}", out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

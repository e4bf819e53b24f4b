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
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from omega.cli.main import main as omega  # noqa: E402


def steps_to(rows: list[dict], threshold: float, run: int = 2) -> int | None:
    """Env steps of the first metrics row that starts ``run`` consecutive rows with a training
    success rate >= threshold (one row alone can be a handful of lucky episodes)."""
    ok = [bool(r["success_rate"]) and float(r["success_rate"]) >= threshold for r in rows]
    for i in range(len(rows) - run + 1):
        if all(ok[i:i + run]):
            return int(rows[i]["env_steps"])
    return None


def make_and_train(cfg_path: Path, exp: Path, steps: int | None) -> float:
    """``omega make`` (unless ``exp`` exists) + ``omega run``; returns the training wall time.
    A finished run keeps its wall time in ``exp/train_wall_s.json`` and is not trained again."""
    if not exp.exists():
        assert omega(["make", "--config", str(cfg_path), "--output-dir", str(exp)]) == 0
    wall_file = exp / "train_wall_s.json"
    if wall_file.exists():
        return float(json.loads(wall_file.read_text())["train_wall_s"])
    t0 = time.perf_counter()
    assert omega(["run", "--dir", str(exp)] + (["--steps", str(steps)] if steps else [])) == 0
    wall = time.perf_counter() - t0
    wall_file.write_text(json.dumps({"train_wall_s": wall}) + "\n")
    return wall


def run_seed(config: Path, seed: int, work: Path, steps: int | None, eval_seed: int) -> dict:
    data = yaml.safe_load(config.read_text())
    data["seed"] = seed
    cfg_path = work / f"{config.stem}_seed{seed}.yaml"
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))
    exp = work / f"{config.stem}_seed{seed}"
    wall = make_and_train(cfg_path, exp, steps)
    eval_json = exp / "eval.json"
    mode = "--greedy" if data.get("eval", {}).get("greedy", True) else "--sample"
    assert omega(["eval", "--dir", str(exp), "--episodes", "100", "--seed", str(eval_seed),
                  mode, "--json", str(eval_json)]) == 0
    with (exp / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    ev = json.loads(eval_json.read_text())
    return {
        "seed": seed,
        "train_wall_s": wall,
        "env_steps": int(rows[-1]["env_steps"]),
        "steps_to_train_success_0.95": steps_to(rows, 0.95),
        "eval": {k: ev[k] for k in ("greedy", "success_rate", "success_rate_ci95", "mean_return",
                                    "mean_return_ci95", "mean_length", "mean_length_ci95",
                                    "env_steps")},
        "eval_seeds": [ev["seeds"][0], ev["seeds"][-1]],
        "curve": [(int(r["env_steps"]), float(r["success_rate"]) if r["success_rate"] else None,
                   float(r["episode_return"]) if r["episode_return"] else None) for r in rows],
        "mean_env_steps_per_s": float(rows[-1]["env_steps"]) / wall,
    }


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

"""NetHackScore-v0 benchmark: PPO at a small budget against the uniformly random agent.

Usage (from the repository root):

    python benchmarks/nethack_score.py --out benchmarks/results/nethack_score.json

Trains ``configs/ppo/nethack_score.yaml`` for one seed (``omega make`` + ``omega run``), runs
``configs/random/nethack_score.yaml`` just long enough to write the checkpoint ``omega eval``
needs, then evaluates both with ``omega eval --episodes 20 --seed 1000000`` (PPO sampling from
its policy, as its config says) and writes the mean returns with 95% confidence intervals,
the per-episode returns and PPO's training curve (mean training episode return per log row).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import yaml

from omega.cli.main import main as omega
from omega.diagnostics.runs import make_and_train

ROOT = Path(__file__).resolve().parents[1]

EVAL_KEYS = ("greedy", "mean_return", "mean_return_ci95", "mean_length", "mean_length_ci95",
             "env_steps", "returns", "lengths")


def train_and_eval(config: Path, seed: int, work: Path, steps: int | None, episodes: int,
                   eval_seed: int) -> dict:
    data = yaml.safe_load(config.read_text())
    data["seed"] = seed
    name = f"{config.parent.name}_{config.stem}_seed{seed}"
    cfg_path = work / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))
    exp = work / name
    # A finished run keeps its wall time, so re-running this script only re-evaluates it.
    wall = make_and_train(cfg_path, exp, steps)
    eval_json = exp / "eval.json"
    t0 = time.perf_counter()
    assert omega(["eval", "--dir", str(exp), "--episodes", str(episodes), "--seed",
                  str(eval_seed), "--json", str(eval_json)]) == 0
    eval_wall = time.perf_counter() - t0
    with (exp / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    ev = json.loads(eval_json.read_text())
    return {
        "config": str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else str(config),
        "agent_type": data["agent_type"],
        "seed": seed,
        "train_env_steps": int(rows[-1]["env_steps"]),
        "train_wall_s": wall,
        "eval_wall_s": eval_wall,
        "eval": {k: ev[k] for k in EVAL_KEYS} | {"seeds": [ev["seeds"][0], ev["seeds"][-1]]},
        "curve": [(int(r["env_steps"]),
                   float(r["episode_return"]) if r["episode_return"] not in ("", "nan") else None,
                   float(r["episode_length"]) if r["episode_length"] not in ("", "nan") else None)
                  for r in rows],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ppo-config", type=Path, default=ROOT / "configs/ppo/nethack_score.yaml")
    p.add_argument("--random-config", type=Path,
                   default=ROOT / "configs/random/nethack_score.yaml")
    p.add_argument("--seed", type=int, default=0, help="PPO training seed")
    p.add_argument("--steps", type=int, default=None, help="override PPO's train.total_env_steps")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--eval-seed", type=int, default=1_000_000)
    p.add_argument("--work", type=Path, default=ROOT / "experiments" / "bench_nethack_score")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/nethack_score.json")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ppo = train_and_eval(args.ppo_config.resolve(), args.seed, args.work, args.steps,
                         args.episodes, args.eval_seed)
    rand = train_and_eval(args.random_config.resolve(), 0, args.work, None, args.episodes,
                          args.eval_seed)
    last = args.eval_seed + args.episodes - 1
    print(f"\nNetHackScore-v0, eval: {args.episodes} episodes, seeds {args.eval_seed}..{last}")
    print(f"{'agent':<8} {'train env steps':>15} {'train wall s':>12} "
          f"{'mean return [95% CI]':>28} {'mean length':>11}")
    for r in (ppo, rand):
        e = r["eval"]
        lo, hi = e["mean_return_ci95"]
        print(f"{r['agent_type']:<8} {r['train_env_steps']:>15,} {r['train_wall_s']:>12.0f} "
              f"{e['mean_return']:>9.2f} [{lo:7.2f}, {hi:7.2f}]   {e['mean_length']:>11.0f}")
    result = {
        "env_id": "NetHackScore-v0",
        "eval_command": f"omega eval --episodes {args.episodes} --seed {args.eval_seed}",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "ppo": ppo,
        "random": rand,
    }
    tmp = args.out.with_suffix(".json.tmp")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

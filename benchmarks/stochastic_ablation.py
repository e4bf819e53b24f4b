"""Plain MuZero against Stochastic MuZero on random tasks, same budget, 3 seeds.

Usage (from the repository root):

    python benchmarks/stochastic_ablation.py --out benchmarks/results/muzero_stochastic_ablation.json

Trains each config pair (``configs/muzero/<task>.yaml`` and ``<task>_stochastic.yaml``: the
same networks, budget and search; only ``muzero.stochastic`` differs) with
``omega.diagnostics.runs``' ``omega make`` + ``omega run``, then evaluates every checkpoint
twice with ``omega eval`` on episode seeds 1000000..1000099: greedy and sampled (MuZero's
sampled evaluation has no exploration noise: actions are drawn from the search policy). A
finished run or evaluation in ``--work`` is reused, so re-running only fills in what is
missing. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from omega.cli.main import main as omega
from omega.diagnostics.runs import run_seed

ROOT = Path(__file__).resolve().parents[1]

TASKS = ("stochastic_trap", "room_trap_5x5")
KEYS = ("success_rate", "success_rate_ci95", "mean_return", "mean_return_ci95", "mean_length")


def evaluate(exp: Path, mode: str, eval_seed: int) -> dict:
    path = exp / f"eval_{mode}.json"
    if not path.exists():
        assert omega(["eval", "--dir", str(exp), "--episodes", "100", "--seed", str(eval_seed),
                      "--greedy" if mode == "greedy" else "--sample", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    return {k: data[k] for k in KEYS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eval-seed", type=int, default=1_000_000)
    p.add_argument("--work", type=Path, default=ROOT / "experiments" / "stochastic_ablation")
    p.add_argument("--out", type=Path,
                   default=ROOT / "benchmarks" / "results" / "muzero_stochastic_ablation.json")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in args.tasks:
        for variant in ("plain", "stochastic"):
            config = ROOT / "configs" / "muzero" / (
                f"{task}.yaml" if variant == "plain" else f"{task}_stochastic.yaml")
            for seed in args.seeds:
                exp = args.work / f"{config.stem}_seed{seed}"
                if not (exp / "train_wall_s.json").exists():
                    run_seed(config, seed, args.work, None, args.eval_seed)
                with (exp / "metrics.csv").open() as f:
                    env_steps = int(list(csv.DictReader(f))[-1]["env_steps"])
                wall = json.loads((exp / "train_wall_s.json").read_text())["train_wall_s"]
                rows.append({
                    "task": task, "variant": variant, "config": str(config.relative_to(ROOT)),
                    "seed": seed, "env_steps": env_steps, "train_wall_s": wall,
                    "greedy": evaluate(exp, "greedy", args.eval_seed),
                    "sampled": evaluate(exp, "sampled", args.eval_seed),
                })
    print(f"\n{'task':<16} {'variant':<11} {'seed':>4} {'wall s':>7} "
          f"{'sampled return [95% CI]':>26} {'sampled success':>16} {'greedy return':>14}")
    for r in rows:
        s, g = r["sampled"], r["greedy"]
        lo, hi = s["mean_return_ci95"]
        print(f"{r['task']:<16} {r['variant']:<11} {r['seed']:>4} {r['train_wall_s']:>7.0f} "
              f"{s['mean_return']:>9.2f} [{lo:.2f}, {hi:.2f}]    {s['success_rate']:>16.2f} "
              f"{g['mean_return']:>14.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"eval_seeds": [args.eval_seed, args.eval_seed + 99],
                                    "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Eval success against env steps: ``omega eval`` on every kept checkpoint of trained runs.

Usage (from the repository root):

    python benchmarks/eval_curve.py \\
        --group muzero experiments/mz/rr15_seed0 experiments/mz/rr15_seed1 \\
        --group ppo experiments/ppo/rr15_seed0 experiments/ppo/rr15_seed1 \\
        --out benchmarks/results/eval_curve.json

Training success in ``metrics.csv`` is measured with exploration on and over whatever
episodes ended in a log interval; this evaluates each checkpoint the way the final result is
evaluated (``omega eval``: the config's eval mode, ``--episodes`` episodes from ``--seed``), so
two agents can be compared at equal env steps. A run keeps its newest
``train.keep_checkpoints`` checkpoints (default 3, ``train.checkpoint_every_steps`` apart).
Prints one row per checkpoint and, per group and checkpoint rank, the mean and the minimum
over its runs; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from omega.cli.main import main as omega
from omega.training.checkpoint import list_checkpoints
from omega.training.experiment import CHECKPOINT_DIR

ROOT = Path(__file__).resolve().parents[1]


def eval_checkpoint(run: Path, ckpt: Path, episodes: int, seed: int,
                    current_params: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        code = omega(["eval", "--dir", str(run), "--checkpoint", str(ckpt), "--episodes",
                      str(episodes), "--seed", str(seed), "--json", str(out)]
                     + (["--current-params"] if current_params else []))
        if code != 0:
            raise SystemExit(f"eval_curve: 'omega eval' failed on {ckpt} (exit {code})")
        return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--group", nargs="+", action="append", required=True, metavar=("NAME", "DIR"),
                   help="a label and the experiment dirs it covers (repeatable)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=1_000_000, help="first eval episode seed")
    p.add_argument("--current-params", action="store_true",
                   help="pass --current-params to omega eval (MuZero runs with "
                        "muzero.eval_params_ema: the last step's params, not their average)")
    p.add_argument("--out", type=Path, default=None, help="JSON path")
    args = p.parse_args()
    groups = []
    for name, *dirs in args.group:
        if not dirs:
            p.error(f"--group {name}: give at least one experiment dir after the name")
        for d in dirs:
            if not (Path(d) / CHECKPOINT_DIR).is_dir():
                p.error(f"--group {name}: '{d}' has no {CHECKPOINT_DIR}/; train it first")
        groups.append((name, [Path(d) for d in dirs]))

    rows = []
    for name, dirs in groups:
        for run in dirs:
            for rank, ckpt in enumerate(list_checkpoints(run / CHECKPOINT_DIR)):
                e = eval_checkpoint(run, ckpt, args.episodes, args.seed, args.current_params)
                rows.append({"group": name, "run": str(run), "checkpoint": ckpt.name,
                             "rank": rank, "env_steps": e["env_steps"], "eval": e})

    print(f"\neval: {args.episodes} episodes from seed {args.seed}, each run's eval mode")
    print(f"{'group':<12} {'run':<48} {'env steps':>10} {'success [95% CI]':>22}")
    for r in rows:
        e = r["eval"]
        lo, hi = e["success_rate_ci95"]
        print(f"{r['group']:<12} {Path(r['run']).name:<48} {r['env_steps']:>10,} "
              f"{e['success_rate']:>6.2f} [{lo:.2f}, {hi:.2f}]")
    summary = []
    print(f"\n{'group':<12} {'checkpoint':>10} {'env steps':>20} {'mean':>6} {'min':>6} {'runs':>5}")
    for name, _ in groups:
        for rank in sorted({r["rank"] for r in rows if r["group"] == name}):
            sel = [r for r in rows if r["group"] == name and r["rank"] == rank]
            rates = [r["eval"]["success_rate"] for r in sel]
            steps = sorted({r["env_steps"] for r in sel})
            span = f"{steps[0]:,}" if len(steps) == 1 else f"{steps[0]:,}–{steps[-1]:,}"
            summary.append({"group": name, "rank": rank, "env_steps": steps,
                            "mean_success": sum(rates) / len(rates), "min_success": min(rates),
                            "runs": len(sel)})
            print(f"{name:<12} {rank:>10} {span:>20} {sum(rates) / len(rates):>6.2f} "
                  f"{min(rates):>6.2f} {len(sel):>5}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"episodes": args.episodes, "eval_seed": args.seed,
                                        "rows": rows, "summary": summary}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

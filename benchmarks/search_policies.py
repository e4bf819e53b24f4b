"""Search-policy benchmark: MuZero with `search: muzero` (pUCT, visit counts), `gumbel` (Gumbel
MuZero) and `regularized` (Grill et al. 2020) at few simulations, the same config otherwise.

Usage (from the repository root):

    python benchmarks/search_policies.py --simulations 4 --steps 20000 --seeds 0 \\
        --out benchmarks/results/muzero_search_policies.json

Each variant is ``configs/muzero/room_5x5.yaml`` with ``env.id`` set to ``--env`` (default
MiniHack-Room-Random-5x5-v0), ``muzero.search`` and ``muzero.num_simulations`` set, and video
recording off; each runs ``omega make`` + ``omega run`` + ``omega eval`` (100 greedy episodes
on seeds 1000000..1000099) through ``omega.diagnostics.runs.run_seed``, then a second
``omega eval --sample`` on the same seeds (actions sampled from the search policy). The
script prints one row per (search, seed) and writes the JSON table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from omega.cli.main import main as omega
from omega.diagnostics.runs import run_seed

ROOT = Path(__file__).resolve().parents[1]

SEARCHES = ("muzero", "gumbel", "regularized")


def variant_config(base: Path, work: Path, env_id: str, search: str, simulations: int,
                   steps: int) -> Path:
    """Writes the config of one variant under ``work`` and returns its path."""
    data = yaml.safe_load(base.read_text())
    data["env"]["id"] = env_id
    data["train"]["total_env_steps"] = steps
    data["record"]["every_n_episodes"] = 0
    data["muzero"]["search"] = search
    data["muzero"]["num_simulations"] = simulations
    # The replay holds the whole (short) run, as in the base config.
    data["muzero"]["replay_size"] = max(data["muzero"]["replay_size"], steps)
    path = work / f"search_{search}_sims{simulations}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs/muzero/room_5x5.yaml")
    p.add_argument("--env", default="MiniHack-Room-Random-5x5-v0")
    p.add_argument("--searches", nargs="+", choices=SEARCHES, default=list(SEARCHES))
    p.add_argument("--simulations", type=int, default=4)
    p.add_argument("--steps", type=int, default=20_000, help="train.total_env_steps")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--eval-seed", type=int, default=1_000_000)
    p.add_argument("--work", type=Path, default=ROOT / "experiments" / "search_policies")
    p.add_argument("--out", type=Path,
                   default=ROOT / "benchmarks/results/muzero_search_policies.json")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for search in args.searches:
        cfg = variant_config(args.config, args.work, args.env, search, args.simulations,
                             args.steps)
        for seed in args.seeds:
            r = run_seed(cfg, seed, args.work, None, args.eval_seed)
            # Greedy policies of short runs can loop where sampling from the same policy
            # succeeds: the sampled evaluation (same episodes) tells the two apart.
            sampled = args.work / f"{cfg.stem}_seed{seed}" / "eval_sampled.json"
            assert omega(["eval", "--dir", str(sampled.parent), "--episodes", "100", "--seed",
                          str(args.eval_seed), "--sample", "--json", str(sampled)]) == 0
            ev = json.loads(sampled.read_text())
            r["eval_sampled"] = {k: ev[k] for k in ("success_rate", "success_rate_ci95",
                                                    "mean_return", "mean_length")}
            rows.append({"search": search, **r})
    print(f"\n{args.env}, {args.simulations} simulations, {args.steps:,} env steps "
          f"(eval: 100 greedy episodes, seeds {args.eval_seed}..{args.eval_seed + 99})")
    print(f"{'search':>12} {'seed':>4} {'wall s':>7} {'greedy success [95% CI]':>24} "
          f"{'sampled success [95% CI]':>25} {'train success (last row)':>25}")
    for r in rows:
        g, s = r["eval"], r["eval_sampled"]
        last = r["curve"][-1][1]
        print(f"{r['search']:>12} {r['seed']:>4} {r['train_wall_s']:>7.0f} "
              f"{g['success_rate']:>10.2f} [{g['success_rate_ci95'][0]:.2f}, "
              f"{g['success_rate_ci95'][1]:.2f}] {s['success_rate']:>11.2f} "
              f"[{s['success_rate_ci95'][0]:.2f}, {s['success_rate_ci95'][1]:.2f}] "
              f"{'' if last is None else f'{last:.2f}':>25}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({
        "base_config": str(args.config.relative_to(ROOT)) if args.config.is_absolute()
        else str(args.config), "env_id": args.env, "num_simulations": args.simulations,
        "total_env_steps": args.steps, "runs": rows}, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

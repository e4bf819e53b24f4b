"""Is it the search or the network? Evaluate trained MuZero runs with other search settings.

Usage (from the repository root):

    python benchmarks/eval_search.py --runs experiments/mz/rr15_seed0 experiments/mz/rr15_seed1 \\
        --variant as_trained --variant sims64:num_simulations=64 \\
        --variant push0.1:gumbel_value_scale=0.1 --variant t0.5:eval_temperature=0.5 \\
        --out benchmarks/results/eval_search.json

The search's settings are not learned params: a checkpoint can be evaluated with more
simulations, or with another push of the improved policy, without retraining. If more search
at eval lifts success, the agent is short of search; if not, of what its network learned.
A variant is ``NAME`` or ``NAME:KEY=VALUE[,KEY=VALUE...]`` over the ``muzero`` keys that only
the search and the eval acting read (``SEARCH_KEYS``; ``eval_temperature`` sharpens the sampled
eval policy); ``NAME`` alone evaluates the run as it trained. Each run is
evaluated as ``omega eval`` does (the config's eval seeds and mode, its episode count unless
``--episodes`` sets fewer or more, the moving
average of the params where the config keeps one) on its newest checkpoint or
``--checkpoint``. Prints one row per run and variant; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from omega.config import config_from_dict, config_to_dict
from omega.errors import OmegaError
from omega.training.checkpoint import atomic_write_bytes
from omega.training.evaluate import evaluate
from omega.training.experiment import (
    CHECKPOINT_DIR,
    find_checkpoint,
    load_experiment,
    load_trained_agent,
)

# The muzero keys that change how the search acts and nothing the network learned.
SEARCH_KEYS = ("num_simulations", "max_considered_actions", "gumbel_value_scale",
               "gumbel_rescale_values", "gumbel_q_floor", "gumbel_q_stats", "pb_c_init",
               "pb_c_base", "eval_temperature")


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
    """``NAME[:KEY=VALUE,...]`` -> (NAME, {KEY: VALUE}); a ValueError names what is wrong."""
    name, _, rest = text.partition(":")
    if not name:
        raise ValueError(f"--variant {text!r}: give a name, e.g. sims64:num_simulations=64")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in SEARCH_KEYS:
            raise ValueError(f"--variant {text!r}: {item!r} is not KEY=VALUE over a search key "
                             f"({', '.join(SEARCH_KEYS)})")
        overrides[key] = yaml.safe_load(value)
    return name, overrides


def variant_config(cfg, overrides: dict[str, object]):
    """The run's config with ``overrides`` in its muzero section, validated as a config file."""
    data = config_to_dict(cfg)
    data["muzero"] = {**data["muzero"], **overrides}
    return config_from_dict(data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, type=Path, metavar="DIR",
                   help="trained MuZero experiment dirs")
    p.add_argument("--variant", action="append", required=True, metavar="NAME[:KEY=VALUE,...]",
                   help="search settings to evaluate with (repeatable)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file name in each run (default: the newest)")
    p.add_argument("--episodes", type=int, default=None,
                   help="eval episodes per run and variant (default: the config's eval.episodes)")
    p.add_argument("--out", type=Path, default=None, help="JSON path")
    args = p.parse_args(argv)
    if args.episodes is not None and args.episodes < 1:
        p.error(f"--episodes must be >= 1, got {args.episodes}")
    try:
        variants = [parse_variant(v) for v in args.variant]
        runs = []
        for run in args.runs:
            cfg = load_experiment(run)
            if cfg.agent_type != "muzero":
                raise ValueError(f"{run}: agent_type is {cfg.agent_type!r}; this evaluates "
                                 "MuZero runs")
            ckpt = find_checkpoint(run, args.checkpoint and run / CHECKPOINT_DIR / args.checkpoint)
            if not ckpt.is_file():
                raise ValueError(f"{run}: no checkpoint {ckpt.name} in {ckpt.parent}")
            runs.append((run, cfg, ckpt, [variant_config(cfg, over) for _, over in variants]))
    except (ValueError, OmegaError) as e:
        print(f"eval_search: {e}", file=sys.stderr)
        return 2
    rows = []
    print(f"{'run':40s} {'variant':14s} {'success':>8s} {'95% CI':>15s} {'length':>7s}  endings")
    for run, cfg, ckpt, configs in runs:
        for (name, overrides), vcfg in zip(variants, configs, strict=True):
            trained = load_trained_agent(run, ckpt, cfg=cfg, agent_cfg=vcfg)
            result = evaluate(trained.agent, trained.eval_params(average=True), vcfg,
                              args.episodes or cfg.eval.episodes, cfg.eval.seed,
                              greedy=cfg.eval.greedy)
            data = result.to_json()
            row = {"run": str(run), "checkpoint": ckpt.name, "variant": name,
                   "overrides": overrides,
                   "search": {k: getattr(vcfg.muzero, k) for k in SEARCH_KEYS},
                   **data, "env_steps": trained.loop.env_steps}
            rows.append(row)
            lo, hi = data["success_rate_ci95"]
            endings = ", ".join(f"{k} {v}" for k, v in data["ending_counts"].items() if v)
            print(f"{str(run)[-40:]:40s} {name:14s} {data['success_rate']:8.2f} "
                  f"[{lo:.2f}, {hi:.2f}]   {data['mean_length']:7.1f}  {endings}", flush=True)
    if args.out:
        atomic_write_bytes(args.out, (json.dumps({"rows": rows}, indent=1) + "\n").encode())
        print(f"eval_search: wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

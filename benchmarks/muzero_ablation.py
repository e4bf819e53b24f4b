"""Reanalyze and the state-consistency loss on MiniHack-Room-Random-15x15-v0, same budget.

Usage (from the repository root):

    python benchmarks/muzero_ablation.py --seeds 0 1 2 \\
        --out benchmarks/results/muzero_ablation_room_random_15x15.json

Every variant is ``--config`` (default ``configs/muzero/room_random_15x15.yaml``; e.g.
``--config configs/muzero/river_narrow.yaml --steps 300000`` for River-Narrow) with a budget
of ``--steps`` env steps (default 150k, the MuZero-extensions target) and these overrides:

- ``base``: none;
- ``reanalyze``: ``muzero.reanalyze_fraction`` = ``--reanalyze-fraction``;
- ``consistency``: ``muzero.consistency_loss_weight`` = ``--consistency-weight``;
- ``both``: the two together;
- ``replay8``: ``muzero.replay_ratio`` = ``--high-replay-ratio`` (the config has 4): twice the
  train steps per env step, the other lever on sample efficiency;
- ``replay8_reanalyze``: that and reanalyze (reanalyze matters more the more often a stored
  target is reused);
- ``reward_priority``: ``muzero.priority_reward_weight`` = ``--priority-reward-weight``
  (starts whose goal reward the model mispredicts are sampled more);
- ``value_scale``: ``muzero.gumbel_value_scale`` = ``--gumbel-value-scale`` (the config has
  mctx's 0.1): a gentler push of the Gumbel improved policy towards the best-looking action;
- ``replay8_value_scale``: that and replay ratio 8.

``--set SECTION.KEY=VALUE`` (repeatable; nested keys too, e.g.
``env.observation.crop_size=29``) overrides any config key in every variant of the invocation,
and ``--tag`` names that change in the variant's label and file names (e.g.
``--variants replay8_value_scale --set muzero.replay_size=50000 --tag replay50k``).
``--variants base`` touches only the budget, so with ``--set`` it runs any config, PPO too
(docs/experiments/muzero_learning.md compares PPO and MuZero on Room-5x5 that way).

Each run is ``omega make`` + ``omega run`` + ``omega eval`` (100 episode seeds from 1000000,
as the config says: sampled from the noise-free search policy) through
``omega.diagnostics.runs.run_seed``. A finished run in ``--work`` is reused, so several invocations
with different ``--variants`` can share the cores and a last one collects the table. Prints
the table (eval success, env steps to a training success of 0.95, wall time) and writes JSON
(each row's ``overrides``: the dotted keys whose values it changed against ``--config``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from omega.config import ConfigError, load_config_data
from omega.diagnostics.runs import run_seed
from omega.training.files import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]

BASE = ROOT / "configs" / "muzero" / "room_random_15x15.yaml"
VARIANTS = ("base", "reanalyze", "consistency", "both", "replay8", "replay8_reanalyze",
            "reward_priority", "value_scale", "replay8_value_scale")


def variant_config(name: str, steps: int, reanalyze: float, consistency: float,
                   replay_ratio: float, reward_priority: float = 2.0,
                   value_scale: float = 0.05, base: Path = BASE) -> dict:
    # The base chain resolved: the variant is written to another folder, where a relative
    # ``base:`` would name nothing.
    data = load_config_data(base)
    data.setdefault("train", {})["total_env_steps"] = steps
    data.setdefault("muzero", {})
    if name.startswith("replay8"):
        data["muzero"]["replay_ratio"] = replay_ratio
    if name in ("reanalyze", "both", "replay8_reanalyze"):
        data["muzero"]["reanalyze_fraction"] = reanalyze
    if name in ("consistency", "both"):
        data["muzero"]["consistency_loss_weight"] = consistency
    if name == "reward_priority":
        data["muzero"]["priority_reward_weight"] = reward_priority
    if name in ("value_scale", "replay8_value_scale"):
        data["muzero"]["gumbel_value_scale"] = value_scale
    return data


def _shown(path: Path) -> str:
    """``path`` relative to the repository root where it lies inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def config_diff(base: dict, data: dict, prefix: str = "") -> dict[str, object]:
    """The dotted keys whose values differ between two nested configs (what a variant set),
    without the budget, which every row of an invocation shares."""
    out: dict[str, object] = {}
    for key in sorted(set(base) | set(data), key=str):
        name = f"{prefix}{key}"
        a, b = base.get(key), data.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(config_diff(a, b, name + "."))
        elif a != b and name != "train.total_env_steps":
            out[name] = b
    return out


def parse_sets(sets: list[str], p: argparse.ArgumentParser) -> dict[tuple[str, ...], object]:
    out = {}
    for item in sets:
        path, sep, value = item.partition("=")
        keys = tuple(path.split("."))
        if not sep or len(keys) < 2 or not all(keys):
            p.error(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. muzero.replay_size=50000")
        out[keys] = yaml.safe_load(value)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=BASE,
                   help="the MuZero config every variant starts from (default: %(default)s)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=150_000)
    p.add_argument("--reanalyze-fraction", type=float, default=0.1)
    p.add_argument("--consistency-weight", type=float, default=2.0)
    p.add_argument("--high-replay-ratio", type=float, default=8.0)
    p.add_argument("--priority-reward-weight", type=float, default=2.0)
    p.add_argument("--gumbel-value-scale", type=float, default=0.05)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key in every variant (repeatable); needs --tag")
    p.add_argument("--tag", default="", help="label for the --set overrides")
    p.add_argument("--eval-seed", type=int, default=1_000_000)
    p.add_argument("--work", type=Path, default=ROOT / "experiments" / "muzero_ablation")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.sets and not args.tag:
        p.error("--set needs --tag, so that the runs do not reuse the untagged variants' dirs")
    extra = parse_sets(args.sets, p)
    if not args.config.is_file():
        p.error(f"--config {args.config}: no such file")
    try:
        base = load_config_data(args.config)
    except ConfigError as e:  # e.g. a base: that names no file
        p.error(f"--config: {e}")
    # The default config keeps its historical prefix, so earlier run dirs are reused.
    prefix = "rr15" if args.config.resolve() == BASE else args.config.stem
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.variants:
        data = variant_config(name, args.steps, args.reanalyze_fraction, args.consistency_weight,
                              args.high_replay_ratio, args.priority_reward_weight,
                              args.gumbel_value_scale, args.config)
        for keys, value in extra.items():
            node = data
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = value
        label = f"{name}+{args.tag}" if args.tag else name
        config = args.work / (f"{prefix}_{name}_{args.tag}.yaml" if args.tag
                              else f"{prefix}_{name}.yaml")
        # Several seeds of one variant may be launched side by side: each writes the same
        # file, so a reader must never see it half written.
        atomic_write_bytes(config, yaml.safe_dump(data, sort_keys=False).encode())
        for seed in args.seeds:
            r = run_seed(config, seed, args.work, None, args.eval_seed)
            overrides = config_diff(base, data)
            rows.append({"variant": label, "overrides": overrides, **r})
    env_id = data["env"]["id"]  # what ran, an env.id override included
    print(f"\n{env_id}, {args.steps:,} env steps; eval: 100 episodes from "
          f"seed {args.eval_seed}, sampled, noise-free")
    print(f"{'variant':<32} {'seed':>4} {'wall s':>7} {'eval success [95% CI]':>24} "
          f"{'steps to train 0.95':>20}")
    for r in rows:
        e = r["eval"]
        lo, hi = e["success_rate_ci95"]
        print(f"{r['variant']:<32} {r['seed']:>4} {r['train_wall_s']:>7.0f} "
              f"{e['success_rate']:>8.2f} [{lo:.2f}, {hi:.2f}]      "
              f"{str(r['steps_to_train_success_0.95']):>20}")
    if args.out:
        atomic_write_bytes(args.out, (json.dumps({"base_config": _shown(args.config),
                                                  "steps": args.steps, "rows": rows},
                                                 indent=2) + "\n").encode())
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

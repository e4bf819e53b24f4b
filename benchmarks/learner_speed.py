"""Learner speed: milliseconds per MuZero train step on a trained run's saved replay.

Usage (from the repository root):

    omega make --config configs/muzero/memory_k10.yaml --output-dir /tmp/mk10
    omega run --dir /tmp/mk10 --steps 14336      # a checkpoint and its replay
    python benchmarks/learner_speed.py --run /tmp/mk10 \
        --variant 'no_burn_in_gradient={"burn_in_gradient": false}' --out learner_speed.json

Restores the run's newest checkpoint and the replay saved with it, then times ``--steps``
train steps (after two that compile) of the agent built from the run's config, and of the same
config with each ``--variant``'s ``muzero`` keys replaced. Each step is split as the learner
runs it: sampling (reanalyze included), the batch's transfer to the device, and the jitted
update (blocked on its result). The parameters stay at the checkpoint's, so every variant
times the same model on batches from the same replay. Times depend on what else runs on the
machine: compare variants of one invocation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

from omega.agents import build_agent
from omega.agents.muzero import batches
from omega.errors import OmegaError
from omega.training.checkpoint import checkpoint_steps, latest_checkpoint, load_replay, replay_path
from omega.training.loop import prepare_run


class UsageError(Exception):
    """A bad argument or run: one line on stderr, exit 2."""


def parse_variant(text: str) -> tuple[str, dict]:
    name, sep, keys = text.partition("=")
    if not sep or not name:
        raise UsageError(f"--variant '{text}': expected NAME={{json of muzero keys}}")
    try:
        over = json.loads(keys)
    except json.JSONDecodeError as e:
        raise UsageError(f"--variant '{text}': the keys are not JSON ({e})") from None
    if not isinstance(over, dict):
        raise UsageError(f"--variant '{text}': the keys must be a JSON object")
    return name, over


def time_steps(agent, state, steps: int) -> dict[str, float]:
    """Mean milliseconds per train step of sampling, transfer and the jitted update."""
    total = {"sample_ms": 0.0, "transfer_ms": 0.0, "update_ms": 0.0}
    for i in range(steps + 2):  # the first two compile
        t0 = time.perf_counter()
        batch, _ = agent._sample(state.params, state.opt_state)
        t1 = time.perf_counter()
        device_batch = batches.device_batch(agent.cfg, batch, None)
        t2 = time.perf_counter()
        params, _, _, priority = agent._train_step(state.params, state.opt_state,
                                                   state.train_steps, device_batch)
        np.asarray(priority)
        jax.block_until_ready(params)
        t3 = time.perf_counter()
        if i >= 2:
            total["sample_ms"] += t1 - t0
            total["transfer_ms"] += t2 - t1
            total["update_ms"] += t3 - t2
    out = {k: round(1000 * v / steps, 1) for k, v in total.items()}
    out["train_step_ms"] = round(sum(out.values()), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except (UsageError, OmegaError) as e:
        print(f"learner_speed: error: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True,
                        help="a MuZero experiment dir with a checkpoint and its saved replay")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME={json of muzero keys}, repeatable; 'shipped' is the "
                             "run's own config")
    parser.add_argument("--steps", type=int, default=20, help="timed train steps per variant")
    parser.add_argument("--out", type=Path, help="JSON results file")
    args = parser.parse_args(argv)
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    variants = [parse_variant(v) for v in args.variant]
    if not (args.run / "config.yaml").is_file():
        raise UsageError(f"'{args.run}' is not an experiment dir (no config.yaml); make one "
                         "with 'omega make' and train it with 'omega run'")
    device = jax.devices("cpu")[0] if jax.default_backend() == "cpu" else jax.devices()[0]
    with jax.default_device(device):
        with open(os.devnull, "w") as quiet:
            run = prepare_run(args.run, None, device, quiet)
        if run.cfg.agent_type != "muzero":
            raise UsageError(f"'{args.run}' is a {run.cfg.agent_type} run; this times MuZero")
        ckpt = latest_checkpoint(args.run / "checkpoints")
        if ckpt is None:
            raise UsageError(f"'{args.run}' has no checkpoint; train it with 'omega run'")
        path = replay_path(args.run / "checkpoints", checkpoint_steps(ckpt))
        if not path.is_file():
            raise UsageError(f"no {path.name} next to {ckpt.name}: the run must save its "
                             "replay (train.checkpoint_replay: true)")
        saved = load_replay(path, run.config_hash)
        configs = []  # every variant is checked before any is timed
        for name, over in [("shipped", {}), *variants]:
            try:
                configs.append((name, over, dataclasses.replace(
                    run.cfg, muzero=dataclasses.replace(run.cfg.muzero, **over))))
            except (TypeError, ValueError) as e:
                raise UsageError(f"variant {name}: {e}") from None
        rows = []
        for name, over, cfg in configs:
            agent, _ = build_agent(cfg, run.num_actions)
            agent.restore_replay(saved)
            row = {"variant": name, "muzero": over, **time_steps(agent, run.state, args.steps)}
            rows.append(row)
            print(f"{name:<24} train step {row['train_step_ms']:7.1f} ms  (sample "
                  f"{row['sample_ms']:.1f}, transfer {row['transfer_ms']:.1f}, update "
                  f"{row['update_ms']:.1f})", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "run": str(args.run), "env_id": run.cfg.env.id, "checkpoint": ckpt.name,
            "steps": args.steps, "device": str(device), "cpus": os.cpu_count(),
            "machine": platform.machine(), "jax": jax.__version__, "rows": rows},
            indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

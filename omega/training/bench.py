"""``omega bench``: end-to-end training throughput against the raw env step rate, one run.

Both numbers come from the same config on the same machine, back to back: first the
``VectorEnv`` of the config stepped with uniformly random actions (the ceiling any agent can
reach with these envs), then the configured agent training for the same number of env steps
(after one warm-up update, so compilation is not counted). The ratio is the share of the env
throughput the agent keeps.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from omega.config import config_to_yaml, load_config
from omega.envs import EnvFactory
from omega.envs.vector import VectorEnv


def raw_step_rate(cfg: Any, steps: int, seed: int = 0) -> float:
    factory = EnvFactory.from_config(cfg.env)
    with VectorEnv(factory, cfg.env.num_envs, cfg.env.num_workers, seed=seed) as venv:
        venv.reset()
        n = venv.num_envs
        rng = np.random.default_rng(seed)
        num_actions = int(venv.single_action_space.n)
        for _ in range(10):  # warm-up
            venv.step(rng.integers(0, num_actions, n))
        iters = max(1, steps // n)
        t0 = time.perf_counter()
        for _ in range(iters):
            venv.step(rng.integers(0, num_actions, n))
        return iters * n / (time.perf_counter() - t0)


def training_step_rate(cfg_path: Path, steps: int, async_learning: bool | None = None,
                       ) -> tuple[float, dict[str, Any]]:
    """Trains a throwaway experiment; returns env steps/s after the first (compiling) update.

    ``async_learning`` overrides ``train.async_learning`` of the config when given.
    """
    import csv

    from omega.training.experiment import make_experiment
    from omega.training.loop import train

    tmp = Path(tempfile.mkdtemp(prefix="omega-bench-"))
    try:
        cfg = load_config(cfg_path)
        per_update = _steps_per_update(cfg)
        total = per_update * (1 + max(1, steps // per_update))
        # Log every update so the first (compiling) one can be left out of the rate; no
        # checkpoints or recordings inside the measured window.
        cfg = dataclasses.replace(
            cfg,
            train=dataclasses.replace(
                cfg.train, log_every_steps=per_update, checkpoint_every_steps=total + 1,
                async_learning=cfg.train.async_learning if async_learning is None
                else async_learning),
            record=dataclasses.replace(cfg.record, every_n_episodes=0))
        (tmp / "bench.yaml").write_text(config_to_yaml(cfg))
        exp = make_experiment(tmp / "bench.yaml", tmp / "exp")
        t0 = time.perf_counter()
        train(exp, total_env_steps=total, out=open("/dev/null", "w"))  # noqa: SIM115
        wall = time.perf_counter() - t0
        with (exp / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
        rates = [float(r["env_steps_per_s"]) for r in rows[1:]]
        # Steps per row are equal, so the overall rate is the harmonic mean of row rates.
        rate = len(rates) / sum(1.0 / r for r in rates) if rates else float("nan")
        # Where the training time goes, per update (first one left out): acting is the
        # rollout (env steps + policy), learning the update.
        updates = max(1, len(rows) - 1)
        acting = sum(float(r["acting_s"]) for r in rows[1:]) / updates
        learning = sum(float(r["learning_s"]) for r in rows[1:]) / updates
        return rate, {"train_env_steps": total, "train_wall_s": wall,
                      "first_update_env_steps_per_s": float(rows[0]["env_steps_per_s"]),
                      "acting_s_per_update": acting, "learning_s_per_update": learning,
                      "env_steps_per_update": per_update,
                      "async_learning": cfg.train.async_learning}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _steps_per_update(cfg: Any) -> int:
    from omega.agents.registry import agent_spec

    return agent_spec(cfg.agent_type).rollout_length(cfg) * cfg.env.num_envs


def bench(config_path: str | Path, steps: int, out_json: str | Path | None = None,
          async_learning: bool | None = None) -> dict:
    cfg = load_config(config_path)
    raw = raw_step_rate(cfg, steps)
    trained, extra = training_step_rate(Path(config_path), steps, async_learning)
    result = {
        "config": str(config_path),
        "agent_type": cfg.agent_type,
        "env_id": cfg.env.id,
        "num_envs": cfg.env.num_envs,
        "num_workers": cfg.env.num_workers,
        "raw_env_steps_per_s": raw,
        "train_env_steps_per_s": trained,
        "ratio": trained / raw,
        **extra,
        "jax_backend": jax.default_backend(),
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
        "resolved_config": config_to_yaml(cfg),
    }
    if out_json:
        from omega.training.checkpoint import atomic_write_bytes

        atomic_write_bytes(Path(out_json), (json.dumps(result, indent=2) + "\n").encode())
    return result

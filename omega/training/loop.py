"""The single-process training loop: an :class:`Actor` and an agent's ``learn`` in turn.

``train(exp_dir)`` resumes from the newest checkpoint when there is one. The envs are not
part of a checkpoint: a resumed run starts fresh episodes (with new seeds), and the rows of
``metrics.csv`` written after the checkpoint are dropped so the file matches the restored
state.
"""

from __future__ import annotations

import collections
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from omega.agents import build_agent
from omega.config import config_hash, config_to_dict
from omega.envs import EnvFactory
from omega.envs.vector import VectorEnv
from omega.errors import OmegaError
from omega.training.actor import Actor
from omega.training.checkpoint import (
    LoopState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from omega.training.device import resolve_device
from omega.training.experiment import (
    CHECKPOINT_DIR,
    EPISODE_DIR,
    load_experiment,
    prune_episodes,
)
from omega.training.metrics import MetricsLogger
from omega.training.progress import Progress


def param_count(tree: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def probe_env(cfg: Any) -> tuple[dict[str, np.ndarray], int]:
    """One observation (batched to [1, ...]) and the number of actions of the configured env."""
    env = EnvFactory.from_config(cfg.env)(0)
    try:
        obs, _ = env.reset(seed=cfg.seed)
        num_actions = int(env.action_space.n)
    finally:
        env.close()
    return {k: v[None] for k, v in obs.items()}, num_actions


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else math.nan


def train(exp_dir: str | Path, device: str | None = None, total_env_steps: int | None = None,
          use_wandb: bool = False, out=None) -> LoopState:
    out = out if out is not None else sys.stdout
    exp_dir = Path(exp_dir)
    cfg = load_experiment(exp_dir)
    total = int(total_env_steps or cfg.train.total_env_steps)
    dev = resolve_device(device)
    chash = config_hash(cfg)

    with jax.default_device(dev):
        obs_example, num_actions = probe_env(cfg)
        agent, rollout_length = build_agent(cfg, num_actions)
        rng = jax.random.PRNGKey(cfg.seed)
        rng, init_key = jax.random.split(rng)
        state = agent.init(init_key, obs_example, cfg.env.num_envs)
        loop = LoopState(env_steps=0, updates=0, episodes=0, rng=np.asarray(rng))

        ckpt = latest_checkpoint(exp_dir / CHECKPOINT_DIR)
        if ckpt is not None:
            state, loop = load_checkpoint(ckpt, state, chash)
            print(f"omega: resuming from {ckpt.name} at {loop.env_steps:,} env steps", file=out)
        n_params = param_count(agent.params(state))
        print(f"omega: {cfg.agent_type} agent on {cfg.env.id}, {n_params:,} parameters, "
              f"{cfg.env.num_envs} envs over {cfg.env.num_workers} workers, device {dev}",
              file=out)
        if loop.env_steps >= total:
            print(f"omega: already trained for {loop.env_steps:,} env steps (target {total:,}); "
                  "pass --steps to train longer", file=out)
            return loop

        logger = MetricsLogger(exp_dir, use_wandb=use_wandb, wandb_cfg=cfg.wandb,
                               run_name=exp_dir.name, config=config_to_dict(cfg))
        logger.csv.truncate_after(loop.env_steps)
        factory = EnvFactory.from_config(
            cfg.env, record_root=str(exp_dir / EPISODE_DIR),
            record_every=cfg.record.every_n_episodes)
        # New seeds after a resume, so a resumed run does not replay the same games.
        env_seed = (cfg.seed * 1_000_003 + loop.env_steps) % (2**31)
        venv = VectorEnv(factory, cfg.env.num_envs, cfg.env.num_workers, seed=env_seed,
                         step_timeout_s=cfg.env.step_timeout_s)
        rng = jnp_key(loop.rng)
        rng, actor_key = jax.random.split(rng)
        actor = Actor(agent, venv, actor_key)

        steps_per_rollout = rollout_length * cfg.env.num_envs
        recent = collections.deque(maxlen=100)  # (return, length, success) for the progress bar
        window: list[Any] = []
        last_log_steps, last_ckpt_steps = loop.env_steps, loop.env_steps
        window_start = time.perf_counter()
        stop = {"signal": None}

        def on_signal(signum, _frame):
            stop["signal"] = signum

        old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        progress = Progress(total=total, start=loop.env_steps, out=out)
        try:
            while loop.env_steps < total and stop["signal"] is None:
                params = agent.params(state)
                trajectory, episodes = actor.rollout(params, rollout_length)
                rng, learn_key = jax.random.split(rng)
                state, metrics = agent.learn(state, trajectory, learn_key)
                loop = loop._replace(env_steps=loop.env_steps + steps_per_rollout,
                                     updates=loop.updates + 1,
                                     episodes=loop.episodes + len(episodes))
                window.extend(episodes)
                recent.extend((e.episode_return, e.length, e.success) for e in episodes)
                progress.update(loop.env_steps, recent)

                if loop.env_steps - last_log_steps >= cfg.train.log_every_steps \
                        or loop.env_steps >= total:
                    elapsed = time.perf_counter() - window_start
                    row = {
                        "env_steps": loop.env_steps,
                        "updates": loop.updates,
                        "episodes": loop.episodes,
                        "env_steps_per_s": (loop.env_steps - last_log_steps) / max(elapsed, 1e-9),
                        "episode_return": _mean([e.episode_return for e in window]),
                        "episode_length": _mean([e.length for e in window]),
                        "success_rate": _mean([float(e.success) for e in window]),
                        "worker_restarts": actor.worker_restarts,
                    }
                    row.update({k: float(v) for k, v in jax.device_get(metrics).items()})
                    logger.write(row)
                    progress.log(row)
                    window, last_log_steps = [], loop.env_steps
                    window_start = time.perf_counter()
                    prune_episodes(exp_dir, cfg.record.max_files)

                if loop.env_steps - last_ckpt_steps >= cfg.train.checkpoint_every_steps:
                    save_checkpoint(exp_dir / CHECKPOINT_DIR, state,
                                    loop._replace(rng=np.asarray(rng)), chash)
                    last_ckpt_steps = loop.env_steps
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
            progress.close()
            if loop.env_steps > last_ckpt_steps:
                save_checkpoint(exp_dir / CHECKPOINT_DIR, state,
                                loop._replace(rng=np.asarray(rng)), chash)
            actor.close()
            logger.close()
            prune_episodes(exp_dir, cfg.record.max_files)
        if stop["signal"] is not None:
            print(f"omega: stopped by signal {stop['signal']} at {loop.env_steps:,} env steps; "
                  "checkpoint saved, 'omega run' resumes", file=out)
            raise KeyboardInterrupt
        print(f"omega: done, {loop.env_steps:,} env steps, {loop.episodes:,} episodes; "
              f"evaluate with 'omega eval --dir {exp_dir}'", file=out)
        return loop


def jnp_key(data: np.ndarray) -> jax.Array:
    key = jax.numpy.asarray(np.asarray(data, np.uint32))
    if key.shape != (2,):
        raise OmegaError("checkpoint holds a malformed PRNG key; start a new experiment")
    return key

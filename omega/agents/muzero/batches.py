"""MuZero's side of the host-side replay: the buffer built from the config, a rollout added
to it, the sampling generator seeded from the learner's key, the train steps a rollout pays
for (``replay_ratio``), and a sampled batch cut down to what the jitted train step reads.
The n-step targets themselves are built by :class:`omega.replay.ReplayBuffer`.

Shapes: ``T`` rollout length, ``N`` envs, ``B`` batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from omega.agents.base import Observation, Trajectory
from omega.agents.muzero.config import MuZeroConfig
from omega.agents.parallel import DataParallel
from omega.replay import ReplayBatch, ReplayBuffer


def new_replay(cfg: MuZeroConfig, next_obs: bool) -> ReplayBuffer:
    """An empty replay for ``cfg``; ``next_obs``: store the observation after each
    unrolled step in the batches (the consistency and policy-gradient terms, chance codes)."""
    return ReplayBuffer(
        max_size=cfg.replay_size, num_unroll_steps=cfg.unroll_steps, td_steps=cfg.td_steps,
        gamma=cfg.gamma, max_age=cfg.replay_max_age, prioritized=cfg.prioritized,
        priority_alpha=cfg.priority_alpha, priority_beta=cfg.priority_beta,
        success_fraction=cfg.success_fraction, next_obs=next_obs, burn_in=cfg.burn_in_steps)


def add_trajectory(replay: ReplayBuffer, trajectory: Trajectory, obs: Observation,
                   recurrent: bool, rng: jax.Array) -> None:
    """Appends the rollout (``obs``: its observations, filtered, [T+1, N, ...]) to the
    replay, then seeds the replay's sampling generator from ``rng``."""
    extras = trajectory.extras
    obs = {k: v[:-1] for k, v in obs.items()}  # obs[T] comes again
    memory = {}
    if recurrent:
        memory = {"memory": extras["memory"], "first": trajectory.first[:-1]}
    replay.add(obs, trajectory.action, trajectory.reward, trajectory.terminated,
               trajectory.truncated, trajectory.truncation_value,
               extras["search_policy"], extras["root_value"], **memory)
    # Sampling follows the loop's key stream, so a run is reproducible from its seed.
    key = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
    replay.rng = np.random.default_rng(np.asarray(key).ravel().tolist())


def owed_train_steps(cfg: MuZeroConfig, replay: ReplayBuffer, credit: float, t: int,
                     n: int) -> tuple[float, int]:
    """(credit, train steps to run now) after a rollout of ``t`` x ``n`` env steps: ``replay_ratio``
    sampled steps per env step once the replay holds ``warmup_steps`` (or is full); the
    fraction of a train step left over is carried in the credit."""
    if len(replay) >= min(cfg.warmup_steps, replay.max_live):
        credit += cfg.replay_ratio * t * n / cfg.batch_size
    return credit, int(credit)


def device_batch(cfg: MuZeroConfig, batch: ReplayBatch,
                 data_parallel: DataParallel | None) -> ReplayBatch:
    """The batch without what the train step does not read (host-side indices, the
    bootstrap observations without ``fresh_bootstrap``, the acting policy without the
    policy-gradient term), split along its batch axis when learning data-parallel."""
    if not cfg.fresh_bootstrap:  # not needed on the device
        batch = batch._replace(bootstrap_obs={})
        if batch.memory is not None:
            batch = batch._replace(memory=batch.memory._replace(
                bootstrap_memory=None, bootstrap_first=None))
    batch = batch._replace(index=())
    if not cfg.policy_gradient_weight:  # only the policy-gradient term reads it
        batch = batch._replace(behaviour_policy=None)
    if data_parallel is not None:
        batch = data_parallel.shard(batch, axis=0)
    return batch

"""The recurrent encoder's memory in MuZero's train steps (``model.recurrent: true``): the
memory a sampled sequence starts from (the stored one, carried through the burn-in
observations) and the refresh of the stored memories with new params (``refresh_memory``).
Pure functions of the network (a flax module), its params and replay arrays; what to write
back is returned, the agent writes it.

Shapes: ``B`` batch, ``K`` unroll steps.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from omega.agents.base import Carry, Observation, Params
from omega.agents.muzero.config import MuZeroConfig
from omega.agents.muzero.networks import MuZeroNetwork
from omega.replay import MemoryBatch, ReplayBatch, ReplayBuffer


def start_memory(network: MuZeroNetwork, cfg: MuZeroConfig, params: Params,
                 memory: MemoryBatch) -> Carry:
    """The encoder memory [B, ...] before each sequence's start observation: the stored
    one, carried through the burn-in observations with ``params`` (no gradient unless
    ``burn_in_gradient``)."""
    if not cfg.burn_in_steps:
        return memory.memory
    through = cfg.burn_in_gradient
    if not through:
        params = jax.lax.stop_gradient(params)

    def step(m, inputs):
        obs, first, mask = inputs  # [B, ...], [B], [B]
        _, next_m = network.apply(params, obs, first, m, method=MuZeroNetwork.encode)
        # Steps before the window (another episode, or overwritten) leave it unchanged.
        keep = mask.reshape(mask.shape + (1,) * (m.ndim - 1)) > 0
        return jnp.where(keep, next_m, m), None

    time_major = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), (
        memory.burn_in_obs, memory.burn_in_first, memory.burn_in_mask))
    if through:
        # Recompute each step's encoding in the backward pass instead of stacking its
        # activations: on XLA:CPU the backward through the stacked residuals of this scan
        # costs ~7x its forward, and rematerialising makes the whole train step ~1.5x faster
        # (Omega-Memory-K10's recipe: ~400 -> 278 ms per step, 2 cores), same gradients.
        step = jax.checkpoint(step)
    start, _ = jax.lax.scan(step, memory.memory, time_major)
    return start if through else jax.lax.stop_gradient(start)


def refreshed_memories(network: MuZeroNetwork, cfg: MuZeroConfig, params: Params,
                       memory: MemoryBatch, obs: Observation, first: jax.Array) -> jax.Array:
    """The encoder memories [B, K+1, ...] after each of obs [B, K+1, ...] (first
    [B, K+1]), from the start memory of ``memory``."""

    def step(m, inputs):
        o, f = inputs
        _, m = network.apply(params, o, f, m, method=MuZeroNetwork.encode)
        return m, m

    _, memories = jax.lax.scan(step, start_memory(network, cfg, params, memory),
                               jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1),
                                                      (obs, first)))
    return jnp.swapaxes(memories, 0, 1)


RefreshFn = Callable[[Params, MemoryBatch, Observation, jax.Array], jax.Array]


def memory_refresh(replay: ReplayBuffer, refresh: RefreshFn, params: Params,
                   batch: ReplayBatch, unroll_steps: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What ``refresh_memory`` writes back to the replay after a train step: the memories
    after each of the batch's sequences' K + 1 observations (those before steps start + 1 ..
    start + K + 1), encoded with ``params`` (``refresh``: :func:`refreshed_memories`, jitted)
    from the start memory (burn-in included). -> (env [B*(K+1)], time [B*(K+1)], memory
    [B*(K+1), ...]), for :meth:`~omega.replay.ReplayBuffer.set_memory`."""
    env, slot = batch.index
    # The slot is the start's time modulo the capacity; the live window is shorter than
    # the capacity, so that time is the one live time with this slot.
    c = replay.capacity
    start = replay.oldest + (slot - replay.oldest) % c
    length = unroll_steps + 1
    obs, first = replay.sequences_at(env, start, length)
    start_memory_batch = batch.memory._replace(bootstrap_memory=None, bootstrap_first=None,
                                               next_memory=None, next_first=None)
    memory = refresh(params, start_memory_batch, obs, first)  # [B, K+1, ...]
    times = start[:, None] + np.arange(1, length + 1)  # [B, K+1]
    return (np.repeat(env, length), times.ravel(),
            np.asarray(memory).reshape((-1,) + memory.shape[2:]))

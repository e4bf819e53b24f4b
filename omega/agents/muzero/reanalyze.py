"""Reanalyze (Schrittwieser et al. 2021): fresh search targets for replayed steps.

The steps to search (the unroll positions of sampled sequences), the batches the search
reads (observations and memories, padded to one shape so the search compiles once), the
search itself (the acting search, greedy, with a fixed key), and what a batch's targets
replaced, to put back when they are not written back for good. The learner
(:meth:`MuZeroAgent.learn`) and remote reanalyze workers on the Ray backend
(:meth:`MuZeroAgent.sample_reanalyze_batch`, :meth:`MuZeroAgent.search_targets`,
:meth:`MuZeroAgent.write_search_targets`) use the same pieces. Plain numpy in and out.

Shapes: ``M`` steps, ``R`` >= ``M`` padded batch, ``A`` actions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from omega.agents.base import Params
from omega.agents.muzero.optim import ActorParams
from omega.replay import ReplayBuffer


class ReanalyzeBatch(NamedTuple):
    """Replay steps to reanalyze and what the search reads of them (:func:`reanalyze_batches`);
    plain numpy, so it travels to a remote reanalyze worker as is."""

    env: np.ndarray  # [M] the steps' envs
    time: np.ndarray  # [M] and times
    obs: dict[str, np.ndarray]  # [R, ...] their observations, padded to R >= M
    memory: np.ndarray | None = None  # [R, ...] stored memories (recurrent encoders only)
    first: np.ndarray | None = None  # [R] bool, likewise


class Reanalyzed(NamedTuple):
    """What :meth:`MuZeroAgent._reanalyze` did: the replay steps it searched afresh and
    wrote targets to, what they held before when those must be put back after the batch is
    built (``reanalyze_write_back`` off; else None), and each step's KL(new target || prior)."""

    env: np.ndarray  # [M]
    time: np.ndarray  # [M]
    replaced: tuple[np.ndarray, np.ndarray] | None  # (search_policy [M, A], root_value [M])
    target_kl: np.ndarray  # [M]


def nothing_reanalyzed() -> Reanalyzed:
    empty = np.zeros(0, np.int64)
    return Reanalyzed(empty, empty, None, np.zeros(0, np.float32))


def reanalyze_positions(replay: ReplayBuffer, starts: tuple[np.ndarray, np.ndarray, np.ndarray],
                        fraction: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The unroll positions (env [M], time [M]) of a random ``fraction`` of the sequences
    starting at ``starts`` (env [B], time [B], weight [B]), drawn with the replay's
    generator; None when that fraction rounds to no sequence."""
    env, start, _ = starts
    count = round(fraction * len(env))
    if count == 0:
        return None
    chosen = replay.rng.choice(len(env), size=count, replace=False)
    return replay.unroll_positions(env[chosen], start[chosen])


def reanalyze_batches(replay: ReplayBuffer, env: np.ndarray, time: np.ndarray, size: int,
                      recurrent: bool) -> list[ReanalyzeBatch]:
    """The live replay steps (env [M], time [M]) in batches of ``size`` with their
    observations (and memories, with a ``recurrent`` encoder); the last is padded to that
    size (one shape, so the search compiles once)."""
    batches = []
    for lo in range(0, len(env), size):
        e, t = env[lo:lo + size], time[lo:lo + size]
        pe = np.pad(e, (0, size - len(e)), mode="edge")
        pt = np.pad(t, (0, size - len(t)), mode="edge")
        memory = first = None
        if recurrent:
            memory, first = replay.memory_at(pe, pt)
        batches.append(ReanalyzeBatch(env=e, time=t, obs=replay.observations_at(pe, pt),
                                      memory=memory, first=first))
    return batches


ActFn = Callable[..., Any]


def search_extras(act: ActFn, key: jax.Array, net: Params,
                  batch: ReanalyzeBatch) -> dict[str, np.ndarray]:
    """Every output of the acting search ``act`` (the agent's jitted act) on the batch's
    steps ([M, ...] each, numpy) with network params ``net``: greedy (no Dirichlet or Gumbel
    noise, which would make the targets a noisy copy of what the network already knows
    rather than its best estimate) with a fixed ``key``, so they depend on the params
    alone."""
    actor = ActorParams(net=net, temperature=jnp.ones((), jnp.float32),
                        explore=jnp.zeros((), jnp.float32))
    memory = {}
    if batch.memory is not None:
        memory = {"first": batch.first, "memory": batch.memory}
    out = act(actor, batch.obs, key, greedy=True, **memory)
    m = len(batch.env)
    return {k: np.asarray(v)[:m] for k, v in jax.device_get(out.extras).items()}

"""The seam between acting and learning.

Acting (envs + policy) produces :class:`Trajectory` batches; learning consumes them and
hands back parameters. Every agent implements :class:`Agent`: a bundle of pure functions
over immutable pytrees, so the same code runs in one process (the default training loop)
or split across processes (an actor that only calls ``act`` and a learner that only calls
``learn``). See ``docs/architecture.md``.

Shapes: ``N`` is the number of envs, ``T`` the rollout length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np

Params = Any  # a pytree of arrays
AgentState = Any  # a pytree: params, optimiser state, counters (whatever the learner needs)
Carry = Any  # recurrent state of the policy, a pytree with leading [N] (None if stateless)
Observation = Mapping[str, np.ndarray]  # dict of arrays with leading [N] (or [T, N])


class ActOutput(NamedTuple):
    action: jax.Array  # [N] int32
    extras: Mapping[str, jax.Array]  # per-step data the learner needs, each [N, ...]
    carry: Carry  # next recurrent state


class Trajectory(NamedTuple):
    """A rollout of ``T`` steps from ``N`` envs, time-major.

    ``obs[t]`` is the observation the policy saw when it chose ``action[t]``; ``obs`` has one
    extra step at the end (``T + 1``) for bootstrapping. When an episode ended at step ``t``
    (``terminated[t] | truncated[t]``), ``obs[t + 1]`` is the first observation of the next
    episode and ``first[t + 1]`` is True. A truncated (time-limit) step is not terminal: its
    bootstrap value is in ``truncation_value[t]`` (the value of the real final observation).
    """

    obs: Mapping[str, np.ndarray]  # [T + 1, N, ...]
    first: np.ndarray  # [T + 1, N] bool: obs[t] starts an episode (recurrent state resets)
    action: np.ndarray  # [T, N] int32
    reward: np.ndarray  # [T, N] float32
    terminated: np.ndarray  # [T, N] bool
    truncated: np.ndarray  # [T, N] bool
    truncation_value: np.ndarray  # [T, N] float32, 0 where not truncated
    extras: Mapping[str, np.ndarray]  # [T, N, ...] from ActOutput.extras
    initial_carry: Carry  # recurrent state before obs[0], leading [N] (None if stateless)


class Agent(Protocol):
    """An agent: pure, jit-compiled functions plus the hooks the training loop needs."""

    def init(self, rng: jax.Array, obs_example: Observation, num_envs: int) -> AgentState:
        """Build the initial learner state (params, optimiser state, counters)."""

    def params(self, state: AgentState) -> Params:
        """The parameters the actor needs (sent learner -> actor)."""

    # Optional: ``eval_params(state) -> Params``, the params evaluation acts with when they
    # differ from the actor's (MuZero: no exploration noise); ``omega eval`` uses it if present.

    def initial_carry(self, num_envs: int) -> Carry:
        """Recurrent state at episode start for ``num_envs`` envs (None if stateless)."""

    def act(
        self, params: Params, obs: Observation, first: np.ndarray, carry: Carry, rng: jax.Array,
        greedy: bool,
    ) -> ActOutput:
        """Choose actions for all envs at once; ``first[i]`` resets env i's carry."""

    def value(self, params: Params, obs: Observation, carry: Carry) -> jax.Array:
        """State value [N], used to bootstrap truncated episodes."""

    def learn(
        self, state: AgentState, trajectory: Trajectory, rng: jax.Array
    ) -> tuple[AgentState, Mapping[str, float]]:
        """One learning step on a trajectory batch; returns the new state and scalar metrics."""

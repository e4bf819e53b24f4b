"""A uniformly random agent: the baseline every learning agent must beat."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from omega.agents.base import ActOutput, Observation, Trajectory


class RandomAgentState(NamedTuple):
    updates: jax.Array  # [] int32, rollouts seen (kept so checkpoints have learner state)


class RandomAgent:
    """Implements :class:`omega.agents.base.Agent`; ``learn`` only counts rollouts."""

    def __init__(self, num_actions: int):
        self.num_actions = int(num_actions)
        self._act = jax.jit(self._act_impl)

    def init(self, rng: jax.Array, obs_example: Observation, num_envs: int) -> RandomAgentState:
        del rng, obs_example, num_envs
        return RandomAgentState(updates=jnp.zeros((), jnp.int32))

    def params(self, state: RandomAgentState) -> Any:
        return {}

    def initial_carry(self, num_envs: int) -> None:
        return None

    def _act_impl(self, first: jax.Array, rng: jax.Array) -> jax.Array:
        return jax.random.randint(rng, first.shape, 0, self.num_actions, dtype=jnp.int32)

    def act(self, params: Any, obs: Observation, first: np.ndarray, carry: None,
            rng: jax.Array, greedy: bool = False) -> ActOutput:
        del params, obs, greedy
        return ActOutput(action=self._act(jnp.asarray(first), rng), extras={}, carry=None)

    def value(self, params: Any, obs: Observation, carry: None) -> jax.Array:
        return jnp.zeros(next(iter(obs.values())).shape[0], jnp.float32)

    def learn(self, state: RandomAgentState, trajectory: Trajectory, rng: jax.Array):
        del trajectory, rng
        return RandomAgentState(updates=state.updates + 1), {}

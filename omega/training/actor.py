"""The acting half of the seam: envs + policy -> :class:`Trajectory` batches.

The actor owns a :class:`VectorEnv`, the current observation, recurrent carry and episode
start flags. ``rollout`` runs ``T`` vector steps with one jitted ``act`` call per step and
returns time-major numpy arrays; it never touches the learner state, only the params it is
handed, so the same class runs in-process or as a remote actor.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from omega.agents.base import Agent, Params, Trajectory
from omega.envs.vector import EpisodeStats, VectorEnv


def _stack(items: list[Any]) -> Any:
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *items)


class Actor:
    def __init__(self, agent: Agent, venv: VectorEnv, rng: jax.Array):
        self.agent = agent
        self.venv = venv
        self.num_envs = venv.num_envs
        self._rng = rng
        self._obs = venv.reset()
        self._first = np.ones(self.num_envs, bool)
        self._carry = agent.initial_carry(self.num_envs)
        self.worker_restarts = 0

    def rollout(self, params: Params, length: int) -> tuple[Trajectory, list[EpisodeStats]]:
        obs_seq, first_seq = [self._obs], [self._first]
        actions, rewards, terms, truncs, trunc_values, extras = [], [], [], [], [], []
        initial_carry = self._carry
        episodes: list[EpisodeStats] = []
        for _ in range(length):
            self._rng, key = jax.random.split(self._rng)
            out = self.agent.act(params, self._obs, self._first, self._carry, key, greedy=False)
            action = np.asarray(out.action)
            obs, reward, terminated, truncated, info = self.venv.step(action)
            trunc_value = np.zeros(self.num_envs, np.float32)
            if truncated.any():
                # Time limits are not terminal: bootstrap from the real final observation.
                values = np.asarray(self.agent.value(params, info["final_obs"], out.carry))
                trunc_value = np.where(truncated, values, 0.0).astype(np.float32)
            self.worker_restarts += int(info.get("worker_restarts", 0))
            episodes.extend(info["episodes"])
            actions.append(action.astype(np.int32))
            rewards.append(np.asarray(reward, np.float32))
            terms.append(np.asarray(terminated, bool))
            truncs.append(np.asarray(truncated, bool))
            trunc_values.append(trunc_value)
            extras.append({k: np.asarray(v) for k, v in out.extras.items()})
            self._obs = obs
            self._first = np.logical_or(terminated, truncated)
            self._carry = out.carry
            obs_seq.append(obs)
            first_seq.append(self._first)
        trajectory = Trajectory(
            obs=_stack(obs_seq), first=np.stack(first_seq), action=np.stack(actions),
            reward=np.stack(rewards), terminated=np.stack(terms), truncated=np.stack(truncs),
            truncation_value=np.stack(trunc_values), extras=_stack(extras) if extras[0] else {},
            initial_carry=initial_carry)
        return trajectory, episodes

    def close(self) -> None:
        self.venv.close()

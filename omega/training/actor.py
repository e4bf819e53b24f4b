"""The acting half of the seam: envs + policy -> :class:`Trajectory` batches.

The actor owns a :class:`VectorEnv`, the current observation, recurrent carry and episode
start flags. ``rollout`` runs ``T`` vector steps and returns time-major numpy arrays; it never
touches the learner state, only the params it is handed, so the same class runs in-process or
as a remote actor.

Pipelining: with ``W >= 2`` env workers the envs are acted on in ``W`` groups (one per
worker). The policy for group ``g`` runs while the other workers are still stepping, so the
policy and the envs overlap instead of taking turns. Every action is still chosen from the
newest observation with the params handed in, so the data is exactly on-policy; only the
batch of one ``act`` call shrinks from ``N`` to ``N / W``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from omega.agents.base import Agent, Params, Trajectory
from omega.envs.vector import EpisodeStats, VectorEnv


def _tree_slice(tree: Any, sl: slice) -> Any:
    return jax.tree_util.tree_map(lambda x: x[sl], tree)


def _tree_concat(trees: list[Any]) -> Any:
    return jax.tree_util.tree_map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]),
                                  *trees)


class Actor:
    def __init__(self, agent: Agent, venv: VectorEnv, rng: jax.Array, pipeline: bool = True):
        self.agent = agent
        self.venv = venv
        self.num_envs = venv.num_envs
        self._rng = rng
        # Equal-sized groups keep one compiled shape for act; otherwise act on all at once.
        groups = venv.groups if pipeline else [slice(0, self.num_envs)]
        sizes = {g.stop - g.start for g in groups}
        self.groups = groups if len(groups) > 1 and len(sizes) == 1 else [slice(0, self.num_envs)]
        self._obs = venv.reset()
        self._first = np.ones(self.num_envs, bool)
        self._carry = agent.initial_carry(self.num_envs)
        self.worker_restarts = 0

    def rollout(self, params: Params, length: int) -> tuple[Trajectory, list[EpisodeStats]]:
        T, N = length, self.num_envs
        obs = {k: np.empty((T + 1, *v.shape), v.dtype) for k, v in self._obs.items()}
        first = np.empty((T + 1, N), bool)
        action = np.empty((T, N), np.int32)
        reward = np.empty((T, N), np.float32)
        terminated = np.empty((T, N), bool)
        truncated = np.empty((T, N), bool)
        truncation_value = np.zeros((T, N), np.float32)
        extras: dict[str, np.ndarray] = {}
        initial_carry = self._carry
        carries = [_tree_slice(self._carry, g) for g in self.groups]
        episodes: list[EpisodeStats] = []
        single = len(self.groups) == 1
        # One split for the whole rollout: an eager split per act call costs about as much
        # host time as the act call itself.
        keys = np.asarray(jax.random.split(self._rng, T * len(self.groups) + 1))
        self._rng = keys[-1]

        def act(t: int, gi: int) -> None:
            g = self.groups[gi]
            for k, v in obs.items():
                v[t, g] = self._obs[k][g]
            first[t, g] = self._first[g]
            group_obs = {k: v[t, g] for k, v in obs.items()}
            key = keys[t * len(self.groups) + gi]
            out = self.agent.act(params, group_obs, first[t, g], carries[gi], key, greedy=False)
            a, ex = jax.device_get((out.action, out.extras))
            for k, v in ex.items():
                if k not in extras:
                    extras[k] = np.empty((T, N, *v.shape[1:]), v.dtype)
                extras[k][t, g] = v
            action[t, g] = a
            carries[gi] = out.carry
            self.venv.step_async(a, group=None if single else gi)

        def collect(t: int, gi: int) -> None:
            g = self.groups[gi]
            o, r, term, trunc, info = self.venv.step_wait(group=None if single else gi)
            if trunc.any():
                # Time limits are not terminal: bootstrap from the real final observation.
                values = np.asarray(self.agent.value(params, info["final_obs"], carries[gi]))
                truncation_value[t, g] = np.where(trunc, values, 0.0)
            self.worker_restarts += int(info.get("worker_restarts", 0))
            episodes.extend(info["episodes"])
            reward[t, g], terminated[t, g], truncated[t, g] = r, term, trunc
            for k in self._obs:
                self._obs[k][g] = o[k]
            self._first[g] = np.logical_or(term, trunc)

        for t in range(T):
            for gi in range(len(self.groups)):
                if t > 0:
                    collect(t - 1, gi)
                act(t, gi)
        for gi in range(len(self.groups)):
            collect(T - 1, gi)
        for k, v in obs.items():
            v[T] = self._obs[k]
        first[T] = self._first
        self._carry = carries[0] if single else _tree_concat(carries)
        trajectory = Trajectory(
            obs=obs, first=first, action=action, reward=reward, terminated=terminated,
            truncated=truncated, truncation_value=truncation_value, extras=extras,
            initial_carry=initial_carry)
        return trajectory, episodes

    def close(self) -> None:
        self.venv.close()

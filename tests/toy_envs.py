"""Tiny pure-python gymnasium envs for the vector env tests (module level so they pickle)."""

from __future__ import annotations

import os
import time

import gymnasium
import numpy as np
from gymnasium import spaces


class CountingEnv(gymnasium.Env):
    """Deterministic toy env.

    Episode ``k`` (0-based, per env instance) lasts ``base_length + (k % 3)`` steps.
    Reward of a step is ``action + 1``; the episode is *terminated* when its length
    is even and *truncated* otherwise; ``info["success"]`` is True on termination.
    Observation: ``pos`` (step within episode) and ``state`` = [env_index, episode,
    step, seed-derived value, last action] so trajectories are easy to check.

    Failure injection (all counted in total steps of this env instance, 1-based):
    ``exit_on_step`` calls ``os._exit``; ``raise_on_step`` raises; ``sleep_on_step``
    sleeps ``sleep_s`` seconds. ``fail_only_first_process``: only inject when the
    marker file does not exist yet (so a restarted worker behaves).
    """

    metadata: dict = {"render_modes": []}

    def __init__(
        self,
        env_index: int = 0,
        base_length: int = 3,
        exit_on_step: int | None = None,
        raise_on_step: int | None = None,
        sleep_on_step: int | None = None,
        sleep_s: float = 10.0,
        marker: str | None = None,
    ):
        self.env_index = env_index
        self.base_length = base_length
        self.exit_on_step = exit_on_step
        self.raise_on_step = raise_on_step
        self.sleep_on_step = sleep_on_step
        self.sleep_s = sleep_s
        self.marker = marker
        self.observation_space = spaces.Dict(
            {
                "pos": spaces.Box(0, 1000, shape=(), dtype=np.int32),
                "state": spaces.Box(-(2**62), 2**62, shape=(5,), dtype=np.int64),
            }
        )
        self.action_space = spaces.Discrete(4)
        self._rng = np.random.default_rng(0)
        self._episode = -1
        self._t = 0
        self._total = 0
        self._seed_value = 0
        self._last_action = -1

    def _length(self) -> int:
        return self.base_length + (self._episode % 3)

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "pos": np.array(self._t, dtype=np.int32),
            "state": np.array(
                [self.env_index, self._episode, self._t, self._seed_value, self._last_action],
                dtype=np.int64,
            ),
        }

    def reset(self, *, seed: int | None = None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._seed_value = int(self._rng.integers(0, 2**31))
        self._episode += 1
        self._t = 0
        self._last_action = -1
        return self._obs(), {}

    def _inject(self) -> bool:
        if self.marker is None:
            return True
        if os.path.exists(self.marker):
            return False
        with open(self.marker, "w") as f:
            f.write(str(os.getpid()))
        return True

    def step(self, action):
        self._total += 1
        if self.exit_on_step == self._total and self._inject():
            os._exit(3)
        if self.raise_on_step == self._total and self._inject():
            raise ValueError(f"toy env {self.env_index} exploded on step {self._total}")
        if self.sleep_on_step == self._total and self._inject():
            time.sleep(self.sleep_s)
        self._t += 1
        self._last_action = int(action)
        length = self._length()
        done = self._t >= length
        terminated = done and length % 2 == 0
        truncated = done and not terminated
        info = {"success": bool(terminated)} if done else {}
        return self._obs(), float(action) + 1.0, terminated, truncated, info


def make_counting(env_index: int, **kwargs) -> CountingEnv:
    return CountingEnv(env_index=env_index, **kwargs)


def make_failing_on_env(env_index: int, bad_index: int, **kwargs) -> CountingEnv:
    """Injects the failure given in kwargs only into env ``bad_index``."""
    if env_index == bad_index:
        return CountingEnv(env_index=env_index, **kwargs)
    return CountingEnv(env_index=env_index)


def make_unknown(env_index: int) -> gymnasium.Env:
    return gymnasium.make("NoSuchEnv-v0")


def make_minihack(env_index: int) -> gymnasium.Env:
    import minihack  # noqa: F401  (registers the envs)

    return gymnasium.make("MiniHack-Room-5x5-v0", observation_keys=("glyphs", "blstats"))

"""The actor: pipelined (per-worker groups) and plain rollouts give the same exact trajectory."""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:
    from tests import toy_envs
except ImportError:  # pragma: no cover
    import toy_envs

from omega.agents.base import ActOutput  # noqa: E402
from omega.envs.vector import VectorEnv  # noqa: E402
from omega.training.actor import Actor  # noqa: E402


class CountingAgent:
    """Deterministic: action = (env index + steps since episode start) % 4.

    The carry counts steps since the episode started (reset by ``first``), so a carry routed
    to the wrong env or not reset at an episode boundary changes the actions.
    """

    def initial_carry(self, num_envs):
        return jnp.zeros(num_envs, jnp.int32)

    def act(self, params, obs, first, carry, rng, greedy=False):
        count = jnp.where(jnp.asarray(first), 0, carry) + 1
        env_index = jnp.asarray(obs["state"][:, 0]).astype(jnp.int32)
        action = (env_index + count) % 4
        return ActOutput(action=action, extras={"count": count.astype(jnp.float32)},
                         carry=count)

    def value(self, params, obs, carry):
        return jnp.asarray(obs["pos"], jnp.float32) * 10.0


def _rollout(pipeline: bool, num_workers: int, T: int = 13, n: int = 6):
    venv = VectorEnv(toy_envs.make_counting, num_envs=n, num_workers=num_workers, seed=3)
    actor = Actor(CountingAgent(), venv, rng=jnp.zeros(2, jnp.uint32), pipeline=pipeline)
    try:
        first = actor.rollout(None, T)
        second = actor.rollout(None, T)
    finally:
        actor.close()
    return actor, first, second


@pytest.fixture(scope="module")
def rollouts():
    return {
        "plain": _rollout(pipeline=False, num_workers=2),
        "pipelined": _rollout(pipeline=True, num_workers=2),
        "one_worker": _rollout(pipeline=True, num_workers=1),
    }


def test_pipelined_uses_one_group_per_worker(rollouts):
    assert len(rollouts["pipelined"][0].groups) == 2
    assert len(rollouts["plain"][0].groups) == 1
    assert len(rollouts["one_worker"][0].groups) == 1


def test_pipelined_equals_plain(rollouts):
    for name in ("pipelined", "one_worker"):
        for (traj, eps), (ref, ref_eps) in zip(rollouts[name][1:], rollouts["plain"][1:],
                                               strict=True):
            for field in ("first", "action", "reward", "terminated", "truncated",
                          "truncation_value"):
                np.testing.assert_array_equal(getattr(traj, field), getattr(ref, field), field)
            for k in ref.obs:
                np.testing.assert_array_equal(traj.obs[k], ref.obs[k])
            np.testing.assert_array_equal(traj.extras["count"], ref.extras["count"])
            np.testing.assert_array_equal(np.asarray(traj.initial_carry),
                                          np.asarray(ref.initial_carry))
            assert sorted(eps, key=lambda e: (e.env_index, e.length)) == \
                sorted(ref_eps, key=lambda e: (e.env_index, e.length))


def test_trajectory_is_consistent(rollouts):
    (traj, _), (traj2, _) = rollouts["pipelined"][1:]
    T, n = traj.action.shape
    env_index = traj.obs["state"][..., 0]
    assert (env_index == np.arange(n)).all()
    done = traj.terminated | traj.truncated
    np.testing.assert_array_equal(traj.first[1:], done)
    # obs[t + 1] is the result of action[t] unless a new episode started there.
    last_action = traj.obs["state"][1:, :, 4]
    np.testing.assert_array_equal(np.where(done, -1, last_action), np.where(done, -1, traj.action))
    np.testing.assert_array_equal(traj.reward, traj.action + 1.0)
    # Carry: steps since episode start, reset at boundaries.
    count = traj.extras["count"]
    assert (count[0] >= 1).all()
    np.testing.assert_array_equal(count[1:], np.where(traj.first[1:-1], 1, count[:-1] + 1))
    # Truncated steps bootstrap from the final observation (value = 10 * pos of the final obs).
    assert traj.truncated.any() and traj.terminated.any()
    assert (traj.truncation_value[traj.truncated] > 0).all()
    assert (traj.truncation_value[~traj.truncated] == 0).all()
    # The second rollout continues where the first stopped.
    for k in traj.obs:
        np.testing.assert_array_equal(traj2.obs[k][0], traj.obs[k][T])
    np.testing.assert_array_equal(np.asarray(traj2.initial_carry), count[-1])

"""Tests for omega.envs.vector.VectorEnv (multi-process, shared-memory vector env)."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # workers inherit sys.path, so they can import these too
    sys.path.insert(0, str(ROOT))

try:
    from tests import toy_envs
except ImportError:  # pragma: no cover - depends on how pytest set up sys.path
    import toy_envs

from omega.envs.vector import EnvWorkerError, EpisodeStats, VectorEnv  # noqa: E402

CountingEnv = toy_envs.CountingEnv


def _reference_rollout(num_envs: int, seed: int, actions: np.ndarray):
    """Single-process reference for auto-reset semantics using the same toy env."""
    envs = [CountingEnv(env_index=i) for i in range(num_envs)]
    first = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    returns = np.zeros(num_envs)
    lengths = np.zeros(num_envs, dtype=int)
    steps = []
    for a in actions:
        obs_t, final_t, rew_t, term_t, trunc_t, eps_t = [], {}, [], [], [], []
        for i, env in enumerate(envs):
            obs, r, te, tr, info = env.step(int(a[i]))
            returns[i] += r
            lengths[i] += 1
            if te or tr:
                final_t[i] = obs
                eps_t.append(
                    EpisodeStats(i, float(returns[i]), int(lengths[i]), bool(info["success"]), tr)
                )
                returns[i], lengths[i] = 0.0, 0
                obs, _ = env.reset()
            obs_t.append(obs)
            rew_t.append(r)
            term_t.append(te)
            trunc_t.append(tr)
        steps.append((obs_t, final_t, rew_t, term_t, trunc_t, eps_t))
    return first, steps


def _stack(obs_list):
    return {k: np.stack([o[k] for o in obs_list]) for k in obs_list[0]}


def test_shapes_autoreset_and_episode_stats():
    num_envs, seed, T = 5, 7, 14
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 4, size=(T, num_envs))
    first, ref = _reference_rollout(num_envs, seed, actions)

    with VectorEnv(toy_envs.make_counting, num_envs=num_envs, num_workers=2, seed=seed) as vec:
        assert vec.num_envs == num_envs
        assert set(vec.single_observation_space.spaces) == {"pos", "state"}
        assert vec.single_action_space.n == 4
        obs = vec.reset()
        for k, space in vec.single_observation_space.spaces.items():
            assert obs[k].shape == (num_envs, *space.shape)
            assert obs[k].dtype == space.dtype
        np.testing.assert_array_equal(obs["state"], _stack(first)["state"])

        n_episodes = 0
        for t in range(T):
            obs, rew, term, trunc, info = vec.step(actions[t])
            r_obs, r_final, r_rew, r_term, r_trunc, r_eps = ref[t]
            assert rew.dtype == np.float32 and rew.shape == (num_envs,)
            assert term.dtype == bool and trunc.dtype == bool
            np.testing.assert_array_equal(rew, np.asarray(r_rew, dtype=np.float32))
            np.testing.assert_array_equal(term, r_term)
            np.testing.assert_array_equal(trunc, r_trunc)
            # Auto-reset: obs of a finished env is the first obs of its next episode.
            for k in obs:
                np.testing.assert_array_equal(obs[k], _stack(r_obs)[k])
            done = term | trunc
            assert set(np.flatnonzero(done)) == set(r_final)
            for i in np.flatnonzero(done):
                assert obs["pos"][i] == 0
                assert info["final_obs"]["pos"][i] == r_final[i]["pos"]
                np.testing.assert_array_equal(info["final_obs"]["state"][i], r_final[i]["state"])
            assert info["episodes"] == r_eps
            assert info["worker_restarts"] == 0
            n_episodes += len(r_eps)
        assert n_episodes >= num_envs  # every env finished at least one episode


def test_same_seed_same_trajectory_and_seed_matters():
    actions = np.random.default_rng(1).integers(0, 4, size=(8, 3))

    def run(seed, workers, context=None):
        out = []
        with VectorEnv(toy_envs.make_counting, 3, workers, seed=seed, context=context) as vec:
            out.append(vec.reset()["state"])
            for a in actions:
                obs, rew, term, trunc, info = vec.step(a)
                out.append(np.concatenate([obs["state"].ravel(), rew, term, trunc]))
        return out

    a, b, c = run(3, 2), run(3, 1, "spawn"), run(4, 2)
    for x, y in zip(a, b, strict=True):  # worker layout / start method do not change the trajectory
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def _check_restart(vec, fail_step, caplog, expected_cause):
    """Envs 2-3 are on worker 1; env 2 fails on its ``fail_step``-th step."""
    vec.reset()
    actions = np.zeros(vec.num_envs, dtype=np.int64)
    for _ in range(fail_step - 1):
        _, _, _, _, info = vec.step(actions)
        assert info["worker_restarts"] == 0
    old_pid = vec._workers[1].process.pid
    with caplog.at_level(logging.WARNING, logger="omega.envs"):
        obs, rew, term, trunc, info = vec.step(actions)
    assert info["worker_restarts"] == 1
    assert vec._workers[1].process.pid != old_pid
    # The interrupted episodes of worker 1 (envs 2 and 3) are reported as truncated.
    restarted = [e for e in info["episodes"] if e.env_index in (2, 3)]
    assert [e.env_index for e in restarted] == [2, 3]
    assert all(e.truncated and not e.success for e in restarted)
    assert trunc[2] and trunc[3] and not term[2] and not term[3]
    assert obs["pos"][2] == 0 and obs["pos"][3] == 0
    assert any(
        "env worker 1" in r.getMessage() and expected_cause in r.getMessage()
        for r in caplog.records
    )
    for _ in range(3):
        obs, _, _, _, info = vec.step(actions)
        assert info["worker_restarts"] == 0
    return restarted


def test_worker_exit_is_restarted(tmp_path, caplog):
    fn = functools.partial(
        toy_envs.make_failing_on_env,
        bad_index=2,
        base_length=10,
        exit_on_step=4,
        marker=str(tmp_path / "exited"),
    )
    with VectorEnv(fn, num_envs=4, num_workers=2, seed=0, max_restarts=2) as vec:
        restarted = _check_restart(vec, 4, caplog, "exited with code 3")
    # Episode stats hold what was completed before the crash: 3 steps of reward 1.
    assert restarted[0].length == 3 and restarted[0].episode_return == 3.0


def test_env_exception_is_restarted(tmp_path, caplog):
    fn = functools.partial(
        toy_envs.make_failing_on_env,
        bad_index=2,
        base_length=10,
        raise_on_step=2,
        marker=str(tmp_path / "raised"),
    )
    with VectorEnv(fn, num_envs=4, num_workers=2, seed=0) as vec:
        _check_restart(vec, 2, caplog, "exploded on step 2")


def test_sigkill_worker_is_restarted(caplog):
    with VectorEnv(toy_envs.make_counting, num_envs=4, num_workers=2, seed=0) as vec:
        vec.reset()
        a = np.ones(4, dtype=np.int64)
        obs, *_ = vec.step(a)
        final_expected = obs["state"][2:4].copy()
        os.kill(vec._workers[1].process.pid, signal.SIGKILL)
        with caplog.at_level(logging.WARNING, logger="omega.envs"):
            obs, rew, term, trunc, info = vec.step(a)
        assert info["worker_restarts"] == 1
        eps = {e.env_index: e for e in info["episodes"]}
        assert eps[2] == EpisodeStats(2, 2.0, 1, False, True)
        assert eps[3] == EpisodeStats(3, 2.0, 1, False, True)
        np.testing.assert_array_equal(info["final_obs"]["state"][2:4], final_expected)
        assert "SIGKILL" in caplog.text
        vec.step(a)


def test_too_many_restarts_raises(tmp_path):
    fn = functools.partial(toy_envs.make_failing_on_env, bad_index=1, exit_on_step=1)
    vec = VectorEnv(fn, num_envs=2, num_workers=2, seed=0, max_restarts=1)
    vec.reset()
    with pytest.raises(EnvWorkerError, match="env worker 1"):
        # Each restarted env exits again on its first step.
        for _ in range(3):
            vec.step(np.zeros(2, dtype=np.int64))
    vec.close()


def test_hung_step_raises_within_timeout():
    fn = functools.partial(toy_envs.make_failing_on_env, bad_index=1, sleep_on_step=2, sleep_s=60.0)
    vec = VectorEnv(fn, num_envs=2, num_workers=2, seed=0, step_timeout_s=1.0)
    pids = [w.process.pid for w in vec._workers]
    vec.reset()
    vec.step(np.zeros(2, dtype=np.int64))
    t0 = time.monotonic()
    with pytest.raises(EnvWorkerError, match=r"env worker 1 \(env 1\) did not answer within 1 s"):
        vec.step(np.zeros(2, dtype=np.int64))
    assert time.monotonic() - t0 < 10.0
    for pid in pids:  # the hung worker was killed, not left sleeping
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="closed"):
        vec.step(np.zeros(2, dtype=np.int64))
    vec.close()


def test_bad_env_fn_reports_original_error():
    t0 = time.monotonic()
    with pytest.raises(EnvWorkerError, match="NoSuchEnv") as err:
        VectorEnv(toy_envs.make_unknown, num_envs=2, num_workers=1)
    assert "\n" not in str(err.value)
    assert time.monotonic() - t0 < 30.0


def test_close_is_idempotent():
    vec = VectorEnv(toy_envs.make_counting, num_envs=3, num_workers=2)
    pids = [w.process.pid for w in vec._workers]
    vec.reset()
    vec.close()
    vec.close()
    for pid in pids:  # workers exited and were reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(RuntimeError):
        vec.step(np.zeros(3, dtype=np.int64))


def test_minihack_room():
    pytest.importorskip("minihack")
    with VectorEnv(toy_envs.make_minihack, num_envs=3, num_workers=2, seed=1) as vec:
        space = vec.single_observation_space
        assert set(space.spaces) == {"glyphs", "blstats"}
        obs = vec.reset()
        assert obs["glyphs"].shape == (3, 21, 79) and obs["glyphs"].dtype == np.int16
        assert obs["blstats"].shape == (3, 27)
        rng = np.random.default_rng(0)
        for _ in range(30):
            obs, rew, term, trunc, info = vec.step(rng.integers(0, vec.single_action_space.n, 3))
            for k in space.spaces:
                assert obs[k].shape == (3, *space[k].shape) and obs[k].dtype == space[k].dtype
                assert info["final_obs"][k].shape == obs[k].shape
            for e in info["episodes"]:
                assert isinstance(e, EpisodeStats) and e.length > 0
            assert info["worker_restarts"] == 0


def test_step_async_per_group_matches_step():
    num_envs, seed, T = 5, 11, 9
    actions = np.random.default_rng(1).integers(0, 4, size=(T, num_envs))
    with VectorEnv(toy_envs.make_counting, num_envs=num_envs, num_workers=2, seed=seed) as ref, \
            VectorEnv(toy_envs.make_counting, num_envs=num_envs, num_workers=2, seed=seed) as vec:
        ref.reset()
        vec.reset()
        groups = vec.groups
        assert sorted(g.stop - g.start for g in groups) == [2, 3]
        assert groups[0].start == 0 and groups[-1].stop == num_envs
        for t in range(T):
            r_obs, r_rew, r_term, r_trunc, r_info = ref.step(actions[t])
            # Interleaved: start both groups, collect in reverse order.
            for gi, g in enumerate(groups):
                vec.step_async(actions[t][g], group=gi)
            for gi in reversed(range(len(groups))):
                g = groups[gi]
                obs, rew, term, trunc, info = vec.step_wait(group=gi)
                np.testing.assert_array_equal(rew, r_rew[g])
                np.testing.assert_array_equal(term, r_term[g])
                np.testing.assert_array_equal(trunc, r_trunc[g])
                for k in obs:
                    np.testing.assert_array_equal(obs[k], r_obs[k][g])
                    np.testing.assert_array_equal(info["final_obs"][k], r_info["final_obs"][k][g])
                assert info["episodes"] == [e for e in r_info["episodes"]
                                            if g.start <= e.env_index < g.stop]


def test_step_async_misuse_is_an_error():
    with VectorEnv(toy_envs.make_counting, num_envs=4, num_workers=2) as vec:
        vec.reset()
        with pytest.raises(RuntimeError, match="without a matching step_async"):
            vec.step_wait(group=0)
        vec.step_async(np.zeros(2, int), group=0)
        with pytest.raises(RuntimeError, match="twice"):
            vec.step_async(np.zeros(2, int), group=0)
        with pytest.raises(RuntimeError, match="reset"):
            vec.reset()
        with pytest.raises(ValueError, match="shape"):
            vec.step_async(np.zeros(4, int), group=1)
        with pytest.raises(ValueError, match="group"):
            vec.step_async(np.zeros(2, int), group=5)
        vec.step_wait(group=0)
        vec.step(np.zeros(4, int))

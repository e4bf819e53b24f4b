"""Replay buffer: n-step targets by hand, unroll masks at episode ends, sampling shapes,
prioritised sampling and importance weights, eviction by size and by age, success balancing."""

import chex
import numpy as np
import pytest

from omega.replay import ReplayBuffer, nstep_value_targets

A = 3


def add_steps(replay, t, n, *, reward=None, terminated=None, truncated=None, trunc_value=None,
              root_value=None):
    """Adds ``t`` steps of ``n`` envs; obs 'time'/'env' record where each step came from."""
    start = replay.time
    times = np.broadcast_to(np.arange(start, start + t)[:, None], (t, n))
    envs = np.broadcast_to(np.arange(n)[None], (t, n))
    zeros = np.zeros((t, n), np.float32)
    replay.add(
        obs={"time": times.astype(np.int64), "env": envs.astype(np.int64)},
        action=np.asarray(times % A, np.int32),
        reward=zeros if reward is None else reward,
        terminated=np.zeros((t, n), bool) if terminated is None else terminated,
        truncated=np.zeros((t, n), bool) if truncated is None else truncated,
        truncation_value=zeros if trunc_value is None else trunc_value,
        search_policy=np.full((t, n, A), 1.0 / A, np.float32),
        root_value=zeros if root_value is None else root_value)


# ---------------------------------------------------------------------------------------------
# n-step targets


def test_nstep_targets_by_hand():
    g = 0.9
    f, t = False, True
    # Five windows of n = 3 steps (root values for offsets 0..3).
    reward = np.array([[1, 2, 3]] * 5, np.float32)
    terminated = np.array([[f, f, f], [f, t, f], [f, f, f], [f, f, f], [f, t, f]])
    truncated = np.array([[f, f, f], [f, f, f], [t, f, f], [f, f, f], [f, f, f]])
    trunc_value = np.array([[0, 0, 0], [0, 0, 0], [5, 0, 0], [0, 0, 0], [0, 0, 0]], np.float32)
    root_value = np.array([[0, 7, 8, 10]] * 5, np.float32)
    known = np.array([9, 9, 9, 2, 2])
    expected = [
        1 + g * 2 + g**2 * 3 + g**3 * 10,  # no end: full n-step bootstrap
        1 + g * 2,  # terminal at offset 1: nothing after it
        1 + g * 5,  # time limit at offset 0: bootstraps its truncation value
        1 + g * 7,  # only 2 steps stored: bootstrap from the last stored root value
        1 + g * 2,  # 2 steps stored, but the episode ends in them: exact
    ]
    out = nstep_value_targets(reward, terminated, truncated, trunc_value, root_value, known, g)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.fixture
def hand_replay():
    """One env, 8 steps, rewards 1..8, a terminal at step 2, a time limit at step 5 (bootstrap
    100), root values 10 * t; gamma 0.5, n = 3, K = 2."""
    replay = ReplayBuffer(max_size=100, num_unroll_steps=2, td_steps=3, gamma=0.5)
    col = lambda x: np.asarray(x)[:, None]  # noqa: E731  [T, N=1]
    term, trunc, tv = np.zeros(8, bool), np.zeros(8, bool), np.zeros(8, np.float32)
    term[2], trunc[5], tv[5] = True, True, 100.0
    add_steps(replay, 8, 1, reward=col(np.arange(1, 9, dtype=np.float32)), terminated=col(term),
              truncated=col(trunc), trunc_value=col(tv),
              root_value=col(10.0 * np.arange(8, dtype=np.float32)))
    return replay


def sample_by_start(replay, batch=256):
    b = replay.sample(batch)
    by_start = {}
    for i, t in enumerate(b.obs["time"]):
        by_start[int(t)] = {k: getattr(b, k)[i] for k in (
            "action", "reward_target", "reward_mask", "terminal_target", "value_target",
            "value_mask", "policy_target", "policy_mask")}
    return by_start


def test_replay_value_targets_across_episode_ends(hand_replay):
    s = sample_by_start(hand_replay)
    assert sorted(s) == list(range(8))
    expected_v0 = {
        0: 1 + 0.5 * 2 + 0.25 * 3,  # steps 0..2, terminal at 2
        1: 2 + 0.5 * 3,
        2: 3.0,
        3: 4 + 0.5 * 5 + 0.25 * 6 + 0.125 * 100,  # time limit at step 5: never terminal
        4: 5 + 0.5 * 6 + 0.25 * 100,
        5: 6 + 0.5 * 100,
        6: 7 + 0.5 * 70,  # newest step is 7: bootstrap from root_value[7]
        7: 70.0,
    }
    for start, v in expected_v0.items():
        assert s[start]["value_target"][0] == pytest.approx(v), start


def test_replay_unroll_masks_after_terminal_and_time_limit(hand_replay):
    s = sample_by_start(hand_replay)
    # From step 1: positions 1, 2 in the episode, 3 after the terminal (absorbing).
    x = s[1]
    np.testing.assert_allclose(x["value_target"], [2 + 0.5 * 3, 3.0, 0.0])
    np.testing.assert_array_equal(x["value_mask"], [1, 1, 1])
    np.testing.assert_array_equal(x["policy_mask"], [1, 1, 0])
    np.testing.assert_allclose(x["reward_target"], [2, 3])
    np.testing.assert_array_equal(x["reward_mask"], [1, 1])
    np.testing.assert_array_equal(x["action"], [1 % A, 2 % A])
    np.testing.assert_array_equal(x["terminal_target"], [0, 1])  # step 2 ends the episode
    # From step 2: the terminal step itself, then two absorbing steps with reward 0.
    x = s[2]
    np.testing.assert_allclose(x["reward_target"], [3, 0])
    np.testing.assert_array_equal(x["reward_mask"], [1, 1])
    np.testing.assert_array_equal(x["value_mask"], [1, 1, 1])
    np.testing.assert_allclose(x["value_target"][1:], [0, 0])
    np.testing.assert_array_equal(x["policy_mask"], [1, 0, 0])
    np.testing.assert_allclose(x["policy_target"][1:], 0.0)
    np.testing.assert_array_equal(x["terminal_target"], [1, 1])  # and stays ended
    # From step 4: the time limit at step 5 leaves position 6 unknown: nothing is trained there.
    x = s[4]
    np.testing.assert_allclose(x["reward_target"], [5, 6])
    np.testing.assert_array_equal(x["reward_mask"], [1, 1])
    np.testing.assert_array_equal(x["value_mask"], [1, 1, 0])
    np.testing.assert_array_equal(x["policy_mask"], [1, 1, 0])
    np.testing.assert_array_equal(x["terminal_target"], [0, 0])  # a time limit is no terminal
    # From step 7 (the newest): the reward of step 7 is known, nothing after it.
    x = s[7]
    np.testing.assert_array_equal(x["reward_mask"], [1, 0])
    np.testing.assert_array_equal(x["value_mask"], [1, 0, 0])
    np.testing.assert_array_equal(x["policy_mask"], [1, 0, 0])


# ---------------------------------------------------------------------------------------------
# Sampling


def test_sample_shapes_and_uniform_weights():
    replay = ReplayBuffer(max_size=1000, num_unroll_steps=5, td_steps=4, gamma=0.9)
    for _ in range(3):
        add_steps(replay, 8, 4)
    assert len(replay) == 96
    b = replay.sample(32)
    chex.assert_shape([b.obs["time"], b.obs["env"], b.weight], (32,))
    chex.assert_shape([b.action, b.reward_target, b.reward_mask, b.terminal_target], (32, 5))
    chex.assert_shape([b.value_target, b.value_mask, b.policy_mask], (32, 6))
    chex.assert_shape(b.policy_target, (32, 6, A))
    assert b.action.dtype == np.int32 and b.value_target.dtype == np.float32
    np.testing.assert_array_equal(b.weight, 1.0)
    # The recorded index points back to the sampled step.
    env, slot = b.index
    np.testing.assert_array_equal(replay.obs["time"][env, slot], b.obs["time"])
    np.testing.assert_array_equal(env, b.obs["env"])


def test_prioritised_sampling_and_importance_weights():
    replay = ReplayBuffer(max_size=1000, num_unroll_steps=1, td_steps=1, gamma=0.9,
                          prioritized=True, priority_alpha=1.0, priority_beta=0.5, seed=1)
    add_steps(replay, 10, 2)  # 20 live steps
    replay.data["priority"][:] = 1.0
    high_env, high_time = 1, 3
    replay.update_priorities((np.array([high_env]), np.array([high_time])), np.array([19.0]))

    p_high = (19.0 + 1e-3) / (19.0 + 1e-3 + 19 * 1.0)
    hits, n = 0, 0
    for _ in range(50):
        b = replay.sample(64)
        is_high = (b.obs["time"] == high_time) & (b.obs["env"] == high_env)
        hits += is_high.sum()
        n += len(is_high)
        # w_i = (L * P(i))^-beta / max_j w_j: the high item has the smallest weight.
        w_high = (20 * p_high) ** -0.5
        w_low = (20 * (1 - p_high) / 19) ** -0.5
        expected = np.where(is_high, w_high, w_low) / (w_low if (~is_high).any() else w_high)
        np.testing.assert_allclose(b.weight, expected, rtol=1e-5)
    assert hits / n == pytest.approx(p_high, abs=0.05)  # ~0.5 against 1/20 uniformly


def test_new_steps_get_the_max_priority():
    replay = ReplayBuffer(max_size=100, num_unroll_steps=1, td_steps=1, gamma=0.9,
                          prioritized=True)
    add_steps(replay, 4, 1)
    replay.update_priorities((np.array([0]), np.array([0])), np.array([7.0]))
    add_steps(replay, 2, 1)
    np.testing.assert_allclose(replay.data["priority"][0, 4:6], 7.0 + 1e-3)


def test_max_size_drops_the_oldest():
    replay = ReplayBuffer(max_size=16, num_unroll_steps=2, td_steps=2, gamma=0.9)
    add_steps(replay, 6, 2)
    add_steps(replay, 6, 2)  # 24 steps added, 8 slots per env
    assert replay.capacity == 8 and len(replay) == 16 and replay.oldest == 4
    times = replay.sample(500).obs["time"]
    assert times.min() == 4 and times.max() == 11


def test_max_age_drops_old_steps():
    replay = ReplayBuffer(max_size=1000, num_unroll_steps=2, td_steps=2, gamma=0.9, max_age=8)
    add_steps(replay, 10, 2)  # ages in env steps: the newest 4 steps per env are <= 8 old
    assert len(replay) == 8 and replay.max_live == 8
    times = replay.sample(500).obs["time"]
    assert times.min() == 6 and times.max() == 9


def test_success_balancing():
    """Env 0 wins one episode, env 1 fails two and env 2 never finishes: half the starts come
    from the winning episode although it holds a tenth of the steps."""
    replay = ReplayBuffer(max_size=1000, num_unroll_steps=1, td_steps=1, gamma=0.9,
                          success_fraction=0.5, seed=3)
    t, n = 10, 3
    reward = np.zeros((t, n), np.float32)
    terminated = np.zeros((t, n), bool)
    reward[2, 0], terminated[2, 0] = 1.0, True  # env 0: steps 0..2 succeed
    terminated[4, 1] = terminated[9, 1] = True  # env 1: two failures (reward 0)
    add_steps(replay, t, n, reward=reward, terminated=terminated)
    outcome = replay.data["outcome"]
    np.testing.assert_array_equal(outcome[0, :3], 1)
    np.testing.assert_array_equal(outcome[0, 3:10], 0)  # env 0's second episode is running
    np.testing.assert_array_equal(outcome[1, :10], -1)
    np.testing.assert_array_equal(outcome[2, :10], 0)
    b = replay.sample(4000)
    from_success = (b.obs["env"] == 0) & (b.obs["time"] <= 2)
    assert from_success.mean() == pytest.approx(0.5, abs=0.05)


def test_add_checks_env_count_and_capacity():
    replay = ReplayBuffer(max_size=8, num_unroll_steps=1, td_steps=1, gamma=0.9)
    add_steps(replay, 2, 2)
    with pytest.raises(ValueError, match="holds 2 envs"):
        add_steps(replay, 2, 3)
    with pytest.raises(ValueError, match="exceeds the capacity"):
        add_steps(replay, 5, 2)
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(max_size=8, num_unroll_steps=1, td_steps=1, gamma=0.9).sample(1)


def test_fresh_bootstrap_split_rebuilds_the_stored_targets():
    """value_partial + bootstrap_discount * root_value(bootstrap_obs) == value_target, so a
    learner can swap the stored root values for its current network's values."""
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(max_size=400, num_unroll_steps=3, td_steps=4, gamma=0.9)
    t, n = 10, 4
    for _ in range(5):
        term = rng.random((t, n)) < 0.1
        trunc = (rng.random((t, n)) < 0.05) & ~term
        # Unique observations, so each bootstrap observation names its stored step.
        buf.add({"x": rng.normal(size=(t, n, 2)).astype(np.float32)},
                rng.integers(0, 3, (t, n)), rng.normal(size=(t, n)), term, trunc,
                rng.normal(size=(t, n)), np.full((t, n, 3), 1 / 3), rng.normal(size=(t, n)))
    batch = buf.sample(256)
    root_value = {tuple(buf.obs["x"][e, s]): buf.data["root_value"][e, s]
                  for e in range(n) for s in range(buf.capacity)}
    boot = np.array([[root_value[tuple(x)] for x in row] for row in batch.bootstrap_obs["x"]])
    assert batch.bootstrap_obs["x"].shape == (256, 4, 2)
    rebuilt = batch.value_partial + batch.bootstrap_discount * boot
    np.testing.assert_allclose(np.where(batch.value_mask > 0, rebuilt, 0.0),
                               np.where(batch.value_mask > 0, batch.value_target, 0.0),
                               atol=1e-5)
    # Both kinds occur: targets that end inside their window and targets that bootstrap.
    assert (batch.bootstrap_discount[batch.value_mask > 0] == 0).any()
    assert (batch.bootstrap_discount > 0).any()


# ---------------------------------------------------------------------------------------------
# Reanalyze apart from the train steps (remote workers) and streams cut by a replaced actor


def test_set_search_targets_if_live_skips_steps_evicted_meanwhile():
    replay = ReplayBuffer(max_size=16, num_unroll_steps=2, td_steps=2, gamma=0.9)
    add_steps(replay, 6, 2)  # 8 slots per env
    env, time = replay.sample_positions(12)
    assert 0 < len(env) <= 12 and np.all(time < replay.time)
    assert len(set(zip(env.tolist(), time.tolist(), strict=True))) == len(env)  # distinct
    # Targets computed for every step of both envs, then 6 more steps evict times 0..3.
    env, time = np.repeat([0, 1], 6), np.tile(np.arange(6), 2)
    add_steps(replay, 6, 2)
    assert replay.oldest == 4
    before = replay.data["search_policy"].copy()
    policy = np.tile(np.array([1.0, 0.0, 0.0], np.float32), (12, 1))
    value = np.full(12, 7.0, np.float32)
    assert replay.set_search_targets_if_live(env, time, policy, value) == 4  # times 4, 5
    changed = np.zeros(before.shape[:2], bool)
    changed[[0, 0, 1, 1], [4, 5, 4, 5]] = True
    np.testing.assert_array_equal(replay.data["search_policy"][changed], policy[:4])
    np.testing.assert_array_equal(replay.data["root_value"][changed], 7.0)
    # The slots of the evicted times 0..3 now hold times 8..11: untouched.
    np.testing.assert_array_equal(replay.data["search_policy"][~changed], before[~changed])
    with pytest.raises(ValueError, match="live steps"):  # the strict version still refuses
        replay.set_search_targets(env, time, policy, value)
    # Eviction by age counts the same way.
    aged = ReplayBuffer(max_size=1000, num_unroll_steps=2, td_steps=2, gamma=0.9, max_age=8)
    add_steps(aged, 10, 2)  # live: times 6..9
    assert aged.set_search_targets_if_live(np.zeros(10, int), np.arange(10),
                                           policy[:1].repeat(10, 0), np.ones(10)) == 4


def test_end_streams_stops_targets_at_the_cut():
    replay = ReplayBuffer(max_size=100, num_unroll_steps=2, td_steps=3, gamma=0.5)
    root = np.broadcast_to(10.0 * np.arange(4, dtype=np.float32)[:, None], (4, 2))
    add_steps(replay, 4, 2, reward=np.ones((4, 2), np.float32), root_value=root)
    assert replay.end_streams(np.array([0])) == 1
    assert replay.end_streams(np.array([0])) == 0  # already ends there
    # Env 0's next steps come from a new env (a replaced actor): another stream.
    add_steps(replay, 4, 2, reward=np.ones((4, 2), np.float32),
              root_value=np.full((4, 2), 1000.0, np.float32))
    b = replay.sample(400)
    for e, expected, mask in ((0, 1 + 0.5 * 30, [1, 1, 0]),  # bootstraps its own root value
                              (1, 1 + 0.5 + 0.25 + 0.125 * 1000, [1, 1, 1])):
        rows = np.flatnonzero((b.obs["time"] == 2) & (b.obs["env"] == e))
        assert len(rows), "start (env, 2) not sampled"
        np.testing.assert_allclose(b.value_target[rows[0], 0], expected, rtol=1e-6)
        np.testing.assert_array_equal(b.policy_mask[rows[0]], mask)
    assert replay.data["outcome"][0, :4].tolist() == [-1] * 4  # an unfinished episode
    assert ReplayBuffer(max_size=10, num_unroll_steps=1, td_steps=1, gamma=0.9).end_streams(
        np.array([0])) == 0  # nothing stored yet


def test_state_dict_round_trips_through_msgpack():
    """What a checkpoint saves: after msgpack (no pickle) a new buffer holds the same steps,
    priorities and episode labels, and samples the same batches with the same generator."""
    from flax import serialization

    def fresh(max_size=40):
        return ReplayBuffer(max_size=max_size, num_unroll_steps=2, td_steps=3, gamma=0.9,
                            prioritized=True, success_fraction=0.5)

    replay = fresh()
    t, n = 7, 2
    for i in range(4):  # 28 steps per env into 20 slots: the ring has wrapped
        terminated = np.zeros((t, n), bool)
        terminated[3, i % n] = True
        add_steps(replay, t, n, terminated=terminated, reward=terminated.astype(np.float32))
        replay.update_priorities((np.array([0, 1]), np.array([i, i + 1])), np.array([2.0, 3.0]))
    blob = serialization.msgpack_serialize(replay.state_dict())
    restored = fresh()
    restored.load_state_dict(serialization.msgpack_restore(blob))
    assert len(restored) == len(replay) == 40 and restored.time == replay.time == 28
    for key in replay.data:
        np.testing.assert_array_equal(restored.data[key], replay.data[key])
    replay.rng, restored.rng = np.random.default_rng(5), np.random.default_rng(5)
    a, b = replay.sample(16), restored.sample(16)
    assert sorted(a.obs) == sorted(b.obs)
    for key in a.obs:
        np.testing.assert_array_equal(a.obs[key], b.obs[key])
    np.testing.assert_array_equal(a.value_target, b.value_target)
    np.testing.assert_array_equal(a.weight, b.weight)
    add_steps(restored, t, n)  # writable, and continues each env's stream
    assert restored.time == 35

    empty = fresh()
    empty.load_state_dict(serialization.msgpack_restore(
        serialization.msgpack_serialize(fresh().state_dict())))
    assert len(empty) == 0
    with pytest.raises(ValueError, match="slots per env"):
        fresh(max_size=80).load_state_dict(replay.state_dict())


def test_replay_saved_before_the_behaviour_policy_field_still_loads():
    """A checkpoint's replay from before the acting policy had its own field: it loads, and
    the importance weights read the stored search policy, as that run's did."""
    replay = ReplayBuffer(max_size=40, num_unroll_steps=2, td_steps=3, gamma=0.9)
    add_steps(replay, 7, 2)
    state = replay.state_dict()
    state["data"] = {k: v for k, v in state["data"].items() if k != "behaviour_policy"}
    restored = ReplayBuffer(max_size=40, num_unroll_steps=2, td_steps=3, gamma=0.9)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.data["behaviour_policy"],
                                  replay.data["search_policy"])
    state["data"] = {k: v for k, v in state["data"].items() if k != "root_value"}
    with pytest.raises(ValueError, match="fields"):
        ReplayBuffer(max_size=40, num_unroll_steps=2, td_steps=3, gamma=0.9).load_state_dict(state)


def test_add_without_search_fields_for_an_agent_that_has_none():
    """An agent without a search adds no search_policy or root_value: the batches have no
    policy targets and the value targets bootstrap from 0; the rest is as with them."""
    def add(replay, policy):
        col = lambda x: np.asarray(x)[:, None]  # noqa: E731  [T, N=1]
        term = np.zeros(8, bool)
        term[2] = True
        extra = {"search_policy": np.full((8, 1, A), 1.0 / A, np.float32)} if policy else {}
        replay.add(obs={"time": col(np.arange(8))}, action=col(np.arange(8) % A),
                   reward=col(np.arange(1, 9, dtype=np.float32)), terminated=col(term),
                   truncated=col(np.zeros(8, bool)), truncation_value=col(np.zeros(8)),
                   **extra)

    plain = ReplayBuffer(max_size=100, num_unroll_steps=2, td_steps=3, gamma=0.5,
                         num_actions=A, seed=4)
    add(plain, policy=False)
    assert not plain.keeps_policies and "root_value" in plain.data
    with_policy = ReplayBuffer(max_size=100, num_unroll_steps=2, td_steps=3, gamma=0.5, seed=4)
    add(with_policy, policy=True)
    a, b = plain.sample(32), with_policy.sample(32)
    assert a.policy_target is None and a.behaviour_policy is None
    for field in ("action", "value_target", "value_mask", "reward_target", "policy_mask",
                  "weight", "value_partial", "bootstrap_discount"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    start3 = a.obs["time"] == 3
    np.testing.assert_allclose(a.value_target[start3, 0], 4 + 0.5 * 5 + 0.25 * 6)  # 0 bootstrap
    with pytest.raises(ValueError, match="search_policy must be passed to every add or to none"):
        add(plain, policy=True)
    with pytest.raises(ValueError, match="keeps no search policies"):
        plain.set_search_targets(np.array([0]), np.array([1]), np.zeros((1, A)), np.zeros(1))
    with pytest.raises(ValueError, match="needs num_actions"):
        add(ReplayBuffer(max_size=100, num_unroll_steps=2, td_steps=3, gamma=0.5), policy=False)
    restored = ReplayBuffer(max_size=100, num_unroll_steps=2, td_steps=3, gamma=0.5,
                            num_actions=A)
    restored.load_state_dict(plain.state_dict())
    assert restored.time == 8 and not restored.keeps_policies

"""omega.envs.tasks: registration, check_env, scripted vs random policies, seeding."""

import contextlib
import io
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from nle import nethack

from omega.envs import tasks
from omega.envs.tasks import TASK_IDS, register_tasks, scripted_policy

ABORTED = -1
RUNNING = 0
DEATH = 1
SUCCESS = 2
FAILED = 3

EXPECTED_IDS = (
    ["Omega-RandomRoom-v0", "Omega-RandomRoom-5x5-v0", "Omega-RandomRoom-10x10-v0",
     "Omega-Memory-v0"]
    + [f"Omega-Memory-K{k}-v0" for k in range(4, 12)]
    + ["Omega-CreditAssignment-v0", "Omega-Retreat-v0", "Omega-StochasticTrap-v0",
       "Omega-AvoidFuzzyBear-v0"]
)

UP, DOWN = tasks.ACTION_INDEX[(0, -1)], tasks.ACTION_INDEX[(0, 1)]
EAST, WEST = tasks.ACTION_INDEX[(1, 0)], tasks.ACTION_INDEX[(-1, 0)]


def _make(env_id, **kwargs):
    return gym.make(env_id, render_mode=None, **kwargs)


def _seed(env, i):
    env.unwrapped.seed(1000 + i, 2000 + i, reseed=False)


def _copy(obs):
    # NLE reuses its observation buffers from step to step.
    return {k: np.array(v, copy=True) for k, v in obs.items()}


def run_episode(env, policy, seed, rng=None):
    """One seeded episode.  ``policy`` None -> uniformly random actions from ``rng``."""
    _seed(env, seed)
    obs, info = env.reset()
    if policy is not None:
        policy.reset()
    ep = {"obs": [_copy(obs)], "rewards": [], "actions": []}
    while True:
        if policy is None:
            action = int(rng.integers(env.action_space.n))
        else:
            action = policy(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        ep["obs"].append(_copy(obs))
        ep["rewards"].append(reward)
        ep["actions"].append(action)
        if terminated or truncated:
            ep.update(status=int(info["end_status"]), ret=float(sum(ep["rewards"])),
                      terminated=terminated)
            return ep


def success_rate(env_id, n, scripted, **kwargs):
    env = _make(env_id, **kwargs)
    rng = np.random.default_rng(0)
    eps = [run_episode(env, scripted_policy(env_id) if scripted else None, i, rng)
           for i in range(n)]
    env.close()
    return float(np.mean([ep["status"] == SUCCESS for ep in eps])), eps


# ---------------------------------------------------------------------------
# registration / API
# ---------------------------------------------------------------------------


def test_ids_registered_and_make():
    assert set(EXPECTED_IDS) == set(TASK_IDS)
    for env_id in EXPECTED_IDS:
        assert env_id in gym.registry
        env = _make(env_id)
        obs, info = env.reset()
        assert obs in env.observation_space
        assert env.action_space.n == 8
        assert info["end_status"] == RUNNING
        env.close()


def test_register_tasks_is_idempotent():
    before = {k: gym.registry[k] for k in TASK_IDS}
    assert register_tasks() == TASK_IDS
    assert register_tasks() == TASK_IDS
    assert all(gym.registry[k] is before[k] for k in TASK_IDS)


@pytest.mark.parametrize("env_id", EXPECTED_IDS)
def test_check_env(env_id):
    """The strict check (unwrapped env, with its spec: seeded-reset determinism,
    step determinism, all declared render modes).  The only warning allowed is
    gymnasium's note that NLE keeps a ``seed()`` method."""
    env = gym.make(env_id)
    with warnings.catch_warnings(record=True) as caught, \
            contextlib.redirect_stdout(io.StringIO()):  # "human"/"full" render print
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    env.close()
    unexpected = [str(w.message) for w in caught
                  if "support for the `seed` function is dropped" not in str(w.message)]
    assert not unexpected


@pytest.mark.parametrize("bad_k", [3, 12, 0, 6.0, "6", True, None])
def test_memory_k_validation(bad_k):
    with pytest.raises(ValueError, match="k must"):
        gym.make("Omega-Memory-v0", k=bad_k)


@pytest.mark.parametrize("bad", [1, 21, 5.5])
def test_random_room_size_validation(bad):
    with pytest.raises(ValueError, match="size must"):
        gym.make("Omega-RandomRoom-v0", size=bad)


def test_random_room_size_kwarg():
    for size in (3, 7):
        env = _make("Omega-RandomRoom-v0", size=size)
        obs, _ = env.reset(seed=0)
        chars = obs["chars"]
        floor = np.isin(chars, [ord("."), ord(">"), ord("@"), ord("<")])
        ys, xs = np.nonzero(floor)
        assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (size, size)
        assert env.unwrapped._max_episode_steps == 5 * size
        env.close()


def test_scripted_policy_unknown_id():
    with pytest.raises(KeyError):
        scripted_policy("MiniHack-Room-5x5-v0")


# ---------------------------------------------------------------------------
# scripted vs random
# ---------------------------------------------------------------------------

# env_id, episodes, min scripted success, max random success, min gap.
# Measured on these seeds (scripted / random; random over 50 seeds in brackets):
# RandomRoom-5x5 1.00 / 0.60 (0.52), RandomRoom-10x10 1.00 / 0.20 (0.32),
# Memory-K4 1.00 / 0.30 (0.38), Memory-K8 1.00 / 0.00 (0.06),
# CreditAssignment 1.00 / 0.00 (0.00), Retreat 1.00 / 0.20 (0.12),
# StochasticTrap 1.00 / 0.25 (0.44).  A 5x5 room is small enough for a random
# walk to find the staircase about half of the time within 25 steps.
POLICY_CASES = [
    ("Omega-RandomRoom-5x5-v0", 20, 0.9, 0.75, 0.25),
    ("Omega-RandomRoom-10x10-v0", 20, 0.9, 0.5, 0.4),
    ("Omega-Memory-K4-v0", 20, 0.9, 0.5, 0.4),
    ("Omega-Memory-K8-v0", 10, 0.9, 0.3, 0.4),
    ("Omega-CreditAssignment-v0", 12, 0.9, 0.1, 0.4),
    ("Omega-Retreat-v0", 20, 0.9, 0.45, 0.4),
    ("Omega-StochasticTrap-v0", 20, 0.9, 0.6, 0.3),
]


@pytest.mark.parametrize("env_id,n,min_scripted,max_random,min_gap", POLICY_CASES)
def test_scripted_solves_random_does_not(env_id, n, min_scripted, max_random, min_gap):
    scripted, eps = success_rate(env_id, n, scripted=True)
    random, _ = success_rate(env_id, n, scripted=False)
    assert scripted >= min_scripted, (scripted, [ep["status"] for ep in eps])
    assert random <= max_random, random
    assert scripted - random >= min_gap, (scripted, random)
    for ep in eps:  # successful episodes: terminated with reward exactly +1
        if ep["status"] == SUCCESS:
            assert ep["terminated"] and ep["rewards"][-1] == 1.0 and ep["ret"] == 1.0


# ---------------------------------------------------------------------------
# memory task
# ---------------------------------------------------------------------------


def _niche_monster(obs):
    x, y = tasks._agent_pos(obs)
    return tasks._monster_name(obs["glyphs"][y - 2, x])


def test_memory_needs_the_start_observation():
    env_id, n = "Omega-Memory-K5-v0", 16
    env = _make(env_id)
    with_memory, up, down, kinds = [], [], [], set()
    for i in range(n):
        ep = run_episode(env, scripted_policy(env_id), i)
        with_memory.append(ep["status"] == SUCCESS)
        kinds.add(_niche_monster(ep["obs"][0]))
        for blind, out in ((tasks.MemoryPolicy(use_memory=False, default_up=True), up),
                           (tasks.MemoryPolicy(use_memory=False, default_up=False), down)):
            ep = run_episode(env, blind, i)
            assert ep["status"] in (SUCCESS, FAILED) and ep["terminated"]
            assert ep["ret"] == (1.0 if ep["status"] == SUCCESS else -1.0)
            out.append(ep["status"] == SUCCESS)
    env.close()
    assert kinds == set(tasks.MEMORY_MONSTERS)
    assert all(with_memory)
    # Exactly one of the two blind choices is right in every episode ...
    assert all(u != d for u, d in zip(up, down, strict=True))
    # ... and a policy that ignores the start is at chance level.
    assert 0.25 <= np.mean(up) <= 0.75


@pytest.mark.parametrize("k", [4, 11])
def test_memory_monster_invisible_from_corridor_end(k):
    env = _make(f"Omega-Memory-K{k}-v0")
    ep = run_episode(env, scripted_policy("Omega-Memory-v0"), 3)
    env.close()
    start_x = tasks._agent_pos(ep["obs"][0])[0]
    assert _niche_monster(ep["obs"][0]) in tasks.MEMORY_MONSTERS
    for obs in ep["obs"]:
        pos = tasks._agent_pos(obs)
        if pos[0] - start_x >= 2:  # from the second corridor cell on
            monsters = [p for p in tasks._find_glyph_positions(
                obs["glyphs"], nethack.glyph_is_monster) if p != pos]
            assert not monsters
    assert len(ep["rewards"]) == k + 1  # k steps east, one step up/down


# ---------------------------------------------------------------------------
# credit assignment
# ---------------------------------------------------------------------------


def _credit_episode(env, seed, first):
    """'gold' / 'apple' / 'none' first, then walk east to the staircase."""
    _seed(env, seed)
    obs, _ = env.reset()
    x, y = tasks._agent_pos(obs)
    gold = tasks._find_glyph_positions(obs["glyphs"], lambda g: tasks._object_name(g) == "gold piece")
    assert len(gold) == 1
    gold_up = gold[0][1] < y
    actions = []
    if first != "none":
        go_up = gold_up == (first == "gold")
        actions += [UP, DOWN] if go_up else [DOWN, UP]
    actions += [EAST] * (env.unwrapped.length + 1)
    rewards = []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        rewards.append(r)
        if term or trunc:
            break
    return rewards, int(info["end_status"]), obs


def test_credit_assignment_reward_depends_on_early_choice():
    env = _make("Omega-CreditAssignment-v0")
    for seed in range(2):
        for first, final, status in (("gold", 1.0, SUCCESS), ("apple", -1.0, FAILED),
                                     ("none", 0.0, FAILED)):
            rewards, got_status, obs = _credit_episode(env, seed, first)
            assert got_status == status
            assert rewards[-1] == final and all(r == 0.0 for r in rewards[:-1])
            assert len(rewards) >= env.unwrapped.length + 1  # reward arrives late
            if first == "gold":
                assert obs["blstats"][nethack.NLE_BL_GOLD] > 0
    env.close()


# ---------------------------------------------------------------------------
# retreat / stochastic trap
# ---------------------------------------------------------------------------


def test_retreat_death_is_penalised():
    _, eps = success_rate("Omega-Retreat-v0", 8, scripted=False)
    deaths = [ep for ep in eps if ep["status"] == DEATH]
    assert deaths
    assert all(ep["terminated"] and ep["rewards"][-1] == -1.0 for ep in deaths)


def _trap_outcome(ep):
    """'pit' or 'board' from the messages / the revealed trap glyph."""
    kinds = set()
    for obs in ep["obs"]:
        msg = bytes(obs["message"]).lower()
        if b"pit" in msg:
            kinds.add("pit")
        if b"squeak" in msg:
            kinds.add("board")
        cmaps = {tasks._cmap(g) for g in np.unique(obs["glyphs"])}
        if tasks.S_PIT in cmaps:
            kinds.add("pit")
        if tasks.S_SQUEAKY_BOARD in cmaps:
            kinds.add("board")
    return kinds


def test_stochastic_trap_both_kinds_occur_on_the_path():
    env = _make("Omega-StochasticTrap-v0")
    lengths = {"pit": [], "board": []}
    for i in range(12):
        ep = run_episode(env, scripted_policy("Omega-StochasticTrap-v0"), i)
        assert ep["status"] == SUCCESS
        kinds = _trap_outcome(ep)
        assert len(kinds) == 1, kinds  # the scripted path always crosses the trap
        lengths[kinds.pop()].append(len(ep["rewards"]))
    env.close()
    assert lengths["pit"] and lengths["board"]
    # Same start, same intended moves: the pit holds the hero for a few turns.
    assert min(lengths["pit"]) > max(lengths["board"])


# ---------------------------------------------------------------------------
# AvoidFuzzyBear
# ---------------------------------------------------------------------------


def test_avoid_fuzzy_bear_scripted_takes_the_sure_thing():
    env_id = "Omega-AvoidFuzzyBear-v0"
    env = _make(env_id)
    rng = np.random.default_rng(0)
    scripted = [run_episode(env, scripted_policy(env_id), i) for i in range(12)]
    random = [run_episode(env, None, i, rng) for i in range(40)]
    env.close()
    # The scripted walk reaches the safe corner every time, around the hidden trap: +0.6.
    assert all(ep["ret"] == 0.6 and ep["status"] == SUCCESS and ep["terminated"]
               and len(ep["rewards"]) == 5 for ep in scripted)
    # A random walk ends at the trap (2 steps away) more often than at the corner (5 steps).
    finals = [ep["rewards"][-1] for ep in random if ep["status"] != ABORTED]
    assert finals.count(-0.5) and finals.count(1.0) and finals.count(0.6)
    assert finals.count(-0.5) + finals.count(1.0) > finals.count(0.6)
    assert np.mean([ep["ret"] for ep in random]) < 0.6
    expected_status = {-0.5: FAILED, 1.0: SUCCESS, 0.6: SUCCESS, 0.0: ABORTED}
    assert all(ep["status"] == expected_status[ep["rewards"][-1]] for ep in random)


def test_avoid_fuzzy_bear_gamble_is_worth_a_quarter():
    """The trap is a pit or a board 50/50: over many seeds stepping onto it pays about
    0.5 * -0.5 + 0.5 * 1 = 0.25, less than the corner's 0.6."""
    env = _make("Omega-AvoidFuzzyBear-v0")
    finals = []
    for i in range(60):
        _seed(env, i)
        env.reset()
        env.step(EAST)
        _, r, term, _, _ = env.step(EAST)
        assert term and env.unwrapped.outcome in ("pit", "board")
        finals.append(r)
    env.close()
    assert set(finals) == {-0.5, 1.0}
    assert 0.3 <= finals.count(1.0) / len(finals) <= 0.7
    assert abs(np.mean(finals) - 0.25) < 0.25


# ---------------------------------------------------------------------------
# seeding, time limit, final observation
# ---------------------------------------------------------------------------


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("env_id", ["Omega-RandomRoom-10x10-v0", "Omega-Memory-K6-v0",
                                    "Omega-CreditAssignment-v0", "Omega-StochasticTrap-v0"])
def test_same_seed_same_first_observation(env_id):
    env = _make(env_id)
    firsts = []
    for i in (5, 6, 5):
        _seed(env, i)
        firsts.append(_copy(env.reset()[0]))
        env.step(0)
    assert _same(firsts[0], firsts[2])
    # reset(seed=...) is honoured too (NLE itself ignores it).
    a = _copy(env.reset(seed=42)[0])
    env.step(1)
    b = _copy(env.reset(seed=42)[0])
    assert _same(a, b)
    env.close()


def test_seed_gives_reproducible_trajectories():
    env = _make("Omega-Retreat-v0")
    eps = [run_episode(env, None, 7, np.random.default_rng(1)) for _ in range(2)]
    env.close()
    assert eps[0]["rewards"] == eps[1]["rewards"] and eps[0]["status"] == eps[1]["status"]
    assert all(_same(a, b) for a, b in zip(eps[0]["obs"], eps[1]["obs"], strict=True))


def test_random_room_layouts_vary_with_seed():
    env = _make("Omega-RandomRoom-10x10-v0")
    layouts = set()
    for i in range(6):
        _seed(env, i)
        obs, _ = env.reset()
        stairs = tasks._find_glyph_positions(obs["glyphs"], lambda g: g == tasks._GLYPH_DNSTAIR)
        layouts.add((tasks._agent_pos(obs), tuple(stairs)))
    env.close()
    assert len(layouts) >= 4


def test_time_limit_is_aborted_with_zero_reward():
    env = _make("Omega-Memory-K4-v0")
    _seed(env, 0)
    env.reset()
    limit = env.unwrapped._max_episode_steps
    steps = 0
    while True:
        obs, r, term, trunc, info = env.step(WEST)  # into the closet wall
        steps += 1
        assert r == 0.0
        if term or trunc:
            break
    env.close()
    assert steps == limit and term and info["end_status"] == ABORTED


def test_final_observation_is_the_last_frame():
    """NLE blanks the screen when it quits a finished game; the envs return the
    last real frame instead."""
    env = _make("Omega-RandomRoom-5x5-v0")
    ep = run_episode(env, scripted_policy("Omega-RandomRoom-5x5-v0"), 0)
    env.close()
    last = ep["obs"][-1]
    assert ep["status"] == SUCCESS
    assert tasks._agent_pos(last) != (0, 0)
    assert (last["chars"] == ord(".")).sum() > 10

"""Success means what the task rewards: on tasks that can end with a penalty it is the final
reward > 0, not MiniHack's end status (which says "successful" at any of a level's endings).
Each case plays known episodes through omega's env stack."""

import pytest

from omega.envs import make, success_from_reward
from omega.envs import tasks as T

E, W, N, S = (T.ACTION_INDEX[d] for d in ((1, 0), (-1, 0), (0, -1), (0, 1)))
NE, NW = T.ACTION_INDEX[(1, -1)], T.ACTION_INDEX[(-1, -1)]
TASK_SUCCESSFUL, TASK_FAILED, DEATH = 2, 3, 1


def play(env_id, seed, actions, repeat_last=0):
    """Plays ``actions`` (the last one repeated up to ``repeat_last`` more times) from
    ``reset(seed=seed)``; returns (rewards, info at the end, terminated, truncated)."""
    env = make(env_id, observation_keys=("glyphs", "blstats", "message"))
    env.reset(seed=seed)
    rewards, info, term, trunc = [], {}, False, False
    try:
        for a in list(actions) + [actions[-1]] * repeat_last:
            _, r, term, trunc, info = env.step(a)
            rewards.append(float(r))
            if term or trunc:
                break
    finally:
        env.close()
    return rewards, info, term, trunc


@pytest.mark.parametrize("env_id, expected", [
    ("MiniHack-Memento-Short-F2-v0", True), ("MiniHack-Memento-F4-v0", True),
    ("Omega-AvoidFuzzyBear-v0", True), ("Omega-Retreat-v0", True),
    ("Omega-Memory-K10-v0", True), ("Omega-Memory-v0", True),
    ("MiniHack-Room-5x5-v0", False), ("Omega-StochasticTrap-v0", False),
    ("Omega-CreditAssignment-v0", False), ("NetHackScore-v0", False),
])
def test_which_tasks_count_success_from_the_reward(env_id, expected):
    assert success_from_reward(env_id) is expected


def test_memento_squeak_is_no_success():
    """East along the start corridor, north up the junction's corridor, east to its end:
    where that corridor holds the squeaky board MiniHack ends the episode with -1 and end
    status TASK_SUCCESSFUL; where it holds the grid bug, attacking it kills it for +1."""
    outcomes = set()
    for seed in range(8):
        rewards, info, term, _ = play("MiniHack-Memento-Short-F2-v0", seed,
                                      [E] * 7 + [N] * 3 + [E], repeat_last=30)
        assert term, (seed, rewards)
        assert info["end_status"] == TASK_SUCCESSFUL  # either way, by MiniHack's account
        if rewards[-1] < 0:
            assert rewards[-1] == pytest.approx(-1.0) and info["success"] is False
            outcomes.add("squeak")
        else:
            assert rewards[-1] == pytest.approx(1.0) and info["success"] is True
            outcomes.add("kill")
    assert outcomes == {"squeak", "kill"}


def test_avoid_fuzzy_bear_endings():
    outcomes = {}
    for seed in range(10):
        rewards, info, term, _ = play("Omega-AvoidFuzzyBear-v0", seed, [E, E])  # onto the trap
        assert term and rewards[0] == 0.0
        outcomes.setdefault(rewards[-1], []).append(info["success"])
        rewards, info, term, _ = play("Omega-AvoidFuzzyBear-v0", seed, [NW] + [W] * 4)  # corner
        assert term and rewards == [0.0] * 4 + [0.6] and info["success"] is True
    assert set(outcomes) == {-0.5, 1.0}  # the pit and the board both happen
    assert not any(outcomes[-0.5]) and all(outcomes[1.0])


def test_retreat_death_and_escape():
    rewards, info, term, _ = play("Omega-Retreat-v0", 0, [E], repeat_last=4)
    assert term and rewards[-1] == 1.0 and info["success"] is True
    deaths = 0
    for seed in range(12):  # stay and fight: the killer bee often wins
        rewards, info, term, trunc = play("Omega-Retreat-v0", seed, [W], repeat_last=120)
        if term and info["end_status"] == DEATH:
            deaths += 1
            assert rewards[-1] == -1.0 and info["success"] is False
        elif term:
            assert rewards[-1] > 0 and info["success"] is True
        else:
            assert trunc and info["success"] is False
    assert deaths


def test_memory_wrong_exit_and_time_limit():
    k = 10
    right = wrong = 0
    for seed in range(6):
        rewards, info, term, _ = play("Omega-Memory-K10-v0", seed, [E] * k + [N])
        assert term and len(rewards) == k + 1
        if rewards[-1] > 0:
            assert rewards[-1] == 1.0 and info["success"] is True
            assert info["end_status"] == TASK_SUCCESSFUL
            right += 1
        else:
            assert rewards[-1] == -1.0 and info["success"] is False
            assert info["end_status"] == TASK_FAILED
            wrong += 1
    assert right and wrong
    rewards, info, term, trunc = play("Omega-Memory-K10-v0", 0, [W], repeat_last=200)
    assert trunc and not term and info["success"] is False


def test_end_status_tasks_keep_it():
    # StochasticTrap: east from the start crosses the trap to the staircase (+1, successful).
    rewards, info, term, _ = play("Omega-StochasticTrap-v0", 0, [E], repeat_last=30)
    assert term and rewards[-1] == 1.0
    assert info["end_status"] == TASK_SUCCESSFUL and info["success"] is True
    rewards, info, term, trunc = play("Omega-StochasticTrap-v0", 0, [W], repeat_last=60)
    assert trunc and not term and info["success"] is False

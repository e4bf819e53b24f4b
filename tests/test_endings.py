"""How an evaluation episode ends: solved, died, cut off by a time limit, or ended otherwise."""

import enum

from omega.config import config_from_dict
from omega.envs import EnvFactory
from omega.training.evaluate import ENDINGS, episode_ending


class StepStatus(enum.IntEnum):  # NLE's, as its info carries it
    ABORTED = -1
    RUNNING = 0
    DEATH = 1
    TASK_SUCCESSFUL = 2


def test_episode_ending_on_known_infos():
    assert episode_ending(True, {"success": True, "end_status": StepStatus.TASK_SUCCESSFUL}) == "solved"
    assert episode_ending(True, {"success": False, "end_status": StepStatus.DEATH}) == "died"
    assert episode_ending(False, {"success": False, "end_status": StepStatus.ABORTED}) == "time_limit"
    # A task that ends on a penalty (a wrong exit) is neither a death nor a time-out.
    assert episode_ending(True, {"success": False, "end_status": StepStatus.TASK_SUCCESSFUL}) == "ended"
    assert episode_ending(True, {}) == "ended"
    assert set(ENDINGS) == {"solved", "died", "time_limit", "ended"}


def test_a_real_death_and_a_real_time_limit():
    """The info NLE really gives: a hero cycling through the moves on Room-Ultimate-15x15
    (monsters, traps, a 300-step limit) dies in some episodes and runs out of time in
    others."""
    cfg = config_from_dict({"agent_type": "random", "env": {"id": "MiniHack-Room-Ultimate-15x15-v0"}})
    env = EnvFactory.from_config(cfg.env)(0)
    endings = []
    try:
        for seed in range(100, 106):
            env.reset(seed=seed)
            for t in range(2000):
                _, _, terminated, truncated, info = env.step(t % env.action_space.n)
                if terminated or truncated:
                    endings.append(episode_ending(bool(terminated), info))
                    break
    finally:
        env.close()
    assert "died" in endings and "time_limit" in endings, endings

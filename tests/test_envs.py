"""omega.envs.make: observation spec, seeding, truncation, registry, check_env."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from nle import nethack

from omega.envs import make, registered_env_ids
from omega.envs.wrappers import (
    GLYPH_SALIENCE,
    PAD_GLYPH,
    ObservationSpec,
    RewardShaping,
    coarse_glyphs,
    crop_around,
)

ALL_KEYS = ("glyphs", "glyphs_crop", "glyphs_coarse", "visited_crop", "blstats", "message")


def test_registry_has_nle_minihack_and_omega_ids():
    ids = registered_env_ids()
    for env_id in ("NetHackScore-v0", "NetHackChallenge-v0", "MiniHack-Room-5x5-v0",
                   "MiniHack-River-Narrow-v0", "Omega-RandomRoom-v0", "Omega-Memory-K6-v0",
                   "Omega-CreditAssignment-v0", "Omega-Retreat-v0", "Omega-StochasticTrap-v0"):
        assert env_id in ids


@pytest.mark.parametrize("env_id", ["MiniHack-Room-5x5-v0", "NetHackScore-v0"])
def test_observation_spec(env_id):
    env = make(env_id, observation_keys=ALL_KEYS, crop_size=7)
    obs, _ = env.reset(seed=0)
    assert set(obs) == set(ALL_KEYS)
    assert obs["glyphs"].shape == (21, 79) and obs["glyphs"].dtype == np.int16
    assert obs["glyphs_crop"].shape == (7, 7) and obs["glyphs_crop"].dtype == np.int16
    assert obs["blstats"].shape == (nethack.NLE_BLSTATS_SIZE,) and obs["blstats"].dtype == np.float32
    assert np.all(np.abs(obs["blstats"]) <= 5)
    assert obs["message"].shape == (256,) and obs["message"].dtype == np.uint8
    # Only the start cell is visited after a reset.
    assert obs["visited_crop"].dtype == np.uint8 and obs["visited_crop"].sum() == 1
    assert obs["visited_crop"][3, 3] == 1
    assert env.observation_space.contains(obs)
    # The crop is centred on the agent: the centre glyph is the player's.
    assert nethack.glyph_is_monster(int(obs["glyphs_crop"][3, 3]))
    # So is the coarse view's centre block (nothing there is more salient than the hero).
    assert obs["glyphs_coarse"].shape == (7, 7) and obs["glyphs_coarse"].dtype == np.int16
    assert nethack.glyph_is_monster(int(obs["glyphs_coarse"][3, 3]))
    env.close()


def test_coarse_glyphs_keep_each_blocks_most_salient_glyph():
    cmap = nethack.GLYPH_CMAP_OFF
    floor, wall, stairs_down = cmap + 19, cmap + 1, cmap + 24
    monster, item = nethack.GLYPH_MON_OFF + 5, nethack.GLYPH_OBJ_OFF + 3
    assert list(GLYPH_SALIENCE[[PAD_GLYPH, cmap + 0, floor, wall, stairs_down, item, monster]]) \
        == [0, 0, 1, 2, 3, 4, 5]
    grid = np.full((6, 6), floor, np.int16)
    grid[0, 2] = wall  # block (0, 0): a wall among floor
    grid[1, 4], grid[2, 5] = stairs_down, monster  # block (0, 1): the monster wins
    grid[3:, :3] = PAD_GLYPH  # block (1, 0): outside the map
    grid[5, 5] = item  # block (1, 1)
    np.testing.assert_array_equal(coarse_glyphs(grid, 3),
                                  [[wall, monster], [PAD_GLYPH, item]])
    # Among equals the first in row order: an all-floor block stays floor.
    assert coarse_glyphs(np.full((3, 3), floor, np.int16), 3)[0, 0] == floor


def test_coarse_view_sees_three_times_further_than_the_crop():
    # Stairs out of a 5x5 crop's view but within 7 cells show in the 5x5 coarse view (which
    # covers 15x15 cells) at the block they lie in.
    env = make("MiniHack-Room-Random-15x15-v0", observation_keys=["glyphs", "glyphs_crop",
                                                           "glyphs_coarse", "blstats"],
               crop_size=5)
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        stairs = np.argwhere(obs["glyphs"] == nethack.GLYPH_CMAP_OFF + 24)
        blstats = env.unwrapped.last_observation[env.unwrapped._blstats_index]
        x, y = int(blstats[nethack.NLE_BL_X]), int(blstats[nethack.NLE_BL_Y])
        (sy, sx), = stairs
        dy, dx = sy - y, sx - x
        if max(abs(dy), abs(dx)) > 2 and max(abs(dy), abs(dx)) <= 7:
            break
    else:
        pytest.fail("no episode start with the stairs 3-7 cells away")
    assert not (obs["glyphs_crop"] == nethack.GLYPH_CMAP_OFF + 24).any()
    by, bx = (dy + 7) // 3, (dx + 7) // 3  # the block of the 15x15 window holding the stairs
    assert obs["glyphs_coarse"][by, bx] == nethack.GLYPH_CMAP_OFF + 24
    env.close()


def test_crop_pads_outside_the_map():
    glyphs = np.arange(21 * 79, dtype=np.int16).reshape(21, 79)
    crop = crop_around(glyphs, x=0, y=0, height=5, width=5)
    assert crop[2, 2] == glyphs[0, 0]
    assert (crop[:2] == PAD_GLYPH).all() and (crop[:, :2] == PAD_GLYPH).all()
    assert crop[4, 4] == glyphs[2, 2]


@pytest.mark.parametrize("env_id", ["MiniHack-Room-Random-5x5-v0", "NetHackScore-v0"])
def test_same_seed_same_first_observation(env_id):
    env = make(env_id, observation_keys=("glyphs", "blstats"))
    first = [env.reset(seed=s)[0] for s in (7, 7, 8)]
    assert np.array_equal(first[0]["glyphs"], first[1]["glyphs"])
    assert np.array_equal(first[0]["blstats"], first[1]["blstats"])
    if env_id.startswith("MiniHack"):
        assert not np.array_equal(first[0]["glyphs"], first[2]["glyphs"])
    # A seed fixes the whole sequence of episodes, not just the first.
    seq_a = [env.reset(seed=11)[0]["glyphs"]] + [env.reset()[0]["glyphs"] for _ in range(2)]
    seq_b = [env.reset(seed=11)[0]["glyphs"]] + [env.reset()[0]["glyphs"] for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(seq_a, seq_b, strict=True))
    env.close()


def test_fix_moon_phase_option_takes_the_moon_from_the_seed():
    # env.options reach NLE, and its fix_moon_phase needs the seeds set through seed(), which
    # NetHackSeeding does: these seeds give these moons on any date.
    env = make("NetHackScore-v0", observation_keys=("message", "blstats"), fix_moon_phase=True)

    def first_message(seed: int) -> str:
        message = env.reset(seed=seed)[0]["message"]
        return bytes(message[message != 0].astype(np.uint8)).decode()

    assert "Full moon tonight" in first_message(3)
    assert "New moon tonight" in first_message(9)
    assert "moon" not in first_message(5)
    assert "Full moon tonight" in first_message(3)
    env.close()


def test_time_limit_is_truncation_not_termination():
    env = make("MiniHack-Room-15x15-v0", observation_keys=("glyphs_crop",))
    env.unwrapped._max_episode_steps = 4  # NLE's own limit: it reports terminated + ABORTED
    env.reset(seed=0)
    for t in range(4):
        _, _, terminated, truncated, info = env.step(7 if t % 2 else 3)  # NW then W: far from goal
    assert truncated and not terminated and not info["success"]
    env.close()


def test_extra_time_limit_and_shaping():
    def rollout(**kwargs):
        env = make("MiniHack-Room-15x15-v0", max_episode_steps=3, **kwargs)
        env.reset(seed=0)
        steps = [env.step(3) for _ in range(3)]
        env.close()
        return [s[1] for s in steps], steps[-1][3]

    plain, truncated = rollout()
    shaped, _ = rollout(step_penalty=0.01)
    assert truncated
    assert shaped == pytest.approx([r - 0.01 for r in plain])


def test_success_bonus_and_success_flag():
    env = make("MiniHack-Room-5x5-v0", success_bonus=1.0)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(2000):
        _, r, terminated, truncated, info = env.step(int(rng.integers(8)))
        if terminated or truncated:
            if info["success"]:
                assert r == pytest.approx(2.0)
                return
            env.reset()
    pytest.fail("random policy never reached the goal")


class _ScriptedExperience(gym.Env):
    """Raw NLE-like observations whose experience points and hero cell follow a script."""

    observation_space = gym.spaces.Dict({"blstats": gym.spaces.Box(
        -np.inf, np.inf, (nethack.NLE_BLSTATS_SIZE,), np.int64)})
    action_space = gym.spaces.Discrete(1)

    def __init__(self, experience, cells=None):
        self.experience, self.t = list(experience), 0
        self.cells = list(cells) if cells is not None else [(0, 1, 5, 5)] * len(self.experience)

    def _obs(self):
        blstats = np.zeros(nethack.NLE_BLSTATS_SIZE, np.int64)
        blstats[nethack.NLE_BL_EXP] = self.experience[self.t]
        dnum, dlevel, x, y = self.cells[self.t]
        blstats[nethack.NLE_BL_DNUM], blstats[nethack.NLE_BL_DLEVEL] = dnum, dlevel
        blstats[nethack.NLE_BL_X], blstats[nethack.NLE_BL_Y] = x, y
        return {"blstats": blstats}

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 0.5, self.t == len(self.experience) - 1, False, {"success": False}


def test_experience_bonus_pays_per_point_gained_and_never_charges():
    # Starts at 4 points (not paid), gains 2 and 7, loses 3 (a level drain: not charged),
    # regains 1 (paid: the bonus follows the points, not their highest value).
    env = RewardShaping(_ScriptedExperience([4, 6, 6, 13, 10, 11]), step_penalty=0.01,
                        experience_bonus=0.05)
    env.reset()
    rewards = [env.step(0)[1] for _ in range(5)]
    assert rewards == pytest.approx([0.5 - 0.01 + 0.05 * d for d in (2, 0, 7, 0, 1)])
    env.reset()  # the count restarts from the new episode's points
    assert env.step(0)[1] == pytest.approx(0.5 - 0.01 + 0.05 * 2)


def test_new_cell_bonus_pays_each_cell_once_per_episode():
    # Start (5,5) is visited; (6,5) new, back to (5,5) not, (6,5) not, (6,5) one level down
    # new (another level's cell), (7,5) new.
    cells = [(0, 1, 5, 5), (0, 1, 6, 5), (0, 1, 5, 5), (0, 1, 6, 5), (0, 2, 6, 5), (0, 2, 7, 5)]
    env = RewardShaping(_ScriptedExperience([0] * 6, cells), new_cell_bonus=0.01)
    env.reset()
    assert [env.step(0)[1] for _ in range(5)] == pytest.approx(
        [0.5 + 0.01 * new for new in (1, 0, 0, 1, 1)])
    env.reset()  # a new episode forgets the visits
    assert env.step(0)[1] == pytest.approx(0.51)


def test_visited_crop_marks_the_cells_of_this_episode_and_level():
    # (5,5) start; (6,5); back to (5,5); (6,5) one level down (that level's first visit);
    # (7,5) on that level.
    cells = [(0, 1, 5, 5), (0, 1, 6, 5), (0, 1, 5, 5), (0, 2, 6, 5), (0, 2, 7, 5), (0, 2, 7, 5)]
    env = ObservationSpec(_ScriptedExperience([0] * 6, cells), ["visited_crop"], crop_size=3)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs["visited_crop"], [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    obs = env.step(0)[0]  # at (6,5): the start is to the west
    np.testing.assert_array_equal(obs["visited_crop"], [[0, 0, 0], [1, 1, 0], [0, 0, 0]])
    obs = env.step(0)[0]  # back at (5,5): (6,5) is to the east
    np.testing.assert_array_equal(obs["visited_crop"], [[0, 0, 0], [0, 1, 1], [0, 0, 0]])
    obs = env.step(0)[0]  # level 2: nothing of level 1 shows
    np.testing.assert_array_equal(obs["visited_crop"], [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    obs = env.step(0)[0]
    np.testing.assert_array_equal(obs["visited_crop"], [[0, 0, 0], [1, 1, 0], [0, 0, 0]])
    obs, _ = env.reset()  # a new episode starts with an empty map
    assert obs["visited_crop"].sum() == 1


def test_visited_crop_follows_the_hero_in_nethack():
    env = make("MiniHack-Room-15x15-v0", observation_keys=["glyphs_crop", "visited_crop",
                                                           "blstats"], crop_size=5)
    rng = np.random.default_rng(0)

    def hero():
        blstats = env.unwrapped.last_observation[env.unwrapped._blstats_index]
        return int(blstats[nethack.NLE_BL_X]), int(blstats[nethack.NLE_BL_Y])

    env.reset(seed=0)
    visited = {hero()}
    for _ in range(60):
        obs, _, term, trunc, _ = env.step(int(rng.integers(8)))  # the 8 compass moves
        x, y = hero()
        visited.add((x, y))
        want = np.array([[int((x + dx, y + dy) in visited) for dx in range(-2, 3)]
                         for dy in range(-2, 3)], np.uint8)
        np.testing.assert_array_equal(obs["visited_crop"], want)
        if term or trunc:
            break
    assert len(visited) > 3
    env.close()


def test_experience_bonus_pays_for_kills_in_nethack():
    # A random knight among six giant rats (level 1: 1 + 1^2 = 2 experience points each).
    env = make("MiniHack-CorridorBattle-v0", observation_keys=["glyphs_crop"],
               experience_bonus=0.05)
    plain = make("MiniHack-CorridorBattle-v0", observation_keys=["glyphs_crop"])
    rng = np.random.default_rng(4)
    bonuses = []
    for episode in range(8):
        env.reset(seed=episode)
        plain.reset(seed=episode)
        for _ in range(400):
            a = int(rng.integers(env.action_space.n))
            (_, r, term, trunc, _), (_, r0, _, _, _) = env.step(a), plain.step(a)
            if r != pytest.approx(r0):
                bonuses.append(r - r0)
            if term or trunc:
                break
    env.close()
    plain.close()
    assert bonuses, "no kill in 8 random episodes"
    assert bonuses == pytest.approx([0.05 * 2] * len(bonuses))


def test_unknown_env_id():
    with pytest.raises(ValueError, match="unknown environment"):
        make("MiniHack-Nope-v0")


@pytest.mark.parametrize("env_id", ["MiniHack-Room-5x5-v0", "MiniHack-River-Narrow-v0",
                                    "MiniHack-KeyRoom-S5-v0", "NetHackScore-v0"])
def test_check_env_nle_and_minihack(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = make(env_id, observation_keys=ALL_KEYS)
        check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", [i for i in registered_env_ids() if i.startswith("Omega-")])
def test_check_env_omega_tasks(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = make(env_id, observation_keys=ALL_KEYS)
        check_env(env, skip_render_check=True)
    env.close()


def test_challenge_env_runs_unseeded():
    # NetHackChallenge forbids seed changes by design: it runs, and says it is not seedable.
    env = make("NetHackChallenge-v0", observation_keys=ALL_KEYS)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.step(0)
    assert env.get_wrapper_attr("seedable") is False
    env.close()

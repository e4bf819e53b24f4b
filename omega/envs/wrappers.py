"""Gymnasium wrappers that turn a raw NLE/MiniHack env into what omega's agents see.

- :class:`NetHackSeeding`: makes ``reset(seed=...)`` work (NLE silently ignores it).
- :class:`TimeLimitIsTruncation`: NLE ends a time-limited episode with ``terminated=True``
  and ``end_status == ABORTED``; that is a truncation, and agents must bootstrap from it.
- :class:`ObservationSpec`: the configured observation dict (glyphs, glyphs_crop, blstats,
  message) with documented dtypes and shapes.
- :class:`RewardShaping`: optional step penalty and success bonus.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from nle import nethack

logger = logging.getLogger("omega.envs")

ABORTED = -1  # nle StepStatus.ABORTED: the env's own step limit was reached
TASK_SUCCESSFUL = 2  # minihack StepStatus.TASK_SUCCESSFUL
PAD_GLYPH = nethack.MAX_GLYPH  # fills glyphs_crop outside the map
MAP_ROWS, MAP_COLS = nethack.DUNGEON_SHAPE


_UNSEEDABLE_REPORTED: set[str] = set()


def _end_status(info: dict[str, Any]) -> int:
    status = info.get("end_status")
    return int(status) if status is not None else 0


class NetHackSeeding(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """``reset(seed=s)`` reseeds the game; later ``reset()`` calls continue from ``s``.

    NLE takes its seeds through ``seed(core, disp, reseed=False)`` and only for the next
    game, so every reset draws a fresh (core, disp) pair from this wrapper's generator.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self._rng: np.random.Generator | None = None
        self.seedable = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None or self._rng is None:
            self._rng = np.random.default_rng(seed)
        core, disp = (int(s) for s in self._rng.integers(0, 2**63 - 1, size=2))
        if self.seedable:
            try:
                self.env.unwrapped.seed(core, disp, reseed=False)
            except RuntimeError as e:  # NetHackChallenge forbids seeding by design
                self.seedable = False
                name = self.env.spec.id if self.env.spec else str(self.env)
                if name not in _UNSEEDABLE_REPORTED:  # once per process, not once per env
                    _UNSEEDABLE_REPORTED.add(name)
                    logger.warning("%s cannot be seeded (%s); its episodes are not "
                                   "reproducible", name, e)
        # The seed still goes down so gymnasium's own np_random is seeded too. Gymnasium's
        # reset options are not NLE's game options (NLE would fail on them), so they stop here.
        del options
        return self.env.reset(seed=seed)


class TimeLimitIsTruncation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Reports NLE's step limit as ``truncated`` and adds ``info['success']``.

    Success is MiniHack's end status ``TASK_SUCCESSFUL`` by default. With
    ``success_from_reward`` it is an episode that ends (not by a time limit) with a final
    reward > 0, the env's own reward before any shaping: for tasks whose endings include
    penalties that MiniHack still reports as successful (Memento's squeaky board).
    """

    def __init__(self, env: gym.Env, success_from_reward: bool = False):
        gym.utils.RecordConstructorArgs.__init__(self, success_from_reward=success_from_reward)
        gym.Wrapper.__init__(self, env)
        self.success_from_reward = bool(success_from_reward)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        status = _end_status(info)
        if terminated and status == ABORTED:
            terminated, truncated = False, True
        if self.success_from_reward:
            info["success"] = bool(terminated) and float(reward) > 0
        else:
            info["success"] = status == TASK_SUCCESSFUL
        return obs, reward, terminated, truncated, info


class RewardShaping(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Adds shaping terms to the env's reward (``success`` in ``info`` is left as it is).

    ``experience_bonus`` pays that much per NetHack experience point the hero gains (blstats'
    ``NLE_BL_EXP``): at experience level 1 the points come from killing monsters, so it is a
    kill bonus that grows with the monster's level, read from the game rather than from its
    messages. ``new_cell_bonus`` pays that much the first time in an episode the hero stands on
    a map cell (an episodic visit count's bonus, kept to the first visit): it pays for
    exploring, which a sparse goal out of sight needs. Both read ``blstats`` from the raw
    observation.
    """

    def __init__(self, env: gym.Env, step_penalty: float = 0.0, success_bonus: float = 0.0,
                 experience_bonus: float = 0.0, new_cell_bonus: float = 0.0):
        gym.utils.RecordConstructorArgs.__init__(
            self, step_penalty=step_penalty, success_bonus=success_bonus,
            experience_bonus=experience_bonus, new_cell_bonus=new_cell_bonus)
        gym.Wrapper.__init__(self, env)
        self.step_penalty = float(step_penalty)
        self.success_bonus = float(success_bonus)
        self.experience_bonus = float(experience_bonus)
        self.new_cell_bonus = float(new_cell_bonus)
        self._experience = 0
        self._visited: set[tuple[int, int, int, int]] = set()

    def _read_experience(self, obs) -> int:
        return int(obs["blstats"][nethack.NLE_BL_EXP])

    @staticmethod
    def _cell(obs) -> tuple[int, int, int, int]:
        b = obs["blstats"]
        return (int(b[nethack.NLE_BL_DNUM]), int(b[nethack.NLE_BL_DLEVEL]),
                int(b[nethack.NLE_BL_X]), int(b[nethack.NLE_BL_Y]))

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if self.experience_bonus:
            self._experience = self._read_experience(obs)
        if self.new_cell_bonus:
            self._visited = {self._cell(obs)}
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        reward = float(reward) - self.step_penalty
        if info.get("success"):
            reward += self.success_bonus
        if self.experience_bonus:
            experience = self._read_experience(obs)
            # Points lost (level drain) are not charged: the bonus only pays for progress.
            reward += self.experience_bonus * max(0, experience - self._experience)
            self._experience = experience
        if self.new_cell_bonus:
            cell = self._cell(obs)
            if cell not in self._visited:
                self._visited.add(cell)
                reward += self.new_cell_bonus
        return obs, reward, terminated, truncated, info


def crop_around(glyphs: np.ndarray, x: int, y: int, height: int, width: int,
                pad: int = PAD_GLYPH) -> np.ndarray:
    """The [height, width] window of ``glyphs`` centred on column x, row y, padded with pad."""
    padded = np.full((MAP_ROWS + height, MAP_COLS + width), pad, dtype=glyphs.dtype)
    top, left = height // 2, width // 2
    padded[top:top + MAP_ROWS, left:left + MAP_COLS] = glyphs
    return padded[y:y + height, x:x + width].copy()


COARSE_BLOCK = 3  # glyphs_coarse shows one glyph per COARSE_BLOCK x COARSE_BLOCK cells


def _glyph_salience() -> np.ndarray:
    """Glyph id (PAD_GLYPH included) -> how much it says about where to go, 0-5, for the
    coarse view's choice of one glyph per block: what moves (monsters, pets, zaps,
    explosions, warnings) > what can be picked up (objects, corpses, statues) > dungeon
    features (doors, stairs, fountains, traps, water...) > walls, trees and bars > floor,
    corridors and clouds > dark and blank cells."""
    n = nethack
    salience = np.zeros(PAD_GLYPH + 1, np.int8)
    salience[n.GLYPH_MON_OFF:n.GLYPH_OBJ_OFF] = 5  # monsters, pets, invisible, detected, ridden
    salience[n.GLYPH_BODY_OFF:n.GLYPH_RIDDEN_OFF] = 4  # corpses
    salience[n.GLYPH_OBJ_OFF:n.GLYPH_CMAP_OFF] = 4
    salience[n.GLYPH_EXPLODE_OFF:n.GLYPH_STATUE_OFF] = 5  # explosions, zaps, swallow, warning
    salience[n.GLYPH_STATUE_OFF:n.MAX_GLYPH] = 4
    for i in range(n.GLYPH_EXPLODE_OFF - n.GLYPH_CMAP_OFF):
        what = n.symdef.from_idx(i).explanation
        if what in ("stone", "dark part of a room"):
            level = 0
        elif what in ("floor of a room", "corridor", "lit corridor", "ice", "air", "cloud"):
            level = 1
        elif what in ("wall", "tree", "iron bars"):
            level = 2
        else:
            level = 3
        salience[n.GLYPH_CMAP_OFF + i] = level
    return salience


GLYPH_SALIENCE = _glyph_salience()


def coarse_glyphs(glyphs: np.ndarray, block: int = COARSE_BLOCK) -> np.ndarray:
    """[N*block, N*block] glyphs -> [N, N]: each block x block block's most salient glyph
    (:data:`GLYPH_SALIENCE`; the first in row order among equals)."""
    n = glyphs.shape[0] // block
    blocks = glyphs.reshape(n, block, n, block).transpose(0, 2, 1, 3).reshape(n, n, -1)
    best = np.argmax(GLYPH_SALIENCE[blocks], axis=-1)
    return np.take_along_axis(blocks, best[..., None], -1)[..., 0]


def _blstats_scale() -> tuple[np.ndarray, np.ndarray]:
    """Per-entry divisor, and which entries are unbounded counters (log-scaled)."""
    size = nethack.NLE_BLSTATS_SIZE
    scale = np.ones(size, np.float32)
    log_scaled = np.zeros(size, bool)
    bounded = {
        "NLE_BL_X": MAP_COLS, "NLE_BL_Y": MAP_ROWS, "NLE_BL_STR25": 25, "NLE_BL_STR125": 125,
        "NLE_BL_DEX": 25, "NLE_BL_CON": 25, "NLE_BL_INT": 25, "NLE_BL_WIS": 25, "NLE_BL_CHA": 25,
        "NLE_BL_DEPTH": 50, "NLE_BL_AC": 20, "NLE_BL_HUNGER": 6, "NLE_BL_XP": 30,
        "NLE_BL_DNUM": 10, "NLE_BL_DLEVEL": 50, "NLE_BL_CAP": 5, "NLE_BL_ALIGN": 1,
        "NLE_BL_HD": 30,
    }
    counters = ("NLE_BL_SCORE", "NLE_BL_GOLD", "NLE_BL_EXP", "NLE_BL_TIME", "NLE_BL_HP",
                "NLE_BL_HPMAX", "NLE_BL_ENE", "NLE_BL_ENEMAX", "NLE_BL_CONDITION")
    for name, value in bounded.items():
        if hasattr(nethack, name):
            scale[getattr(nethack, name)] = value
    for name in counters:
        if hasattr(nethack, name):
            log_scaled[getattr(nethack, name)] = True
            scale[getattr(nethack, name)] = 10.0
    return scale, log_scaled


_BL_SCALE, _BL_LOG = _blstats_scale()


def normalize_blstats(blstats: np.ndarray) -> np.ndarray:
    """Raw integer blstats -> float32 of order 1 (log scale for unbounded counters)."""
    x = blstats.astype(np.float32)
    x = np.where(_BL_LOG, np.sign(x) * np.log1p(np.abs(x)), x)
    return np.clip(x / _BL_SCALE, -5.0, 5.0).astype(np.float32)


def raw_keys_for(keys: Sequence[str]) -> tuple[str, ...]:
    """NLE observation keys needed to build the given omega observation keys."""
    raw = set()
    for key in keys:
        if key in ("glyphs", "glyphs_crop", "glyphs_coarse"):
            raw.add("glyphs")
        if key in ("glyphs_crop", "glyphs_coarse", "visited_crop", "blstats"):
            raw.add("blstats")
        if key == "message":
            raw.add("message")
    return tuple(sorted(raw))


class ObservationSpec(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Builds omega's observation dict.

    ============  ========  ==============  =============================================
    key           dtype     shape           content
    ============  ========  ==============  =============================================
    glyphs        int16     [21, 79]        glyph ids of the full map
    glyphs_crop   int16     [H, W]          window centred on the agent, PAD_GLYPH outside
    glyphs_coarse int16     [H, W]          the 3H x 3W window centred on the agent, each
                                            3x3 block as its most salient glyph
                                            (:func:`coarse_glyphs`): 3x further, as coarse
    visited_crop  uint8     [H, W]          the same window: 1 where the hero has stood this
                                            episode on this level, 0 elsewhere and outside
    blstats       float32   [27]            bottom-line stats, normalised to order 1
    message       uint8     [256]           the top-line message bytes
    ============  ========  ==============  =============================================

    ``visited_crop`` is a map of where the hero has been, kept by this wrapper from blstats: a
    memory of the episode in the observation, for a stateless encoder that must search for a
    goal out of view (it cannot otherwise tell an explored part of a room from a new one).
    """

    def __init__(self, env: gym.Env, keys: Sequence[str], crop_size: int = 9):
        gym.utils.RecordConstructorArgs.__init__(self, keys=tuple(keys), crop_size=crop_size)
        gym.ObservationWrapper.__init__(self, env)
        self.keys = tuple(keys)
        self.crop_size = int(crop_size)
        n_bl = nethack.NLE_BLSTATS_SIZE
        spaces = {
            "glyphs": gym.spaces.Box(0, PAD_GLYPH, (MAP_ROWS, MAP_COLS), np.int16),
            "glyphs_crop": gym.spaces.Box(0, PAD_GLYPH, (self.crop_size,) * 2, np.int16),
            "glyphs_coarse": gym.spaces.Box(0, PAD_GLYPH, (self.crop_size,) * 2, np.int16),
            "visited_crop": gym.spaces.Box(0, 1, (self.crop_size,) * 2, np.uint8),
            "blstats": gym.spaces.Box(-5.0, 5.0, (n_bl,), np.float32),
            "message": gym.spaces.Box(0, 255, (nethack.MESSAGE_SHAPE[0],), np.uint8),
        }
        self.observation_space = gym.spaces.Dict({k: spaces[k] for k in self.keys})
        # (dungeon number, level) -> [rows, cols] visit flags; cleared on reset.
        self._visited: dict[tuple[int, int], np.ndarray] = {}

    def reset(self, **kwargs):
        self._visited = {}
        return super().reset(**kwargs)

    def _visited_crop(self, blstats: np.ndarray) -> np.ndarray:
        level = (int(blstats[nethack.NLE_BL_DNUM]), int(blstats[nethack.NLE_BL_DLEVEL]))
        grid = self._visited.get(level)
        if grid is None:
            grid = self._visited[level] = np.zeros((MAP_ROWS, MAP_COLS), np.uint8)
        x, y = int(blstats[nethack.NLE_BL_X]), int(blstats[nethack.NLE_BL_Y])
        grid[y, x] = 1
        return crop_around(grid, x, y, self.crop_size, self.crop_size, pad=0)

    @staticmethod
    def _window(observation: dict[str, np.ndarray], size: int) -> np.ndarray:
        """The [size, size] int16 glyphs centred on the hero (a new array)."""
        bl = observation["blstats"]
        return crop_around(observation["glyphs"].astype(np.int16, copy=False),
                           int(bl[nethack.NLE_BL_X]), int(bl[nethack.NLE_BL_Y]), size, size)

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for key in self.keys:
            if key == "glyphs":
                out[key] = observation["glyphs"].astype(np.int16, copy=True)
            elif key == "glyphs_crop":
                out[key] = self._window(observation, self.crop_size)
            elif key == "glyphs_coarse":
                out[key] = coarse_glyphs(self._window(observation,
                                                      COARSE_BLOCK * self.crop_size))
            elif key == "visited_crop":
                out[key] = self._visited_crop(observation["blstats"])
            elif key == "blstats":
                out[key] = normalize_blstats(observation["blstats"])
            elif key == "message":
                out[key] = observation["message"].astype(np.uint8, copy=True)
        return out

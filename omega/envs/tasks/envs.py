"""The task env classes: ``OmegaTaskEnv`` (seeding, rewards, termination, final
observation) and one subclass per task."""

from __future__ import annotations

import enum

import numpy as np
from gymnasium.utils import seeding
from minihack import MiniHackNavigation
from nle import nethack

from omega.envs.tasks.glyphs import _agent_pos, _monster_name, _object_name
from omega.envs.tasks.levels import (
    _BEAR_CORNER,
    _BEAR_START,
    _BEAR_TRAP,
    AVOID_FUZZY_BEAR_REWARDS,
    MEMORY_MONSTERS,
    _check_int,
    avoid_fuzzy_bear_des,
    credit_assignment_des,
    memory_des,
    random_room_des,
    retreat_des,
    stochastic_trap_des,
)


class OmegaTaskEnv(MiniHackNavigation):
    """Base class: MiniHackNavigation with task-defined rewards/termination,
    ``reset(seed=...)`` support and no frozen-step penalty by default.

    Subclasses implement ``_task_reset(obs)`` (called after every reset with
    the first observation) and ``_task_status(obs) -> (status, reward)``
    (called once per step with the new observation); ``obs`` is a dict with
    the raw ``glyphs``, ``blstats`` and ``message`` (independent of the env's
    ``observation_keys``).
    """

    class StepStatus(enum.IntEnum):
        ABORTED = -1
        RUNNING = 0
        DEATH = 1
        TASK_SUCCESSFUL = 2
        TASK_FAILED = 3

    def __init__(self, *args, des_file: str, reward_death: float = 0.0, **kwargs):
        kwargs.setdefault("penalty_step", 0.0)
        self.reward_death = float(reward_death)
        self._pending_reward = 0.0
        self._task_ready = False
        self._seed_from_np_random = False
        self._final_obs = None
        super().__init__(*args, des_file=des_file, **kwargs)

    # -- seeding -----------------------------------------------------------
    def seed(self, core=None, disp=None, reseed=False, lgen=None):
        """NLE seeding; explicit seeds take precedence over ``reset(seed=)``."""
        self._seed_from_np_random = False
        return super().seed(core, disp, reseed, lgen)

    def reset(self, *args, seed=None, options=None, **kwargs):
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
            self._seed_from_np_random = True
        if self._seed_from_np_random and self._level_seeds is None:
            core, disp = (int(s) for s in self.np_random.integers(0, 2**62, size=2))
            super().seed(core, disp, False)
        if options is not None:
            # NLE indexes options["wizkit_items"] unconditionally.
            options = {"wizkit_items": None, **options}
        self._task_ready = False
        self._pending_reward = 0.0
        obs, info = super().reset(*args, seed=None, options=options, **kwargs)
        self._task_reset(self._raw_obs(self.last_observation))
        self._task_ready = True
        return obs, info

    def _raw_obs(self, observation) -> dict[str, np.ndarray]:
        """glyphs / blstats / message of a raw NLE observation tuple.

        NLE always keeps these internally, whatever ``observation_keys`` the
        env was built with, so the task logic does not depend on them.
        """
        return {
            "glyphs": observation[self._glyph_index],
            "blstats": observation[self._blstats_index],
            "message": observation[self._message_index],
        }

    # -- rendering -----------------------------------------------------------
    def render(self):
        if self.render_mode == "full":
            # NLE's "full" mode calls tty_render on uint8 colours, which
            # overflows with numpy >= 2 (``colors & ~8``); cast first.
            obs = self.last_observation
            message = bytes(obs[self._observation_keys.index("message")])
            print(message[: message.find(b"\0")] if b"\0" in message else message)
            chars = obs[self._observation_keys.index("chars")]
            colors = obs[self._observation_keys.index("colors")].astype(np.int16)
            print(nethack.tty_render(chars, colors))
            return None
        return super().render()

    # -- final observation -------------------------------------------------
    def step(self, action: int):
        self._final_obs = None
        obs, reward, terminated, truncated, info = super().step(action)
        if self._final_obs is not None:
            obs, self._final_obs = self._final_obs, None
        return obs, reward, terminated, truncated, info

    def _quit_game(self, observation, done):
        # NLE quits the game when the task (or the time limit) ends an
        # episode, which blanks the observation buffers.  Keep a copy of the
        # last real frame and return it instead of the blank one.
        self._final_obs = {
            key: np.array(value, copy=True)
            for key, value in self._get_observation(observation).items()
        }
        super()._quit_game(observation, done)

    # -- reward / termination ---------------------------------------------
    def _get_end_status(self, observation, done):
        # Real outcomes win over the time limit (NLE checks the limit first).
        status = self._is_episode_end(observation)
        if done:
            return self.StepStatus.DEATH
        if status != self.StepStatus.RUNNING:
            return self.StepStatus(status)
        if self._check_abort(observation):
            return self.StepStatus.ABORTED
        return self.StepStatus.RUNNING

    def _is_episode_end(self, observation):
        if not self._task_ready:
            return self.StepStatus.RUNNING
        status, reward = self._task_status(self._raw_obs(observation))
        self._pending_reward = float(reward)
        return status

    def _reward_fn(self, last_observation, action, observation, end_status):
        reward, self._pending_reward = self._pending_reward, 0.0
        if end_status == self.StepStatus.DEATH:
            reward = self.reward_death
        elif end_status == self.StepStatus.ABORTED:
            reward = 0.0
        return reward + self._get_time_penalty(last_observation, observation)

    # -- task hooks -----------------------------------------------------------
    def _on_downstairs(self) -> bool:
        """Whether the hero stands on the down staircase (NLE internal flag)."""
        return bool(self.last_observation[self._internal_index][4])

    def _task_reset(self, obs) -> None:
        pass

    def _task_status(self, obs):
        raise NotImplementedError


class OmegaRandomRoom(OmegaTaskEnv):
    """Random room: reach the staircase (+1).  See module docstring."""

    def __init__(self, *args, size: int = 5, **kwargs):
        self.size = _check_int("size", size, 2, 20)
        kwargs.setdefault("max_episode_steps", 5 * self.size)
        super().__init__(*args, des_file=random_room_des(self.size), **kwargs)

    def _task_status(self, obs):
        if self._on_downstairs():
            return self.StepStatus.TASK_SUCCESSFUL, 1.0
        return self.StepStatus.RUNNING, 0.0


class OmegaMemory(OmegaTaskEnv):
    """Memory task (see module docstring)."""

    def __init__(self, *args, k: int = 6, **kwargs):
        self.k = _check_int("k", k, 4, 11)
        kwargs.setdefault("max_episode_steps", 100)
        self.monster: str | None = None
        self.good_cell: tuple[int, int] | None = None
        self.bad_cell: tuple[int, int] | None = None
        super().__init__(*args, des_file=memory_des(self.k), **kwargs)

    def _task_reset(self, obs):
        sx, sy = _agent_pos(obs)
        name = _monster_name(obs["glyphs"][sy - 2, sx])
        if name not in MEMORY_MONSTERS:
            raise RuntimeError(
                f"Omega-Memory: expected one of {MEMORY_MONSTERS} in the niche, "
                f"found {name!r}"
            )
        self.monster = name
        up, down = (sx + self.k, sy - 1), (sx + self.k, sy + 1)
        if name == MEMORY_MONSTERS[0]:
            self.good_cell, self.bad_cell = up, down
        else:
            self.good_cell, self.bad_cell = down, up

    def _task_status(self, obs):
        pos = _agent_pos(obs)
        if pos == self.good_cell:
            return self.StepStatus.TASK_SUCCESSFUL, 1.0
        if pos == self.bad_cell:
            return self.StepStatus.TASK_FAILED, -1.0
        return self.StepStatus.RUNNING, 0.0


class OmegaCreditAssignment(OmegaTaskEnv):
    """Credit-assignment task (see module docstring)."""

    def __init__(self, *args, length: int = 10, **kwargs):
        self.length = _check_int("length", length, 4, 60)
        kwargs.setdefault("max_episode_steps", 200)
        self.gold_cell: tuple[int, int] | None = None
        self.apple_cell: tuple[int, int] | None = None
        self.goal_cell: tuple[int, int] | None = None
        self.took_gold = False
        self.took_apple = False
        super().__init__(
            *args, des_file=credit_assignment_des(self.length), **kwargs
        )

    def _task_reset(self, obs):
        sx, sy = _agent_pos(obs)
        glyphs = obs["glyphs"]
        up, down = (sx, sy - 1), (sx, sy + 1)
        if _object_name(glyphs[up[1], up[0]]) == "gold piece":
            self.gold_cell, self.apple_cell = up, down
        elif _object_name(glyphs[down[1], down[0]]) == "gold piece":
            self.gold_cell, self.apple_cell = down, up
        else:
            raise RuntimeError("Omega-CreditAssignment: gold piece not found")
        self.goal_cell = (sx + self.length + 1, sy)
        self.took_gold = False
        self.took_apple = False

    def _task_status(self, obs):
        pos = _agent_pos(obs)
        if pos == self.gold_cell:
            self.took_gold = True
        elif pos == self.apple_cell:
            self.took_apple = True
        elif pos == self.goal_cell:
            if self.took_apple:
                return self.StepStatus.TASK_FAILED, -1.0
            if self.took_gold:
                return self.StepStatus.TASK_SUCCESSFUL, 1.0
            return self.StepStatus.TASK_FAILED, 0.0
        return self.StepStatus.RUNNING, 0.0


class OmegaRetreat(OmegaTaskEnv):
    """Retreat from a killer bee to the staircase (see module docstring)."""

    def __init__(self, *args, reward_death: float = -1.0, **kwargs):
        kwargs.setdefault("max_episode_steps", 100)
        # An orcish rogue: poison resistant, so a sting cannot kill outright
        # ("The poison was deadly...") and a direct retreat is (almost) safe.
        kwargs.setdefault("character", "rog-orc-cha-mal")
        super().__init__(
            *args, des_file=retreat_des(), reward_death=reward_death, **kwargs
        )

    def _task_status(self, obs):
        if self._on_downstairs():
            return self.StepStatus.TASK_SUCCESSFUL, 1.0
        return self.StepStatus.RUNNING, 0.0


class OmegaStochasticTrap(OmegaTaskEnv):
    """Room with a random pit / squeaky board on the only path (see docstring)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_episode_steps", 40)
        super().__init__(*args, des_file=stochastic_trap_des(), **kwargs)

    def _task_status(self, obs):
        if self._on_downstairs():
            return self.StepStatus.TASK_SUCCESSFUL, 1.0
        return self.StepStatus.RUNNING, 0.0


class OmegaAvoidFuzzyBear(OmegaTaskEnv):
    """A hidden pit (-0.5) or squeaky board (+1), or a safe corner (+0.6)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_episode_steps", 50)
        self.trap_cell: tuple[int, int] | None = None
        self.corner_cell: tuple[int, int] | None = None
        #: What ended the last episode: "pit", "board", "corner" or None.
        self.outcome: str | None = None
        super().__init__(*args, des_file=avoid_fuzzy_bear_des(), **kwargs)

    def _task_reset(self, obs):
        # The level sits somewhere on NetHack's 79x21 map: place the des-file's
        # cells relative to the hero's start.
        sx, sy = _agent_pos(obs)
        dx, dy = sx - _BEAR_START[0], sy - _BEAR_START[1]
        self.trap_cell = (_BEAR_TRAP[0] + dx, _BEAR_TRAP[1] + dy)
        self.corner_cell = (_BEAR_CORNER[0] + dx, _BEAR_CORNER[1] + dy)
        self.outcome = None

    def _task_status(self, obs):
        pos = _agent_pos(obs)
        if pos == self.corner_cell:
            self.outcome = "corner"
            return self.StepStatus.TASK_SUCCESSFUL, AVOID_FUZZY_BEAR_REWARDS["corner"]
        if pos == self.trap_cell:
            self.outcome = _trap_kind(obs["message"])
            if self.outcome == "pit":
                return self.StepStatus.TASK_FAILED, AVOID_FUZZY_BEAR_REWARDS["pit"]
            return self.StepStatus.TASK_SUCCESSFUL, AVOID_FUZZY_BEAR_REWARDS["board"]
        return self.StepStatus.RUNNING, 0.0


def _trap_kind(message: np.ndarray) -> str:
    """"pit" or "board" from the message of the step onto a trap ("You fall into
    a pit!", "A board beneath you squeaks ...", "You notice a loose board ...")."""
    text = bytes(np.asarray(message, np.uint8)).split(b"\0", 1)[0].lower()
    if b"pit" in text:
        return "pit"
    if b"board" in text or b"squeak" in text:
        return "board"
    raise RuntimeError(f"Omega-AvoidFuzzyBear: the step onto the trap gave no trap message "
                       f"({text!r})")

"""Small diagnostic MiniHack tasks, registered as gymnasium ids.

Importing this module registers the ids below (``register_tasks()`` is
idempotent and may be called again safely).  All tasks use MiniHack's
navigation setting: the action space is the 8 compass moves
(``N, E, S, W, NE, SE, SW, NW``), the character is a chaotic human rogue, no
pet, autopickup on, and random monster generation off.  The levels are
MiniHack des-files built in this module (``*_des()`` functions).

Rewards are sparse and clean: MiniHack's default "frozen step" penalty
(``penalty_step=-0.01`` for actions that do not advance the game clock, e.g.
walking into a wall) is switched off by default (pass ``penalty_step=...`` to
get it back).

Termination is reported the NLE / MiniHack way: ``terminated=True`` and
``info["end_status"]`` is one of ``OmegaTaskEnv.StepStatus``:

* ``TASK_SUCCESSFUL`` (2): the task was solved.
* ``TASK_FAILED`` (3): the episode ended in a non-death failure (memory task:
  wrong cell).
* ``DEATH`` (1): the hero died.
* ``ABORTED`` (-1): the ``max_episode_steps`` limit was hit.  This is a time
  limit, *not* a true terminal state (MiniHack reports it with
  ``terminated=True``; wrappers elsewhere in omega turn it into truncation).
  Unlike plain NLE, a real outcome (success / failure / death) reached on the
  very last step wins over the time limit.

Tasks
-----
``Omega-RandomRoom-v0`` (gym kwarg ``size``, default 5; 2..20),
``Omega-RandomRoom-5x5-v0``, ``Omega-RandomRoom-10x10-v0``
    A lit, empty ``size`` x ``size`` room; the hero and the down staircase
    (``>``, the goal) are placed at random.  Reaching the staircase gives +1
    and ends the episode (``TASK_SUCCESSFUL``).  ``max_episode_steps`` defaults
    to ``5 * size`` (>= 5x the longest shortest path; MiniHack's own Room tasks
    use ``20 * size``, with which a uniformly random policy succeeds most of
    the time).

``Omega-Memory-v0`` (gym kwarg ``k``, 4..11, default 6),
``Omega-Memory-K4-v0`` ... ``Omega-Memory-K11-v0``
    The hero starts in a dark closet.  Right above it, behind iron bars, sits
    one sleeping, peaceful monster in a lit niche: a newt (``:``) or a lichen
    (``F``), chosen 50/50 by the des-file (NetHack's RNG, so seeding the game
    fixes it).  A dark corridor leads ``k`` steps east to a dead end ``E``;
    the cells directly above and below ``E`` are the two exits.  Newt: the
    upper cell gives +1 (``TASK_SUCCESSFUL``) and the lower -1
    (``TASK_FAILED``); lichen: the other way round.  Both end the episode.
    The monster is visible only from the start cell and the first corridor
    cell (walls block the line of sight further on, and NetHack does not draw
    monsters it cannot see), so its kind must be remembered for at least
    ``k - 1`` steps.  A policy that ignores the start
    observation succeeds 50% of the time.  ``max_episode_steps`` = 100.

``Omega-CreditAssignment-v0`` (gym kwarg ``length``, corridor length, default
10; 4..60)
    A lit level: the hero starts in a 1x3 closet; the cells directly above and
    below the start hold a gold piece (``$``) and an apple (``%``), which is
    where is chosen 50/50 by the des-file.  Stepping on a cell picks its item
    up (autopickup).  A lit corridor of ``length`` cells leads east from the
    start to the down staircase (``>``).  Picking items up gives no reward.
    Reaching the staircase ends the episode with reward +1 if the hero picked
    up the gold and not the apple, -1 if it picked up the apple, and 0 if it
    picked up neither (``end_status`` is ``TASK_SUCCESSFUL`` only for +1,
    otherwise ``TASK_FAILED``).  The early choice (first or second step) thus
    decides a reward that arrives at least ``length`` steps later.  What was
    picked up stays visible in the observation (the item disappears from the
    map and, for the gold, ``blstats`` gold goes up), so the task is Markov and
    tests credit assignment, not memory.  ``max_episode_steps`` = 200.

``Omega-Retreat-v0``
    A lit 6x3 room.  The hero (an orcish rogue by default: poison resistant,
    so a sting cannot kill outright) starts in the west part with an awake,
    hostile killer bee right next to it (west); the down staircase (the exit)
    is at the east end of the room, 4 steps away.  Reaching the staircase
    alive gives +1 (``TASK_SUCCESSFUL``); dying gives ``reward_death``
    (default -1, ``DEATH``).  Killer bees are faster than the hero: heading
    straight for the exit survives, dithering in the room (or fighting) is
    often fatal.  ``max_episode_steps`` = 100.

``Omega-StochasticTrap-v0``
    A lit room of two 3x3 halves joined by a single gap cell; the hero starts
    in the middle of the west half, the staircase (goal, +1) is in the middle
    of the east half, so every path crosses the gap.  The gap holds a hidden
    trap that the des-file makes a pit (hero falls in, loses a few HP and is
    stuck for a few turns) or a squeaky board (just noise), 50/50 per episode.
    The same move onto the gap thus has two random outcomes (falling into the
    pit again and again can even kill a low-HP hero: ``DEATH``, reward 0).
    ``max_episode_steps`` = 40.

``Omega-AvoidFuzzyBear-v0``
    Planning under chance: a gamble against a sure thing.  A lit 9x3 room;
    the hero starts in its east half.  Two steps east of the start lies a
    hidden trap that the des-file makes a pit or a squeaky board, 50/50 per
    episode; stepping onto it ends the episode with -0.5 for the pit
    (``TASK_FAILED``) and +1 for the board (``TASK_SUCCESSFUL``).  The room's
    north-west corner, five steps away, is safe: reaching it ends the
    episode with +0.6 (``TASK_SUCCESSFUL``).  The gamble is worth 0.25 on
    average, so the safe corner is the right choice; an agent that treats the
    trap's outcome as fixed, or learns only from its lucky episodes, takes
    the gamble.  ``max_episode_steps`` = 50 (a time limit, reward 0).

Success
-------
Where a task can end with a penalty (the memory task's wrong exit, the
retreat's death, AvoidFuzzyBear's pit), omega counts an episode as a success
when it ends (not by the time limit) with a final reward > 0
(``omega.envs.success_from_reward``), not from ``end_status`` alone.

Seeding
-------
NLE ignores the ``seed`` argument of ``reset``.  These envs honour it: after
``reset(seed=s)`` the env draws fresh NetHack core/disp seeds from its
``np_random`` before every reset (so episodes are reproducible and
``gymnasium.utils.env_checker.check_env(env.unwrapped)`` passes).  The NLE way
still works and takes precedence: ``env.unwrapped.seed(core, disp,
reseed=False)`` before ``reset()`` fixes the game (NLE keeps those seeds for
every following reset until ``seed`` is called again).  All randomness of the
tasks comes from the des-files, i.e. from NetHack's RNG.

Scripted policies
-----------------
``scripted_policy(env_id)`` returns a fresh callable ``policy(obs) -> action``
(with ``reset()``) that solves the task from observations only (glyphs,
blstats); the memory policy remembers the monster it saw at the start.  Call
``policy.reset()`` (or create a new one) at every episode start.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Iterable

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from minihack import LevelGenerator, MiniHackNavigation
from minihack.envs import register as _minihack_register
from nle import nethack

__all__ = [
    "ACTION_INDEX",
    "CreditAssignmentPolicy",
    "GoToStairsPolicy",
    "MEMORY_MONSTERS",
    "MemoryPolicy",
    "MOVE_ACTIONS",
    "AVOID_FUZZY_BEAR_REWARDS",
    "OmegaAvoidFuzzyBear",
    "OmegaCreditAssignment",
    "OmegaMemory",
    "OmegaRandomRoom",
    "OmegaRetreat",
    "OmegaStochasticTrap",
    "OmegaTaskEnv",
    "SafeCornerPolicy",
    "ScriptedPolicy",
    "TASK_IDS",
    "avoid_fuzzy_bear_des",
    "credit_assignment_des",
    "memory_des",
    "random_room_des",
    "register_tasks",
    "retreat_des",
    "scripted_policy",
    "stochastic_trap_des",
]

# --------------------------------------------------------------------------
# Actions / glyph helpers
# --------------------------------------------------------------------------

#: The navigation action set (MiniHackNavigation's default); the action index
#: is the position in this tuple.
MOVE_ACTIONS = tuple(nethack.CompassDirection)

#: (dx, dy) -> action index into ``MOVE_ACTIONS``.
_DIR_DELTAS = {
    nethack.CompassDirection.N: (0, -1),
    nethack.CompassDirection.E: (1, 0),
    nethack.CompassDirection.S: (0, 1),
    nethack.CompassDirection.W: (-1, 0),
    nethack.CompassDirection.NE: (1, -1),
    nethack.CompassDirection.SE: (1, 1),
    nethack.CompassDirection.SW: (-1, 1),
    nethack.CompassDirection.NW: (-1, -1),
}
ACTION_INDEX: dict[tuple[int, int], int] = {
    _DIR_DELTAS[a]: i for i, a in enumerate(MOVE_ACTIONS)
}

# NetHack 3.6 cmap symbol indices (glyph = GLYPH_CMAP_OFF + index).
S_DOORWAY, S_VODOOR, S_HODOOR = 12, 13, 14
S_ROOM, S_DARKROOM, S_CORR, S_LITCORR = 19, 20, 21, 22
S_UPSTAIR, S_DNSTAIR = 23, 24
S_SQUEAKY_BOARD, S_PIT = 45, 52
_PASSABLE_CMAP = frozenset(
    {S_DOORWAY, S_VODOOR, S_HODOOR, S_ROOM, S_DARKROOM, S_CORR, S_LITCORR}
    | set(range(S_UPSTAIR, S_UPSTAIR + 6))  # stairs, ladders, altar, grave
    | {29, 30, 31, 33}  # throne, sink, fountain, ice
)
_CORRIDOR_CMAP = frozenset({S_CORR, S_LITCORR})

_GLYPH_DNSTAIR = nethack.GLYPH_CMAP_OFF + S_DNSTAIR

#: Memory task: the two monster kinds.  The first one means "go up", the
#: second one "go down".
MEMORY_MONSTERS = ("newt", "lichen")
_MEMORY_SYMBOLS = {"newt": ":", "lichen": "F"}


def _cmap(glyph: int) -> int:
    """cmap index of a glyph, or -1 if it is not a map-symbol glyph."""
    glyph = int(glyph)
    if nethack.glyph_is_cmap(glyph):
        return glyph - nethack.GLYPH_CMAP_OFF
    return -1


def _monster_name(glyph: int) -> str | None:
    glyph = int(glyph)
    if nethack.glyph_is_monster(glyph):
        return nethack.permonst(nethack.glyph_to_mon(glyph)).mname
    return None


def _object_name(glyph: int) -> str | None:
    glyph = int(glyph)
    if nethack.glyph_is_object(glyph):
        return nethack.OBJ_NAME(nethack.objclass(nethack.glyph_to_obj(glyph)))
    return None


def _is_passable(glyph: int) -> bool:
    """Whether the hero can (presumably) walk onto a cell showing ``glyph``."""
    glyph = int(glyph)
    if nethack.glyph_is_cmap(glyph):
        return _cmap(glyph) in _PASSABLE_CMAP
    if nethack.glyph_is_trap(glyph):
        return True
    if nethack.glyph_is_object(glyph):
        return _object_name(glyph) != "boulder"
    return False


def _agent_pos(obs) -> tuple[int, int]:
    blstats = obs["blstats"]
    return int(blstats[nethack.NLE_BL_X]), int(blstats[nethack.NLE_BL_Y])


def _find_glyph_positions(glyphs: np.ndarray, pred: Callable[[int], bool]):
    out = []
    for g in np.unique(glyphs):
        if pred(int(g)):
            ys, xs = np.nonzero(glyphs == g)
            out.extend(zip(xs.tolist(), ys.tolist(), strict=True))
    return out


def _bfs_first_step(
    glyphs: np.ndarray,
    start: tuple[int, int],
    goals: Iterable[tuple[int, int]],
    avoid: Iterable[tuple[int, int]] = (),
) -> int | None:
    """Action index of the first move of a shortest 8-connected path.

    Cells are passable according to the glyph map (``_is_passable``); goal
    cells are always enterable, ``avoid`` cells never.  Returns None if no
    goal is reachable.
    """
    goals = set(goals)
    if not goals:
        return None
    avoid = set(avoid)
    h, w = glyphs.shape
    prev: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
    queue = collections.deque([start])
    found = None
    while queue:
        cur = queue.popleft()
        if cur in goals and cur != start:
            found = cur
            break
        x, y = cur
        for dx, dy in ACTION_INDEX:
            nxt = (x + dx, y + dy)
            nx, ny = nxt
            if not (0 <= nx < w and 0 <= ny < h) or nxt in prev:
                continue
            if nxt in avoid:
                continue
            if nxt not in goals and not _is_passable(glyphs[ny, nx]):
                continue
            prev[nxt] = cur
            queue.append(nxt)
    if found is None:
        return None
    cell = found
    while prev[cell] != start:
        cell = prev[cell]
    return ACTION_INDEX[(cell[0] - start[0], cell[1] - start[1])]


# --------------------------------------------------------------------------
# des-files
# --------------------------------------------------------------------------

_HEADER = """MAZE: "mylevel", ' '
FLAGS:hardfloor,noteleport
INIT_MAP: solidfill,' '
GEOMETRY:center,center
"""


def _map_block(rows: list[str]) -> tuple[str, int, int]:
    width = max(len(r) for r in rows)
    rows = [r.ljust(width) for r in rows]
    return "MAP\n" + "\n".join(rows) + "\nENDMAP\n", width, len(rows)


def _check_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, np.integer)
    ):
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def random_room_des(size: int = 5) -> str:
    """Lit empty ``size`` x ``size`` room, random start and random ``>``."""
    size = _check_int("size", size, 2, 20)
    lvl = LevelGenerator(w=size, h=size, lit=True, flags=("hardfloor", "noteleport"))
    lvl.add_goal_pos()
    return lvl.get_des()


def memory_des(k: int = 6) -> str:
    """Memory task level; ``k`` = corridor steps from the start to its end.

    Map coordinates: start S=(1,3), monster niche (1,1) behind iron bars at
    (1,2), corridor (2..1+k, 3), exits U=(1+k, 2) and D=(1+k, 4).
    """
    k = _check_int("k", k, 4, 11)
    end_x = 1 + k
    rows = [
        "---",
        "|.|",
        "|F|" + " " * (end_x - 3) + "#",
        "|." + "#" * k,
        "---" + " " * (end_x - 3) + "#",
    ]
    block, w, h = _map_block(rows)
    up, down = MEMORY_MONSTERS
    return (
        _HEADER
        + block
        + f'REGION:(0,0,{w - 1},{h - 1}),unlit,"ordinary"\n'
        + 'REGION:(1,1,1,1),lit,"ordinary"\n'
        + "IF [50%] {\n"
        + f"  MONSTER:('{_MEMORY_SYMBOLS[up]}',\"{up}\"),(1,1),asleep,peaceful\n"
        + "} ELSE {\n"
        + f"  MONSTER:('{_MEMORY_SYMBOLS[down]}',\"{down}\"),(1,1),asleep,peaceful\n"
        + "}\n"
        + "BRANCH:(1,3,1,3),(0,0,0,0)\n"
    )


def credit_assignment_des(length: int = 10) -> str:
    """Credit-assignment level: start S=(1,2), item cells (1,1) and (1,3),
    corridor (2..1+length, 2), staircase at (2+length, 2)."""
    length = _check_int("length", length, 4, 60)
    rows = [
        "---",
        "|.|",
        "|." + "#" * (length + 1),
        "|.|",
        "---",
    ]
    block, w, h = _map_block(rows)
    return (
        _HEADER
        + block
        + f'REGION:(0,0,{w - 1},{h - 1}),lit,"ordinary"\n'
        + f"STAIR:({length + 2},2),down\n"
        + "IF [50%] {\n"
        + "  GOLD:1,(1,1)\n"
        + "  OBJECT:('%',\"apple\"),(1,3)\n"
        + "} ELSE {\n"
        + "  OBJECT:('%',\"apple\"),(1,1)\n"
        + "  GOLD:1,(1,3)\n"
        + "}\n"
        + "BRANCH:(1,2,1,2),(0,0,0,0)\n"
    )


def retreat_des() -> str:
    """Retreat level: 6x3 lit room, hero at (2,2), bee at (1,2), ``>`` at (6,2)."""
    rows = [
        "--------",
        "|......|",
        "|......|",
        "|......|",
        "--------",
    ]
    block, w, h = _map_block(rows)
    return (
        _HEADER
        + block
        + f'REGION:(0,0,{w - 1},{h - 1}),lit,"ordinary"\n'
        + "STAIR:(6,2),down\n"
        + "MONSTER:('a',\"killer bee\"),(1,2),hostile,awake\n"
        + "BRANCH:(2,2,2,2),(0,0,0,0)\n"
    )


def stochastic_trap_des() -> str:
    """Stochastic-trap level: two 3x3 halves joined by the gap (4,2)."""
    rows = [
        "---------",
        "|...|...|",
        "|.......|",
        "|...|...|",
        "---------",
    ]
    block, w, h = _map_block(rows)
    return (
        _HEADER
        + block
        + f'REGION:(0,0,{w - 1},{h - 1}),lit,"ordinary"\n'
        + "STAIR:(6,2),down\n"
        + "IF [50%] {\n"
        + '  TRAP:"pit",(4,2)\n'
        + "} ELSE {\n"
        + '  TRAP:"board",(4,2)\n'
        + "}\n"
        + "BRANCH:(2,2,2,2),(0,0,0,0)\n"
    )


#: AvoidFuzzyBear: the final reward of each ending.
AVOID_FUZZY_BEAR_REWARDS = {"pit": -0.5, "board": 1.0, "corner": 0.6}
#: AvoidFuzzyBear map coordinates: start, hidden trap, safe corner.
_BEAR_START, _BEAR_TRAP, _BEAR_CORNER = (6, 2), (8, 2), (1, 1)


def avoid_fuzzy_bear_des() -> str:
    """AvoidFuzzyBear level: 9x3 lit room, hero at (6,2), hidden pit or squeaky
    board at (8,2), safe corner (1,1)."""
    rows = [
        "-----------",
        "|.........|",
        "|.........|",
        "|.........|",
        "-----------",
    ]
    block, w, h = _map_block(rows)
    tx, ty = _BEAR_TRAP
    sx, sy = _BEAR_START
    return (
        _HEADER
        + block
        + f'REGION:(0,0,{w - 1},{h - 1}),lit,"ordinary"\n'
        + "IF [50%] {\n"
        + f'  TRAP:"pit",({tx},{ty})\n'
        + "} ELSE {\n"
        + f'  TRAP:"board",({tx},{ty})\n'
        + "}\n"
        + f"BRANCH:({sx},{sy},{sx},{sy}),(0,0,0,0)\n"
    )


# --------------------------------------------------------------------------
# Environments
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Scripted policies
# --------------------------------------------------------------------------


class ScriptedPolicy:
    """Callable ``policy(obs) -> action index``; call ``reset()`` per episode."""

    def reset(self) -> None:
        pass

    def __call__(self, obs) -> int:
        raise NotImplementedError


class GoToStairsPolicy(ScriptedPolicy):
    """Shortest path (BFS on the glyph map) to a visible ``>``, avoiding
    visible monsters.  If no path exists, steps away from monsters or waits
    by bumping a wall."""

    def __call__(self, obs) -> int:
        glyphs = obs["glyphs"]
        pos = _agent_pos(obs)
        stairs = _find_glyph_positions(glyphs, lambda g: g == _GLYPH_DNSTAIR)
        monsters = [
            p
            for p in _find_glyph_positions(glyphs, nethack.glyph_is_monster)
            if p != pos
        ]
        action = _bfs_first_step(glyphs, pos, stairs, avoid=monsters)
        if action is None:  # e.g. a monster blocks the way: try any path
            action = _bfs_first_step(glyphs, pos, stairs)
        return ACTION_INDEX[(1, 0)] if action is None else action


class MemoryPolicy(ScriptedPolicy):
    """Remembers the niche monster seen at the start, walks east to the end
    of the corridor and steps up (newt) or down (lichen)."""

    def __init__(self, use_memory: bool = True, default_up: bool = True):
        self.use_memory = use_memory
        self.default_up = default_up
        self.reset()

    def reset(self) -> None:
        self.monster: str | None = None

    def __call__(self, obs) -> int:
        glyphs = obs["glyphs"]
        x, y = _agent_pos(obs)
        if self.monster is None:
            for p in _find_glyph_positions(glyphs, nethack.glyph_is_monster):
                name = _monster_name(glyphs[p[1], p[0]])
                if p != (x, y) and name in MEMORY_MONSTERS:
                    self.monster = name
        if _cmap(glyphs[y, x + 1]) in _CORRIDOR_CMAP:
            return ACTION_INDEX[(1, 0)]
        if self.use_memory and self.monster is not None:
            go_up = self.monster == MEMORY_MONSTERS[0]
        else:
            go_up = self.default_up
        return ACTION_INDEX[(0, -1)] if go_up else ACTION_INDEX[(0, 1)]


class CreditAssignmentPolicy(ScriptedPolicy):
    """Picks up the visible gold (never the apple), then goes to ``>``."""

    def __call__(self, obs) -> int:
        glyphs = obs["glyphs"]
        pos = _agent_pos(obs)
        gold = _find_glyph_positions(
            glyphs, lambda g: _object_name(g) == "gold piece"
        )
        apples = _find_glyph_positions(glyphs, lambda g: _object_name(g) == "apple")
        if gold and obs["blstats"][nethack.NLE_BL_GOLD] == 0:
            targets = gold
        else:
            targets = _find_glyph_positions(glyphs, lambda g: g == _GLYPH_DNSTAIR)
        action = _bfs_first_step(glyphs, pos, targets, avoid=apples)
        return ACTION_INDEX[(1, 0)] if action is None else action


class SafeCornerPolicy(ScriptedPolicy):
    """AvoidFuzzyBear: walks to the room's north-west corner around the cell
    two steps east of the start, where the hidden trap is."""

    def reset(self) -> None:
        self.trap: tuple[int, int] | None = None

    def __init__(self):
        self.reset()

    def __call__(self, obs) -> int:
        glyphs = obs["glyphs"]
        x, y = _agent_pos(obs)
        if self.trap is None:
            self.trap = (x + _BEAR_TRAP[0] - _BEAR_START[0], y + _BEAR_TRAP[1] - _BEAR_START[1])
        floor = _find_glyph_positions(glyphs, lambda g: _cmap(g) == S_ROOM)
        floor.append((x, y))
        corner = min(floor, key=lambda p: (p[0] + p[1], p[1]))
        action = _bfs_first_step(glyphs, (x, y), [corner], avoid=[self.trap])
        return ACTION_INDEX[(-1, 0)] if action is None else action


_POLICIES: dict[str, Callable[[], ScriptedPolicy]] = {
    "Omega-RandomRoom": GoToStairsPolicy,
    "Omega-Memory": MemoryPolicy,
    "Omega-CreditAssignment": CreditAssignmentPolicy,
    "Omega-Retreat": GoToStairsPolicy,
    "Omega-StochasticTrap": GoToStairsPolicy,
    "Omega-AvoidFuzzyBear": SafeCornerPolicy,
}


def scripted_policy(env_id: str) -> ScriptedPolicy:
    """A fresh scripted policy that solves ``env_id`` from observations."""
    family = env_id.rsplit("-v", 1)[0]
    for prefix, factory in _POLICIES.items():
        if family == prefix or family.startswith(prefix + "-"):
            return factory()
    raise KeyError(f"No scripted policy for {env_id!r}")


# --------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------

_MODULE = __name__


def _task_specs() -> dict[str, tuple[str, dict]]:
    specs = {
        "Omega-RandomRoom-v0": ("OmegaRandomRoom", {}),
        "Omega-RandomRoom-5x5-v0": ("OmegaRandomRoom", {"size": 5}),
        "Omega-RandomRoom-10x10-v0": ("OmegaRandomRoom", {"size": 10}),
        "Omega-Memory-v0": ("OmegaMemory", {}),
    }
    for k in range(4, 12):
        specs[f"Omega-Memory-K{k}-v0"] = ("OmegaMemory", {"k": k})
    specs["Omega-CreditAssignment-v0"] = ("OmegaCreditAssignment", {})
    specs["Omega-Retreat-v0"] = ("OmegaRetreat", {})
    specs["Omega-StochasticTrap-v0"] = ("OmegaStochasticTrap", {})
    specs["Omega-AvoidFuzzyBear-v0"] = ("OmegaAvoidFuzzyBear", {})
    return specs


#: All ids registered by this module.
TASK_IDS: tuple[str, ...] = tuple(_task_specs())


def register_tasks() -> tuple[str, ...]:
    """Register all task ids with gymnasium (idempotent).  Returns the ids."""
    for env_id, (cls_name, kwargs) in _task_specs().items():
        if env_id in gym.envs.registry:
            continue
        # minihack's register disables gymnasium's OrderEnforcing wrapper, as
        # for MiniHack's own ids (it breaks NLE's seed() calls).
        _minihack_register(
            id=env_id, entry_point=f"{_MODULE}:{cls_name}", kwargs=dict(kwargs)
        )
    return TASK_IDS


register_tasks()

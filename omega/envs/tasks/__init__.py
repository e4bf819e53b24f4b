"""Small diagnostic MiniHack tasks, registered as gymnasium ids.

Importing this module registers the ids below (``register_tasks()`` is
idempotent and may be called again safely).  All tasks use MiniHack's
navigation setting: the action space is the 8 compass moves
(``N, E, S, W, NE, SE, SW, NW``), the character is a chaotic human rogue, no
pet, autopickup on, and random monster generation off.  The levels are
MiniHack des-files built in :mod:`omega.envs.tasks.levels` (``*_des()``
functions).

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

Layout
------
* :mod:`omega.envs.tasks.glyphs`: the action set, cmap indices, glyph helpers
  and the BFS the solvers walk with;
* :mod:`omega.envs.tasks.levels`: the des-files and level constants;
* :mod:`omega.envs.tasks.envs`: ``OmegaTaskEnv`` and one class per task;
* :mod:`omega.envs.tasks.solvers`: the scripted policies;
* :mod:`omega.envs.tasks.registry`: the gymnasium ids (entry points name this
  package, ``omega.envs.tasks:OmegaMemory``, so the env classes are
  re-exported here).
"""

from __future__ import annotations

from omega.envs.tasks.envs import (
    OmegaAvoidFuzzyBear,
    OmegaCreditAssignment,
    OmegaMemory,
    OmegaRandomRoom,
    OmegaRetreat,
    OmegaStochasticTrap,
    OmegaTaskEnv,
)
from omega.envs.tasks.glyphs import (
    _GLYPH_DNSTAIR,  # noqa: F401 (tests reach it as tasks._GLYPH_DNSTAIR)
    ACTION_INDEX,
    MOVE_ACTIONS,
    S_PIT,  # noqa: F401 (tests reach it as tasks.S_PIT)
    S_SQUEAKY_BOARD,  # noqa: F401 (tests reach it as tasks.S_SQUEAKY_BOARD)
    _agent_pos,  # noqa: F401 (tests reach it as tasks._agent_pos)
    _cmap,  # noqa: F401 (tests reach it as tasks._cmap)
    _find_glyph_positions,  # noqa: F401 (tests reach it as tasks._find_glyph_positions)
    _monster_name,  # noqa: F401 (tests reach it as tasks._monster_name)
    _object_name,  # noqa: F401 (tests reach it as tasks._object_name)
)
from omega.envs.tasks.levels import (
    AVOID_FUZZY_BEAR_REWARDS,
    MEMORY_MONSTERS,
    avoid_fuzzy_bear_des,
    credit_assignment_des,
    memory_des,
    random_room_des,
    retreat_des,
    stochastic_trap_des,
)
from omega.envs.tasks.registry import TASK_IDS, register_tasks
from omega.envs.tasks.solvers import (
    CreditAssignmentPolicy,
    GoToStairsPolicy,
    MemoryPolicy,
    SafeCornerPolicy,
    ScriptedPolicy,
    scripted_policy,
)

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

register_tasks()

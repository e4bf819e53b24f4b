"""des-files of the diagnostic tasks (``*_des()``) and the level constants they share
with the envs and the solvers (memory monsters, AvoidFuzzyBear cells and rewards)."""

from __future__ import annotations

import numpy as np
from minihack import LevelGenerator

#: Memory task: the two monster kinds.  The first one means "go up", the
#: second one "go down".
MEMORY_MONSTERS = ("newt", "lichen")
_MEMORY_SYMBOLS = {"newt": ":", "lichen": "F"}


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

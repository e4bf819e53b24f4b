"""Actions and glyph helpers shared by the task envs and the scripted solvers.

The navigation action set and the ``(dx, dy) -> action`` map, NetHack cmap symbol
indices, glyph predicates (``_cmap``, ``_monster_name``, ``_object_name``,
``_is_passable``), the hero's position from ``blstats`` and a BFS on the glyph map.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable

import numpy as np
from nle import nethack

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

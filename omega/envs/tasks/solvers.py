"""Scripted policies that solve the tasks from observations only (glyphs, blstats)."""

from __future__ import annotations

from collections.abc import Callable

from nle import nethack

from omega.envs.tasks.glyphs import (
    _CORRIDOR_CMAP,
    _GLYPH_DNSTAIR,
    ACTION_INDEX,
    S_ROOM,
    _agent_pos,
    _bfs_first_step,
    _cmap,
    _find_glyph_positions,
    _monster_name,
    _object_name,
)
from omega.envs.tasks.levels import _BEAR_START, _BEAR_TRAP, MEMORY_MONSTERS


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


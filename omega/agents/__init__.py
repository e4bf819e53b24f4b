"""Agents. Each implements :class:`omega.agents.base.Agent`; the registry
(:mod:`omega.agents.registry`) knows them by ``agent_type`` and ``build_agent`` builds one.

The registry's names are importable from here too; they load on first use, so importing
``omega.agents`` (or ``omega.agents.base``) stays free of the agents' own modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omega.agents.parallel import DataParallel

_REGISTRY_NAMES = ("RANDOM_ROLLOUT_LENGTH", "AgentSpec", "ReanalyzeHooks", "agent_spec",
                   "agent_types", "register_agent")

__all__ = ["build_agent", *_REGISTRY_NAMES]


def build_agent(cfg: Any, num_actions: int,
                data_parallel: DataParallel | None = None) -> tuple[Any, int]:
    """Returns ``(agent, rollout_length)`` for ``cfg.agent_type``; with ``data_parallel`` its
    learning is split over those devices (an agent with nothing to learn ignores it)."""
    from omega.agents.registry import agent_spec

    spec = agent_spec(cfg.agent_type)
    return spec.factory(cfg, num_actions, data_parallel), spec.rollout_length(cfg)


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_NAMES:
        from omega.agents import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'omega.agents' has no attribute {name!r}")

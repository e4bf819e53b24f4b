"""Agents. Each implements :class:`omega.agents.base.Agent`; ``build_agent`` picks one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omega.agents.parallel import DataParallel

RANDOM_ROLLOUT_LENGTH = 128


def build_agent(cfg: Any, num_actions: int,
                data_parallel: DataParallel | None = None) -> tuple[Any, int]:
    """Returns ``(agent, rollout_length)`` for ``cfg.agent_type``; with ``data_parallel`` its
    learning is split over those devices (the random agent has nothing to learn)."""
    if cfg.agent_type == "random":
        from omega.agents.random import RandomAgent

        return RandomAgent(num_actions), RANDOM_ROLLOUT_LENGTH
    if cfg.agent_type == "ppo":
        from omega.agents.ppo import make_ppo_agent

        steps_per_update = cfg.ppo.rollout_length * cfg.env.num_envs
        total_updates = max(1, cfg.train.total_env_steps // steps_per_update)
        agent = make_ppo_agent(cfg.ppo, cfg.model, num_actions, total_updates)
        if data_parallel is not None:
            agent.use_data_parallel(data_parallel)
        return agent, cfg.ppo.rollout_length
    if cfg.agent_type == "muzero":
        from omega.agents.muzero import make_muzero_agent

        agent = make_muzero_agent(cfg.muzero, cfg.model, num_actions, cfg.train.total_env_steps)
        if data_parallel is not None:
            agent.use_data_parallel(data_parallel)
        return agent, cfg.muzero.rollout_length
    raise ValueError(f"unknown agent_type {cfg.agent_type!r}")

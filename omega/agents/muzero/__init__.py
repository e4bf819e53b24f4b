"""MuZero (Schrittwieser et al. 2020): batched MCTS (mctx) over a learned model, with replay.

Modules: ``agent`` (the agent, a thin adapter holding state and the jitted functions),
``search``, ``losses``, ``optim``, ``memory``, ``reanalyze`` and ``batches`` (pure pieces it
calls), ``networks``, ``config``, and ``stochastic`` (Stochastic MuZero: chance nodes, built
on the same pieces). :func:`make_muzero_agent` lives here because it picks between the two
agents, and ``stochastic`` imports ``agent``.
"""

from omega.agents.muzero.agent import ActorParams, MuZeroAgent, MuZeroState
from omega.agents.muzero.config import MuZeroConfig
from omega.agents.muzero.stochastic import StochasticMuZeroAgent
from omega.models.encoders import EncoderConfig


def make_muzero_agent(cfg: MuZeroConfig, encoder_cfg: EncoderConfig, num_actions: int,
                      total_env_steps: int) -> MuZeroAgent:
    """A MuZero agent (Stochastic MuZero with ``cfg.stochastic``); ``total_env_steps`` sets
    the temperature and lr schedules' length."""
    if cfg.stochastic:
        return StochasticMuZeroAgent(cfg, encoder_cfg, num_actions, total_env_steps)
    return MuZeroAgent(cfg, encoder_cfg, num_actions, total_env_steps)


__all__ = ["ActorParams", "MuZeroAgent", "MuZeroConfig", "MuZeroState", "make_muzero_agent"]

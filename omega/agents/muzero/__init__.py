"""MuZero (Schrittwieser et al. 2020): batched MCTS (mctx) over a learned model, with replay."""

from omega.agents.muzero.agent import (
    ActorParams,
    MuZeroAgent,
    MuZeroState,
    make_muzero_agent,
)
from omega.agents.muzero.config import MuZeroConfig

__all__ = ["ActorParams", "MuZeroAgent", "MuZeroConfig", "MuZeroState", "make_muzero_agent"]

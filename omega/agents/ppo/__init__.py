"""Proximal policy optimisation (Schulman et al. 2017), optionally with RND exploration."""

from omega.agents.ppo.agent import PPOAgent, PPOState, RNDState, make_ppo_agent
from omega.agents.ppo.config import PPOConfig

__all__ = ["PPOAgent", "PPOConfig", "PPOState", "RNDState", "make_ppo_agent"]

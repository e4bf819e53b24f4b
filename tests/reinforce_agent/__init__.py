"""A plugin agent for omega: importing this module registers ``agent_type: reinforce``.

Load it with ``OMEGA_AGENT_MODULES=reinforce_agent`` (and this folder's parent on
``PYTHONPATH``); docs/extending.md walks through it.
"""

from omega.agents.registry import AgentSpec, register_agent
from reinforce_agent.agent import ReinforceAgent, ReinforceConfig


def _check(cfg):  # settings that conflict across config sections
    if cfg.model.recurrent:
        raise ValueError("config key 'model.recurrent' must be false with agent_type "
                         "reinforce (its policy keeps no memory)")


register_agent(AgentSpec(
    name="reinforce",  # agent_type, and the config section's key
    config_cls=ReinforceConfig,
    factory=lambda cfg, num_actions, data_parallel: ReinforceAgent(cfg.reinforce, cfg.model,
                                                                   num_actions),
    rollout_length=lambda cfg: cfg.reinforce.rollout_length,
    check=_check,
))

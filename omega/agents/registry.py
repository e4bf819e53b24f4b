"""The agent registry: one :class:`AgentSpec` per ``agent_type``.

Everything that depends on which agent an experiment trains asks the registry: the config
loader (the agent's config section and its cross-section checks), ``build_agent``, the
training loop and bench (rollout length), the Ray backend (replay rounds, stream cutting,
reanalyze workers) and ``config_hash`` (only the active agent's section is hashed).

The built-in agents (``random``, ``ppo``, ``muzero``) are registered below; their agent
modules are imported only when an agent is built. Another agent registers itself with
:func:`register_agent`, either from code that runs before the config is loaded or from a
module named in the ``OMEGA_AGENT_MODULES`` environment variable (comma-separated module
names, imported on the first registry lookup; see docs/extending.md).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from omega.agents.muzero.config import MuZeroConfig
from omega.agents.ppo.config import PPOConfig
from omega.errors import ConfigError

if TYPE_CHECKING:
    from omega.agents.parallel import DataParallel

AGENT_MODULES_ENV = "OMEGA_AGENT_MODULES"
RANDOM_ROLLOUT_LENGTH = 128


@dataclasses.dataclass(frozen=True)
class ReanalyzeHooks:
    """What the Ray backend's reanalyze workers need from an agent with a replay."""

    # Whether the config turns reanalyze on (e.g. muzero.reanalyze_fraction > 0).
    enabled: Callable[[Any], bool]
    # In the learner: a batch of replay steps to search (None while the replay is empty).
    sample: Callable[[Any], Any]
    # In a worker: (agent, actor params, batch) -> fresh targets.
    search: Callable[[Any, Any, Any], Any]
    # In the learner: (agent, batch, targets) -> (steps written, steps skipped).
    write: Callable[[Any, Any, Any], tuple[int, int]]
    # In the learner: stop reanalyzing inside ``learn`` (the workers do it instead).
    stop_in_learn: Callable[[Any], None]


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    """One agent type.

    ``factory(cfg, num_actions, data_parallel)`` builds the agent (an
    :class:`omega.agents.base.Agent`) from the whole :class:`~omega.config.ExperimentConfig`;
    ``data_parallel`` is a :class:`~omega.agents.parallel.DataParallel` or None.
    ``rollout_length(cfg)`` is the steps per env of each trajectory ``learn`` gets.
    ``config_cls`` is the frozen dataclass of the agent's config section, read from the
    YAML key ``section`` (default: the name); None for an agent without settings.
    ``keeps_replay``: the agent stores each env's steps as one stream (the Ray backend then
    learns from rounds of one rollout per actor and needs ``end_streams``).
    ``check(cfg)`` raises ``ValueError`` for settings that conflict across sections (the
    loader turns it into a :class:`ConfigError`).
    ``end_streams(agent, envs)`` ends the replay streams of ``envs`` (a replaced Ray actor's
    envs play new games). ``reanalyze``: hooks for the Ray backend's reanalyze workers.
    """

    name: str
    factory: Callable[[Any, int, DataParallel | None], Any]
    rollout_length: Callable[[Any], int]
    config_cls: type | None = None
    section: str | None = None
    keeps_replay: bool = False
    check: Callable[[Any], None] | None = None
    end_streams: Callable[[Any, np.ndarray], int] | None = None
    reanalyze: ReanalyzeHooks | None = None

    def __post_init__(self):
        if self.section is None and self.config_cls is not None:
            object.__setattr__(self, "section", self.name)
        if self.section is not None and self.config_cls is None:
            raise ValueError(f"agent {self.name!r}: a section needs a config_cls")
        if self.keeps_replay and self.end_streams is None:
            raise ValueError(f"agent {self.name!r} keeps a replay: give end_streams")
        if self.reanalyze is not None and not self.keeps_replay:
            raise ValueError(f"agent {self.name!r}: reanalyze needs keeps_replay")

    def settings(self, cfg: Any) -> Any:
        """The agent's config section of ``cfg`` (None without one)."""
        return None if self.section is None else getattr(cfg, self.section)


_REGISTRY: dict[str, AgentSpec] = {}
_loaded_modules: set[str] = set()


def register_agent(spec: AgentSpec, replace: bool = False) -> AgentSpec:
    """Adds ``spec``; an existing name (or section key) is an error unless ``replace``."""
    if not spec.name.isidentifier():
        raise ValueError(f"agent name {spec.name!r} must be an identifier")
    if not replace and spec.name in _REGISTRY:
        raise ValueError(f"agent_type {spec.name!r} is already registered")
    from omega.config import RESERVED_SECTIONS, ExperimentConfig

    # A top-level key of omega's own is refused, unless it is that agent's built-in field.
    field_type = typing.get_type_hints(ExperimentConfig).get(spec.section or "")
    if spec.section in RESERVED_SECTIONS and field_type is not spec.config_cls:
        raise ValueError(f"agent {spec.name!r}: section {spec.section!r} is a config section "
                         "of omega's own")
    for other in _REGISTRY.values():
        if other.name != spec.name and spec.section is not None and other.section == spec.section:
            raise ValueError(f"agent {spec.name!r}: section {spec.section!r} is agent "
                             f"{other.name!r}'s")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_agent(name: str) -> None:
    """Removes a registered agent (tests use it to clean up)."""
    _REGISTRY.pop(name, None)


def load_agent_modules() -> None:
    """Imports the modules named in ``OMEGA_AGENT_MODULES`` (each registers its agents)."""
    for name in os.environ.get(AGENT_MODULES_ENV, "").split(","):
        name = name.strip()
        if not name or name in _loaded_modules:
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"{AGENT_MODULES_ENV} names module {name!r}, which cannot be "
                              f"imported ({e}); fix the name or PYTHONPATH") from None
        _loaded_modules.add(name)


def agent_types() -> tuple[str, ...]:
    load_agent_modules()
    return tuple(_REGISTRY)


def agent_specs() -> tuple[AgentSpec, ...]:
    load_agent_modules()
    return tuple(_REGISTRY.values())


def agent_spec(name: str) -> AgentSpec:
    """The spec of ``agent_type`` ``name``; an unknown one is a :class:`ConfigError` that
    lists the known types."""
    load_agent_modules()
    spec = _REGISTRY.get(name)
    if spec is None:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"config key 'agent_type' must be one of {', '.join(_REGISTRY)}, "
                          f"got {name!r}{hint}")
    return spec


def section_specs() -> dict[str, AgentSpec]:
    """Config section key -> the spec of the agent it belongs to."""
    return {s.section: s for s in agent_specs() if s.section is not None}


# ---------------------------------------------------------------------------------------------
# The built-in agents


def _random_agent(cfg: Any, num_actions: int, data_parallel: Any) -> Any:
    from omega.agents.random import RandomAgent

    del cfg, data_parallel  # nothing to learn
    return RandomAgent(num_actions)


def _ppo_agent(cfg: Any, num_actions: int, data_parallel: Any) -> Any:
    from omega.agents.ppo import make_ppo_agent

    steps_per_update = cfg.ppo.rollout_length * cfg.env.num_envs
    total_updates = max(1, cfg.train.total_env_steps // steps_per_update)
    agent = make_ppo_agent(cfg.ppo, cfg.model, num_actions, total_updates)
    if data_parallel is not None:
        agent.use_data_parallel(data_parallel)
    return agent


def _muzero_agent(cfg: Any, num_actions: int, data_parallel: Any) -> Any:
    from omega.agents.muzero import make_muzero_agent

    agent = make_muzero_agent(cfg.muzero, cfg.model, num_actions, cfg.train.total_env_steps)
    if data_parallel is not None:
        agent.use_data_parallel(data_parallel)
    return agent


def check_muzero(cfg: Any) -> None:
    """The MuZero settings that depend on other sections (the encoder, the Ray backend)."""
    from omega.agents.muzero.config import check_encoder

    check_encoder(cfg.muzero, cfg.model)
    workers = cfg.distributed.num_reanalyze_workers
    if workers and cfg.muzero.reanalyze_fraction == 0:
        raise ValueError(f"config key 'distributed.num_reanalyze_workers' ({workers}) needs "
                         "reanalyze on: set muzero.reanalyze_fraction > 0, or set "
                         "num_reanalyze_workers to 0")


def _muzero_search(agent: Any, params: Any, batch: Any) -> Any:
    import jax

    return agent.search_targets(jax.device_put(params.net), batch)


def _muzero_write(agent: Any, batch: Any, targets: Any) -> tuple[int, int]:
    written = agent.write_search_targets(batch.env, batch.time, *targets)
    return written, len(batch.env) - written


def _muzero_stop_reanalyze(agent: Any) -> None:
    agent.reanalyze_in_learn = False


MUZERO_REANALYZE = ReanalyzeHooks(
    enabled=lambda cfg: cfg.muzero.reanalyze_fraction > 0,
    sample=lambda agent: agent.sample_reanalyze_batch() if len(agent.replay) else None,
    search=_muzero_search,
    write=_muzero_write,
    stop_in_learn=_muzero_stop_reanalyze,
)

register_agent(AgentSpec(name="random", factory=_random_agent,
                         rollout_length=lambda cfg: RANDOM_ROLLOUT_LENGTH))
register_agent(AgentSpec(name="ppo", factory=_ppo_agent, config_cls=PPOConfig,
                         rollout_length=lambda cfg: cfg.ppo.rollout_length))
register_agent(AgentSpec(
    name="muzero", factory=_muzero_agent, config_cls=MuZeroConfig,
    rollout_length=lambda cfg: cfg.muzero.rollout_length, keeps_replay=True,
    check=check_muzero, end_streams=lambda agent, envs: agent.replay.end_streams(envs),
    reanalyze=MUZERO_REANALYZE))

"""Experiment configuration: YAML files validated into typed, frozen dataclasses.

Every key is documented in ``docs/configuration.md``. Validation is strict: an unknown key,
a value of the wrong type or out of range, or an unknown env id raises :class:`ConfigError`
with one line naming the key and the fix. A file may derive from another with
``base: other.yaml`` (:func:`load_config_data`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from omega.agents.muzero.config import MuZeroConfig
from omega.agents.ppo.config import PPOConfig
from omega.errors import ConfigError
from omega.models.encoders import EncoderConfig

OBSERVATION_KEYS = ("glyphs", "glyphs_crop", "glyphs_coarse", "visited_crop", "blstats",
                    "message")
# Env constructor kwargs omega sets itself (omega.envs.make), and the keys that set them.
OMEGA_ENV_KWARGS = {"observation_keys": "env.observation.keys",
                    "actions": "env.action_set or env.extra_actions", "savedir": "record.every_n_episodes",
                    "save_ttyrec_every": "record.every_n_episodes"}


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"min": lo, "max": hi}


@dataclasses.dataclass(frozen=True)
class ObservationConfig:
    keys: tuple[str, ...] = ("glyphs_crop", "blstats")  # subset of OBSERVATION_KEYS
    crop_size: int = dataclasses.field(default=9, metadata=_range(3, 79))


@dataclasses.dataclass(frozen=True)
class RewardShapingConfig:
    step_penalty: float = dataclasses.field(default=0.0, metadata=_range(0.0))
    success_bonus: float = dataclasses.field(default=0.0, metadata=_range(0.0))
    # Per NetHack experience point gained (a kill bonus at experience level 1).
    experience_bonus: float = dataclasses.field(default=0.0, metadata=_range(0.0))
    # The first time in an episode the hero stands on a cell (an exploration bonus).
    new_cell_bonus: float = dataclasses.field(default=0.0, metadata=_range(0.0))


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    id: str = "MiniHack-Room-5x5-v0"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra kwargs for the env
    num_envs: int = dataclasses.field(default=16, metadata=_range(1, 4096))
    num_workers: int = dataclasses.field(default=2, metadata=_range(1, 256))
    max_episode_steps: int | None = dataclasses.field(default=None, metadata=_range(1))
    step_timeout_s: float = dataclasses.field(default=120.0, metadata=_range(1.0))
    # "default": the env's own action set; "full": every NetHack keyboard command (the set
    # NetHackChallenge-v0 always uses, len(nle.nethack.ACTIONS)).
    action_set: Literal["default", "full"] = "default"
    # NetHack actions added after the env's own, by name (omega.envs.ACTION_NAMES), e.g.
    # [SEARCH]: a way to wait a turn, which MiniHack's navigation tasks leave out.
    extra_actions: tuple[str, ...] = ()
    observation: ObservationConfig = dataclasses.field(default_factory=ObservationConfig)
    reward_shaping: RewardShapingConfig = dataclasses.field(default_factory=RewardShapingConfig)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    total_env_steps: int = dataclasses.field(default=50_000, metadata=_range(1))
    checkpoint_every_steps: int = dataclasses.field(default=10_000, metadata=_range(1))
    # Older checkpoints are deleted; keep more to evaluate a run at several budgets
    # (benchmarks/eval_curve.py).
    keep_checkpoints: int = dataclasses.field(default=3, metadata=_range(1))
    log_every_steps: int = dataclasses.field(default=2_048, metadata=_range(1))
    # Learn from rollout k on a thread while acting rollout k + 1: one update of policy lag.
    async_learning: bool = False
    # A time limit for the training envs only, on top of env.max_episode_steps (which
    # evaluation keeps): more episode starts per env step while episodes mostly fail. Hitting
    # it is a truncation, bootstrapped, not a terminal state.
    max_episode_steps: int | None = dataclasses.field(default=None, metadata=_range(1))
    # Agents with a replay buffer (MuZero): save it with each checkpoint and load it on
    # resume, so a resumed run trains again at once instead of refilling warmup_steps.
    checkpoint_replay: bool = True


@dataclasses.dataclass(frozen=True)
class RecordConfig:
    every_n_episodes: int = dataclasses.field(default=100, metadata=_range(0))  # per env; 0 = off
    max_files: int = dataclasses.field(default=20, metadata=_range(1))  # oldest are deleted


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    episodes: int = dataclasses.field(default=100, metadata=_range(1))
    seed: int = dataclasses.field(default=1_000_000, metadata=_range(0))
    num_envs: int = dataclasses.field(default=8, metadata=_range(1, 4096))
    greedy: bool = True


@dataclasses.dataclass(frozen=True)
class WandbConfig:
    project: str = "omega"
    entity: str | None = None
    mode: Literal["online", "offline"] = "offline"


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """The Ray backend (``omega run --backend ray``, docs/distributed.md)."""

    num_actors: int = dataclasses.field(default=2, metadata=_range(1, 1024))
    # Trajectories acted with params more than this many updates older than the learner's
    # are dropped (and counted in metrics.csv's dropped_stale column).
    max_policy_lag: int = dataclasses.field(default=2, metadata=_range(0))
    # Dead or failed Ray actors replaced over a run before it stops with an error.
    max_actor_restarts: int = dataclasses.field(default=10, metadata=_range(0))
    # MuZero only: Ray actors that reanalyze replay steps with the newest params while the
    # learner trains (muzero.reanalyze_fraction > 0 turns reanalyze on; 0 here keeps it in
    # the learner). The local backend ignores it.
    num_reanalyze_workers: int = dataclasses.field(default=0, metadata=_range(0, 1024))


# Marks ExperimentConfig's field of the agent sections it has no field of its own for.
_AGENT_SECTIONS = "agent_sections"


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """The whole config. ``agent_type`` names a registered agent (:mod:`omega.agents.registry`);
    each agent's section has its dataclass: ``ppo`` and ``muzero`` are fields, a section of
    an agent registered by a plugin (``cfg.<section>`` too) lives in ``extra_agents``."""

    agent_type: str = "random"
    seed: int = dataclasses.field(default=0, metadata=_range(0))
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    record: RecordConfig = dataclasses.field(default_factory=RecordConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    model: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    ppo: PPOConfig = dataclasses.field(default_factory=PPOConfig)
    muzero: MuZeroConfig = dataclasses.field(default_factory=MuZeroConfig)
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    # Section key -> parsed section of a plugin agent (written as top-level keys, never as
    # this one): the active agent's always, other agents' when the file sets them.
    extra_agents: dict[str, Any] = dataclasses.field(default_factory=dict,
                                                     metadata={_AGENT_SECTIONS: True})

    def __getattr__(self, name: str) -> Any:  # only called when no attribute has the name
        extra = self.__dict__.get("extra_agents")
        if name.startswith("__") or extra is None:
            raise AttributeError(name)
        if name in extra:
            return extra[name]
        from omega.agents.registry import section_specs

        spec = section_specs().get(name)
        if spec is None:
            raise AttributeError(f"'ExperimentConfig' object has no attribute {name!r}")
        return spec.config_cls()


# Top-level keys no agent may take for its section.
RESERVED_SECTIONS = frozenset(f.name for f in dataclasses.fields(ExperimentConfig)
                              if not f.metadata.get(_AGENT_SECTIONS)) | {"base"}


def __getattr__(name: str) -> Any:
    if name == "AGENT_TYPES":  # the registered agent types, plugins' included
        from omega.agents.registry import agent_types

        return agent_types()
    raise AttributeError(f"module 'omega.config' has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# Validation


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a finite number", bool: "true or false",
            str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` and returns it in canonical form."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of keys, got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"config key '{key}' must have {len(args)} items, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{key}' must be null, got {value!r}")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        # NaN slips past every range check (all comparisons are false) and inf past the
        # open-ended ones; neither is a usable setting.
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported config annotation {tp!r} for '{key}'")
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else (
                "valid keys: " + ", ".join(fields))
            raise ConfigError(f"unknown config key '{prefix}{key}'; {hint}")
    kwargs = {}
    for name, field in fields.items():
        if name not in data:
            continue
        value = _coerce(data[name], hints[name], prefix + name)
        lo, hi = field.metadata.get("min"), field.metadata.get("max")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                bounds = f">= {lo}" if hi is None else (
                    f"<= {hi}" if lo is None else f"between {lo} and {hi}")
                raise ConfigError(f"config key '{prefix}{name}' must be {bounds}, got {value!r}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid config section '{prefix.rstrip('.') or 'top level'}': {e}") from None


def _check_semantics(cfg: ExperimentConfig) -> None:
    from omega.agents.registry import agent_spec, agent_specs

    spec = agent_spec(cfg.agent_type)
    # Settings that conflict across sections: the agent's check is the one place for them.
    if spec.check is not None:
        try:
            spec.check(cfg)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    workers = cfg.distributed.num_reanalyze_workers
    if workers and spec.reanalyze is None:
        able = " or ".join(s.name for s in agent_specs() if s.reanalyze is not None)
        raise ConfigError(f"config key 'distributed.num_reanalyze_workers' ({workers}) needs "
                          f"agent_type {able} (agent_type {cfg.agent_type} has no replay to "
                          "reanalyze); set it to 0")
    for key in cfg.env.options:
        if key in OMEGA_ENV_KWARGS:
            raise ConfigError(f"config key 'env.options.{key}' is set by omega; "
                              f"use {OMEGA_ENV_KWARGS[key]} instead")
    if cfg.env.extra_actions:
        from omega.envs import check_extra_actions

        check_extra_actions(cfg.env.extra_actions, cfg.env.action_set)
    for key in cfg.env.observation.keys:
        if key not in OBSERVATION_KEYS:
            raise ConfigError(
                f"config key 'env.observation.keys' has unknown key {key!r}; "
                f"choose from {', '.join(OBSERVATION_KEYS)}")
    if not cfg.env.observation.keys:
        raise ConfigError("config key 'env.observation.keys' must name at least one observation")
    if ("visited_crop" in cfg.env.observation.keys
            and "glyphs_crop" not in cfg.model.map_keys):
        raise ConfigError(
            "config key 'env.observation.keys' has 'visited_crop', which the encoder reads "
            f"with the glyph crop, but model.map is {cfg.model.map!r}; set model.map to "
            "'crop' or 'both' (with 'glyphs_crop' in the keys), or drop 'visited_crop'")
    if cfg.env.num_workers > cfg.env.num_envs:
        raise ConfigError(
            f"config key 'env.num_workers' ({cfg.env.num_workers}) must be <= env.num_envs "
            f"({cfg.env.num_envs})")
    from omega.envs import registered_env_ids

    known = registered_env_ids()
    if cfg.env.id not in known:
        close = difflib.get_close_matches(cfg.env.id, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "run 'omega envs' to list the ids"
        raise ConfigError(f"config key 'env.id': unknown environment {cfg.env.id!r}; {hint}")


def config_from_dict(data: dict[str, Any] | None) -> ExperimentConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("a config file must be a YAML mapping of keys, e.g. 'agent_type: ppo'")
    cfg = _build_experiment(data)
    _check_semantics(cfg)
    return cfg


def _build_experiment(data: dict[str, Any]) -> ExperimentConfig:
    """:func:`_build` for the top level: a registered agent's section key without a field
    of its own (a plugin's) is parsed into its dataclass, into ``extra_agents``."""
    from omega.agents.registry import section_specs

    sections = section_specs()
    own = [f.name for f in dataclasses.fields(ExperimentConfig)
           if not f.metadata.get(_AGENT_SECTIONS)]
    known = own + [key for key in sections if key not in own]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "valid keys: " + ", ".join(known)
            raise ConfigError(f"unknown config key '{key}'; {hint}")
    extra = {key: _coerce(data[key], spec.config_cls, key) for key, spec in sections.items()
             if key not in own and key in data}
    cfg = _build(ExperimentConfig, {k: v for k, v in data.items() if k in own})
    for key, spec in sections.items():
        if spec.name == cfg.agent_type and key not in own:
            extra.setdefault(key, spec.config_cls())  # config.yaml lists all the active agent's keys
    return dataclasses.replace(cfg, extra_agents=extra) if extra else cfg


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first_line: int, line: int):
        super().__init__(f"duplicate key {key!r}")
        self.key, self.first_line, self.line = key, first_line, line


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (PyYAML keeps the
    last one without a word)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node.start_mark.line + 1)
        except TypeError:  # an unhashable key: SafeLoader reports it
            continue
        if first != key_node.start_mark.line + 1:
            raise _DuplicateKey(key, first, key_node.start_mark.line + 1)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


BASE_KEY = "base"


def _read_mapping(path: Path) -> dict[str, Any]:
    """The YAML mapping of one config file, as written (a ``base`` key not yet resolved)."""
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found; pass an existing YAML file "
                          "(see configs/ for examples)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte 0x{raw[e.start]:02x} "
                          f"at line {line}); save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as e:
        raise ConfigError(f"config file '{path}' has the key {e.key!r} twice in one mapping "
                          f"(lines {e.first_line} and {e.line}); YAML would keep the last one "
                          "silently: delete one") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}; fix the syntax") from None
    if data is None:
        raise ConfigError(f"config file '{path}' is empty (or only comments); write the keys "
                          "to set, e.g. 'agent_type: ppo' (docs/configuration.md), or '{}' "
                          "for every default")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a YAML mapping of keys, e.g. "
                          "'agent_type: ppo'")
    return data


def merge_config_data(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` on top: mappings merge key by key, any other value (a number,
    a string, a list) replaces the base's."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config_data(out[key], value)
        else:
            out[key] = value
    return out


def load_config_data(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The config mapping of a file with its ``base`` chain resolved: a file that says
    ``base: other.yaml`` (a path relative to its own folder) is ``other.yaml``'s mapping with
    its own keys merged on top (:func:`merge_config_data`). Not yet validated."""
    path = Path(path)
    data = _read_mapping(path)
    if BASE_KEY not in data:
        return data
    base = data.pop(BASE_KEY)
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: config key '{BASE_KEY}' must be the path of another config "
                          f"file (relative to {path.parent or '.'}), got {base!r}")
    base_path = path.parent / base
    here = path.resolve()
    chain = (*_chain, here)
    if base_path.resolve() in chain:
        names = " -> ".join(str(p) for p in (*chain, base_path.resolve()))
        raise ConfigError(f"{path}: config key '{BASE_KEY}' makes a loop ({names}); "
                          "one of these files must not name a base")
    if not base_path.is_file():
        raise ConfigError(f"{path}: config key '{BASE_KEY}': '{base}' not found (looked for "
                          f"'{base_path}'); the path is relative to the file's folder")
    return merge_config_data(load_config_data(base_path, chain), data)


def load_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    data = load_config_data(path)
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            out = {}
            for f in dataclasses.fields(value):
                if f.metadata.get(_AGENT_SECTIONS):  # plugin agents' sections: top-level keys
                    out.update(convert(getattr(value, f.name)))
                else:
                    out[f.name] = convert(getattr(value, f.name))
            return out
        if isinstance(value, tuple):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(cfg)


def config_to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


_ADDED_LATER: dict[str, tuple[str, ...]] = {
    "env": ("action_set", "extra_actions", "reward_shaping.experience_bonus",
            "reward_shaping.new_cell_bonus"),
    "ppo": ("entropy_schedule", "entropy_coef_final"),
    "muzero": ("consistency_loss_weight", "reanalyze_fraction", "reanalyze_batch_size",
               "stochastic", "num_chance_outcomes", "afterstate_value_loss_weight",
               "chance_loss_weight", "commitment_loss_weight", "code_usage_weight",
               "burn_in_steps", "refresh_memory", "burn_in_gradient", "reward_head",
               "priority_reward_weight", "gumbel_value_scale", "gumbel_rescale_values",
               "policy_entropy_weight", "policy_gradient_weight",
               "policy_gradient_normalize", "policy_gradient_steps", "eval_params_ema",
               "policy_gradient_fade_until",
               "gumbel_q_floor", "gumbel_q_stats", "target_update_interval",
               "reanalyze_with_target", "reanalyze_write_back", "diagnostics_interval",
               "support_step", "eval_temperature"),
    # Not hashed anyway (the distributed section never is); listed to keep that explicit.
    "distributed": ("num_reanalyze_workers",),
}


def _field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _plain(value: Any) -> Any:
    """A default as config_to_dict writes values (tuples become lists)."""
    return json.loads(json.dumps(value))


# Sections that shape neither parameters nor training: the step budget may change between
# resumes, and how acting is spread out is not what is learned.
_UNHASHED = ("train", "wandb", "record", "eval", "distributed")
# The agent sections every hash covered before only the active agent's was hashed.
_LEGACY_SECTIONS = ("ppo", "muzero")


class ConfigHash(str):
    """A config hash (16 hex digits). ``legacy`` is the same config's hash as omega computed
    it before it hashed only the active agent's section (the ``ppo`` section always, and
    ``muzero`` for MuZero): what the checkpoints of experiments made then store."""

    legacy: str

    def __new__(cls, value: str, legacy: str | None = None) -> ConfigHash:
        self = super().__new__(cls, value)
        self.legacy = value if legacy is None else legacy
        return self


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def config_hash(cfg: ExperimentConfig) -> ConfigHash:
    """Hash of everything that shapes parameters and training; stored in checkpoints: the
    non-agent sections and the active agent's section only (another agent's defaults can
    change without touching this experiment's hash)."""
    data = _without_added_defaults(cfg)
    for section in _UNHASHED:
        data.pop(section, None)
    current = _active_sections(cfg, data)
    sections = _agent_sections()
    legacy = {k: v for k, v in data.items() if k not in sections or k in _LEGACY_SECTIONS}
    if cfg.agent_type != "muzero":
        legacy.pop("muzero", None)
    return ConfigHash(_digest(current), legacy=_digest(legacy))


def run_identity_hash(cfg: ExperimentConfig) -> str:
    """Hash of everything that makes a run what it is, budget and eval settings included:
    like :func:`config_hash` it leaves out the other agents' sections and keys added later
    at their defaults, so a finished suite run stays finished when another agent's defaults
    change."""
    return _digest(_active_sections(cfg, _without_added_defaults(cfg)))


def _agent_sections() -> set[str]:
    from omega.agents.registry import section_specs

    return set(section_specs())


def _active_sections(cfg: ExperimentConfig, data: dict[str, Any]) -> dict[str, Any]:
    from omega.agents.registry import agent_spec

    active = agent_spec(cfg.agent_type).section
    sections = _agent_sections()
    return {k: v for k, v in data.items() if k not in sections or k == active}


def _without_added_defaults(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as a dict, less the keys added after experiments already existed while
    they are at their defaults: those experiments keep resuming and evaluating after an
    upgrade."""
    data = config_to_dict(cfg)
    for section, keys in _ADDED_LATER.items():
        for key in keys:
            # A dotted key is nested: "reward_shaping.experience_bonus" in env.
            *parents, name = key.split(".")
            obj, values = getattr(cfg, section), data.get(section, {})
            for parent in parents:
                obj, values = getattr(obj, parent), values.get(parent, {})
            fields = {f.name: f for f in dataclasses.fields(type(obj))}
            if name in values and values[name] == _plain(_field_default(fields[name])):
                values.pop(name)
    return data

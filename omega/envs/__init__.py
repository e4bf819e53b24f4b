"""Environments: any NLE or MiniHack id, plus omega's own diagnostic tasks.

``make(env_id, ...)`` returns a gymnasium env whose observations follow
:class:`omega.envs.wrappers.ObservationSpec`, whose ``reset(seed=...)`` really seeds the
game, and whose time limit is reported as truncation.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import minihack  # noqa: F401  (registers the MiniHack ids)
import nle  # noqa: F401  (registers the NetHack ids)
from nle import nethack

from omega.envs import tasks  # noqa: F401  (registers the Omega-* ids)
from omega.envs.wrappers import (
    NetHackSeeding,
    ObservationSpec,
    RewardShaping,
    TimeLimitIsTruncation,
    raw_keys_for,
)
from omega.errors import ConfigError

ENV_PREFIXES = ("NetHack", "MiniHack-", "Omega-")
ACTION_SETS = ("default", "full")
# Every NetHack keyboard command by name: "SEARCH", "PRAY", or qualified by its enum
# ("CompassDirectionLonger.N") where a bare name is ambiguous; a bare compass name is the
# one-step move, as in the env's own sets.
ACTION_NAMES: dict[str, Any] = {}
for _action in nethack.ACTIONS:
    ACTION_NAMES[f"{type(_action).__name__}.{_action.name}"] = _action
    ACTION_NAMES.setdefault(_action.name, _action)
# Tasks that can end with a penalty. MiniHack's end status says "successful" whenever an
# episode reaches one of the level's endings, right or wrong (on Memento-Short-F2 a uniformly
# random policy scores 1.00 by it), so on these a success is an episode that ends with a final
# reward > 0 (the env's own reward, before env.reward_shaping).
SUCCESS_FROM_REWARD_PREFIXES = ("MiniHack-Memento-", "Omega-AvoidFuzzyBear-", "Omega-Retreat-",
                                "Omega-Memory-")


def success_from_reward(env_id: str) -> bool:
    """Whether ``env_id``'s success is its final reward > 0 rather than its end status."""
    return env_id.startswith(SUCCESS_FROM_REWARD_PREFIXES)


def registered_env_ids() -> list[str]:
    """Every NLE, MiniHack and omega env id known to gymnasium."""
    return sorted(k for k in gym.registry if k.startswith(ENV_PREFIXES))


def constructor_options(env_id: str) -> list[str]:
    """The keyword arguments the constructors of ``env_id``'s class (and its bases, which
    NLE and MiniHack pass ``**kwargs`` on to) name; [] when that cannot be read."""
    try:
        from gymnasium.envs.registration import load_env_creator

        entry = gym.registry[env_id].entry_point
        creator = load_env_creator(entry) if isinstance(entry, str) else entry
        functions = ([vars(k)["__init__"] for k in inspect.getmro(creator)
                      if "__init__" in vars(k)] if inspect.isclass(creator) else [creator])
        names: list[str] = []
        for fn in functions:
            for p in inspect.signature(fn).parameters.values():
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self" \
                        and p.name not in names:
                    names.append(p.name)
        return names
    except Exception:  # an entry point we cannot inspect: no hint, not an error
        return []


def options_error(env_id: str, options: dict[str, Any], error: Exception) -> str:
    """One line for an env that its ``env.options`` could not build."""
    m = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    if isinstance(error, TypeError) and m:
        close = difflib.get_close_matches(m.group(1), constructor_options(env_id), n=1)
        hint = f"did you mean '{close[0]}'?" if close else "see the env's constructor for its options"
        return f"config key 'env.options.{m.group(1)}': {env_id} takes no such option; {hint}"
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return (f"config key 'env.options': {env_id} cannot be made with {options} "
            f"({type(error).__name__}: {first}); fix or remove the option")


def resolve_actions(names: Sequence[str]) -> tuple[Any, ...]:
    """The NetHack actions ``names`` stand for (:data:`ACTION_NAMES`); a ValueError naming
    the first unknown or repeated name."""
    actions = []
    for name in names:
        if name not in ACTION_NAMES:
            close = difflib.get_close_matches(name, list(ACTION_NAMES), n=1)
            hint = (f"did you mean '{close[0]}'?" if close else
                    "use a name from nle.nethack.ACTIONS, e.g. SEARCH, PRAY or KICK")
            raise ValueError(f"unknown NetHack action {name!r}; {hint}")
        if ACTION_NAMES[name] in actions:
            raise ValueError(f"NetHack action {name!r} is listed twice")
        actions.append(ACTION_NAMES[name])
    return tuple(actions)


def check_extra_actions(names: Sequence[str], action_set: str) -> tuple[Any, ...]:
    """``env.extra_actions`` resolved (:func:`resolve_actions`), or a :class:`ConfigError`
    naming the key: an unknown or repeated name, or extras beside the full set."""
    if action_set != "default":
        raise ConfigError(f"config key 'env.extra_actions' needs env.action_set 'default' (the "
                          f"{action_set!r} set has every action already); remove one of them")
    try:
        return resolve_actions(names)
    except ValueError as e:
        raise ConfigError(f"config key 'env.extra_actions': {e}") from None


_OWN_ACTIONS: dict[tuple[str, str], tuple[Any, ...]] = {}


def own_actions(env_id: str, options: dict[str, Any]) -> tuple[Any, ...]:
    """``env_id``'s own action set (MiniHack's differ by task and are only known once the env
    is built): built once per process and options, then remembered."""
    key = (env_id, repr(sorted(options.items())))
    if key not in _OWN_ACTIONS:
        env = gym.make(env_id, disable_env_checker=True, savedir=None,
                       observation_keys=("blstats",), **options)
        try:
            _OWN_ACTIONS[key] = tuple(env.unwrapped.actions)
        finally:
            env.close()
    return _OWN_ACTIONS[key]


def make(
    env_id: str,
    *,
    observation_keys: Sequence[str] = ("glyphs_crop", "blstats"),
    crop_size: int = 9,
    step_penalty: float = 0.0,
    success_bonus: float = 0.0,
    experience_bonus: float = 0.0,
    new_cell_bonus: float = 0.0,
    max_episode_steps: int | None = None,
    record_dir: str | os.PathLike | None = None,
    record_every: int = 0,
    action_set: str = "default",
    extra_actions: Sequence[str] = (),
    **options: Any,
) -> gym.Env:
    """Builds ``env_id`` with omega's observation spec.

    Args:
      observation_keys: any of ``glyphs``, ``glyphs_crop``, ``glyphs_coarse``,
        ``visited_crop``, ``blstats``, ``message``
        (:class:`~omega.envs.wrappers.ObservationSpec`).
      crop_size: side of the ``glyphs_crop``, ``glyphs_coarse`` and ``visited_crop`` windows
        centred on the agent (``glyphs_coarse`` covers 3x as many cells each way).
      step_penalty, success_bonus, experience_bonus, new_cell_bonus: reward shaping (off by
        default; see :class:`~omega.envs.wrappers.RewardShaping`).
      max_episode_steps: an extra time limit (reported as truncation), on top of the env's own.
      record_dir, record_every: write every ``record_every``-th episode as an NLE ttyrec.
      action_set: ``default`` (the env's own actions) or ``full`` (all of
        ``nle.nethack.ACTIONS``, the whole keyboard).
      extra_actions: NetHack actions by name (:data:`ACTION_NAMES`, e.g. ``SEARCH``) added
        after the env's own, with ``action_set`` ``default``.
      options: passed to the env constructor (e.g. ``size`` for ``Omega-RandomRoom-v0``).
    """
    if env_id not in gym.registry:
        raise ValueError(f"unknown environment {env_id!r}; run 'omega envs' to list the ids")
    if action_set not in ACTION_SETS:
        raise ValueError(f"action_set must be one of {', '.join(ACTION_SETS)}, got {action_set!r}")
    kwargs = dict(options)
    raw_keys = set(raw_keys_for(observation_keys))
    if experience_bonus or new_cell_bonus:
        raw_keys.add("blstats")  # the shaping reads the hero's experience and cell from it
    kwargs["observation_keys"] = tuple(sorted(raw_keys))
    # NetHackChallenge fixes its actions to the full keyboard and rejects an 'actions' kwarg.
    if action_set == "full" and not env_id.startswith("NetHackChallenge"):
        kwargs["actions"] = nethack.ACTIONS
    if extra_actions:
        extras = check_extra_actions(extra_actions, action_set)
        own = own_actions(env_id, options)
        already = [n for n, a in zip(extra_actions, extras, strict=True) if a in own]
        if already:
            raise ConfigError(f"config key 'env.extra_actions': {env_id} has {already[0]!r} "
                              "among its own actions already; remove it from the list")
        kwargs["actions"] = own + extras
    if record_dir is not None and record_every > 0:
        Path(record_dir).mkdir(parents=True, exist_ok=True)
        kwargs["savedir"] = str(record_dir)
        kwargs["save_ttyrec_every"] = int(record_every)
    else:
        kwargs["savedir"] = None
    env = gym.make(env_id, disable_env_checker=True, **kwargs)
    if kwargs["savedir"] is not None:
        # NLE names NetHack's score files after the recording (nle.<pid>.*) but creates only the
        # xlogfile; without the other two every end-of-game screen in a recording reads
        # "Cannot open file .../nle.<pid>.logfile. Is NetHack installed correctly?".
        for name in ("logfile", "record"):
            (Path(kwargs["savedir"]) / f"nle.{os.getpid()}.{name}").touch()
    if action_set == "full" and env.action_space.n != len(nethack.ACTIONS):
        env.close()
        raise ValueError(f"{env_id} does not take the full action set ({env.action_space.n} "
                         f"actions, not {len(nethack.ACTIONS)}); use env.action_set: default")
    env = NetHackSeeding(env)
    env = TimeLimitIsTruncation(env, success_from_reward=success_from_reward(env_id))
    if max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=max_episode_steps)
    if step_penalty or success_bonus or experience_bonus or new_cell_bonus:
        env = RewardShaping(env, step_penalty=step_penalty, success_bonus=success_bonus,
                            experience_bonus=experience_bonus, new_cell_bonus=new_cell_bonus)
    return ObservationSpec(env, observation_keys, crop_size)


@dataclasses.dataclass(frozen=True)
class EnvFactory:
    """A picklable ``index -> env`` builder for worker processes.

    Env ``i`` records into ``record_root/env_{i:03d}`` (NLE names its files by process id and
    episode number, so envs sharing a process need separate directories).
    """

    env_id: str
    observation_keys: tuple[str, ...] = ("glyphs_crop", "blstats")
    crop_size: int = 9
    step_penalty: float = 0.0
    success_bonus: float = 0.0
    experience_bonus: float = 0.0
    new_cell_bonus: float = 0.0
    max_episode_steps: int | None = None
    record_root: str | None = None
    record_every: int = 0
    action_set: str = "default"
    extra_actions: tuple[str, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()

    def __call__(self, index: int) -> gym.Env:
        record_dir = None
        if self.record_root is not None and self.record_every > 0:
            record_dir = os.path.join(self.record_root, f"env_{index:03d}")
        return make(
            self.env_id,
            observation_keys=self.observation_keys,
            crop_size=self.crop_size,
            step_penalty=self.step_penalty,
            success_bonus=self.success_bonus,
            experience_bonus=self.experience_bonus,
            new_cell_bonus=self.new_cell_bonus,
            max_episode_steps=self.max_episode_steps,
            record_dir=record_dir,
            record_every=self.record_every,
            action_set=self.action_set,
            extra_actions=self.extra_actions,
            **dict(self.options),
        )

    @classmethod
    def from_config(cls, env_cfg: Any, record_root: str | None = None,
                    record_every: int = 0) -> EnvFactory:
        return cls(
            env_id=env_cfg.id,
            observation_keys=tuple(env_cfg.observation.keys),
            crop_size=env_cfg.observation.crop_size,
            step_penalty=env_cfg.reward_shaping.step_penalty,
            success_bonus=env_cfg.reward_shaping.success_bonus,
            experience_bonus=env_cfg.reward_shaping.experience_bonus,
            new_cell_bonus=env_cfg.reward_shaping.new_cell_bonus,
            max_episode_steps=env_cfg.max_episode_steps,
            record_root=record_root,
            record_every=record_every,
            action_set=env_cfg.action_set,
            extra_actions=tuple(env_cfg.extra_actions),
            options=tuple(sorted(env_cfg.options.items())),
        )


__all__ = ["ACTION_NAMES", "EnvFactory", "SUCCESS_FROM_REWARD_PREFIXES", "check_extra_actions",
           "constructor_options", "make", "options_error", "own_actions", "registered_env_ids", "resolve_actions",
           "success_from_reward"]

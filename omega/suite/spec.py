"""Suite files: which configs, seeds and budgets ``omega suite`` trains and evaluates.

A suite is a YAML mapping::

    name: quick                      # default: the file's stem
    output_dir: experiments/suites/quick   # default: experiments/suites/<name>
    seeds: [0, 1, 2]                 # every entry's seeds unless it names its own
    budget: {ppo: 1000000, muzero: 500000}   # training env steps per agent_type
    checkpoints: 10                  # evaluations per run: every budget/10 env steps, and the end
    eval: {episodes: 100, seed: 1000000}     # the fixed eval episodes: seeds 1000000..1000099
    baselines: true                  # also evaluate a uniformly random policy on every task
    overrides: {env.num_envs: 8}     # config keys set in every entry (dotted or nested)
    runs:
      - config: ../ppo/room_5x5.yaml # relative to the suite file's folder
        name: ppo/room_5x5           # default: <agent_type>/<config file stem>
        seeds: [0]                   # optional
        budget: 50000                # optional
        overrides: {ppo.learning_rate: 0.001}   # optional

Every entry's config is resolved here (its ``base`` chain, the suite's and the entry's
overrides, then the seed, budget, checkpoint cadence and eval episodes that the suite sets)
and validated like ``omega make`` would, so a bad entry stops the suite before anything
trains, with one line naming the suite file, the entry and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from pathlib import Path
from typing import Any

from omega.config import (
    _read_mapping,
    config_from_dict,
    config_to_dict,
    load_config_data,
    merge_config_data,
)
from omega.errors import ConfigError

DEFAULT_OUTPUT_ROOT = Path("experiments") / "suites"
SUITE_KEYS = ("name", "output_dir", "seeds", "budget", "checkpoints", "eval", "baselines",
              "overrides", "runs")
RUN_KEYS = ("config", "name", "seeds", "budget", "overrides")
EVAL_KEYS = ("episodes", "seed")
# Config keys the suite sets itself, and the suite key that sets each.
SUITE_SET_KEYS = {
    "seed": "seeds",
    "train.total_env_steps": "budget",
    "train.checkpoint_every_steps": "checkpoints",
    "train.keep_checkpoints": "checkpoints",
    "eval.episodes": "eval.episodes",
    "eval.seed": "eval.seed",
}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One (config, seed) run of a suite."""

    name: str  # the entry's name, e.g. "ppo/room_5x5"
    seed: int
    config_file: str  # the entry's config file, as the suite names it
    agent_type: str
    env_id: str
    budget: int
    config: dict[str, Any]  # the resolved, validated config (config_to_dict form)
    spec_hash: str  # hash of ``config``: a changed config is a different run

    @property
    def run_id(self) -> str:
        return f"{self.name}/seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class BaselineSpec:
    """A uniformly random policy evaluated on one task (as its first entry sets it up)."""

    env_id: str
    config: dict[str, Any]
    spec_hash: str

    @property
    def run_id(self) -> str:
        return f"random/{self.env_id}"


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    output_dir: Path
    eval_episodes: int
    eval_seed: int
    checkpoints: int
    runs: tuple[RunSpec, ...]
    baselines: tuple[BaselineSpec, ...]

    def entries(self) -> list[str]:
        """Entry names in suite order."""
        return list(dict.fromkeys(r.name for r in self.runs))


def spec_hash(config: dict[str, Any]) -> str:
    """The run's identity: its validated config less the other agents' sections (and keys
    added later at their defaults), so changing one agent's defaults leaves the other
    agents' finished runs finished."""
    from omega.config import config_from_dict, run_identity_hash

    return run_identity_hash(config_from_dict(config))


def _unknown(keys: Any, allowed: tuple[str, ...], where: str) -> None:
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "valid keys: " + ", ".join(allowed)
            raise ConfigError(f"{where}: unknown key '{key}'; {hint}")


def _int(value: Any, what: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{what} must be an integer >= {lo}, got {value!r}")
    return value


def _seeds(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{what} must be a non-empty list of seeds, e.g. [0, 1, 2], got "
                          f"{value!r}")
    seeds = tuple(_int(s, f"{what} entries", 0) for s in value)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{what} names a seed twice: {list(seeds)}")
    return seeds


def _budget(value: Any, what: str) -> dict[str, int]:
    from omega.agents.registry import agent_types

    registered = agent_types()  # now, not at import: plugin agents register later
    if isinstance(value, int) and not isinstance(value, bool):
        return {agent: _int(value, what, 1) for agent in registered}
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be env steps per agent_type, e.g. {{ppo: 1000000, "
                          f"muzero: 500000}}, or one number, got {value!r}")
    _unknown(value, registered, what)
    return {agent: _int(v, f"{what}.{agent}", 1) for agent, v in value.items()}


def overrides_to_nested(overrides: Any, what: str) -> dict[str, Any]:
    """``{"ppo.learning_rate": 1e-3}`` or ``{"ppo": {"learning_rate": 1e-3}}`` -> nested."""
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{what} must be a mapping of config keys to values, e.g. "
                          f"{{ppo.learning_rate: 0.001}}, got {overrides!r}")
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"{what}: {key!r} is not a config key (e.g. 'ppo.learning_rate')")
        parts = key.split(".")
        for set_key in _flatten({key: value}):
            if set_key in SUITE_SET_KEYS:
                raise ConfigError(f"{what}: '{set_key}' is set by the suite; use its "
                                  f"'{SUITE_SET_KEYS[set_key]}' key instead")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{what}: '{key}' sets a key inside a value")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = merge_config_data(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return nested


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def checkpoint_every(budget: int, checkpoints: int) -> int:
    return max(1, math.ceil(budget / checkpoints))


@dataclasses.dataclass(frozen=True)
class _SuiteSettings:
    """A suite file's top-level settings, validated."""

    name: str
    output_dir: Path
    seeds: tuple[int, ...]  # every entry's, unless it names its own
    budget: dict[str, int]  # per agent_type, unless an entry gives its own
    checkpoints: int
    episodes: int
    eval_seed: int
    baselines: bool
    overrides: dict[str, Any]  # nested, set in every entry


def load_suite(path: str | Path, output_dir: str | Path | None = None) -> Suite:
    """Reads and validates a suite file and every config it names."""
    path = Path(path)
    try:
        data = _read_mapping(path)
    except ConfigError as e:
        raise ConfigError(str(e).replace("config file", "suite file", 1)) from None
    where = str(path)
    _unknown(data, SUITE_KEYS, where)
    s = _suite_settings(data, path, output_dir)
    entries = data.get("runs")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: 'runs' must be a non-empty list of entries like "
                          "'- config: ../ppo/room_5x5.yaml'")

    runs: list[RunSpec] = []
    names: dict[str, int] = {}
    for i, entry in enumerate(entries):
        runs.extend(_entry_runs(path, i, entry, s, names))
    base_specs = _baseline_specs(runs) if s.baselines else []
    return Suite(name=s.name, path=path, output_dir=s.output_dir, eval_episodes=s.episodes,
                 eval_seed=s.eval_seed, checkpoints=s.checkpoints, runs=tuple(runs),
                 baselines=tuple(base_specs))


def _suite_settings(data: dict[str, Any], path: Path,
                    output_dir: str | Path | None) -> _SuiteSettings:
    where = str(path)
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: 'name' must be letters, digits, '_', '-' or '.', got "
                          f"{name!r}")
    out = Path(output_dir) if output_dir is not None else Path(
        data.get("output_dir") or DEFAULT_OUTPUT_ROOT / name)
    seeds = _seeds(data["seeds"], f"{where}: 'seeds'") if "seeds" in data else (0,)
    budget = _budget(data["budget"], f"{where}: 'budget'") if "budget" in data else {}
    checkpoints = _int(data.get("checkpoints", 10), f"{where}: 'checkpoints'", 1)
    ev = data.get("eval", {}) or {}
    if not isinstance(ev, dict):
        raise ConfigError(f"{where}: 'eval' must be a mapping like {{episodes: 100, seed: "
                          f"1000000}}, got {ev!r}")
    _unknown(ev, EVAL_KEYS, f"{where}: 'eval'")
    episodes = _int(ev.get("episodes", 100), f"{where}: 'eval.episodes'", 1)
    eval_seed = _int(ev.get("seed", 1_000_000), f"{where}: 'eval.seed'", 0)
    baselines = data.get("baselines", True)
    if not isinstance(baselines, bool):
        raise ConfigError(f"{where}: 'baselines' must be true or false, got {baselines!r}")
    common = overrides_to_nested(data.get("overrides"), f"{where}: 'overrides'")
    return _SuiteSettings(name=name, output_dir=out, seeds=seeds, budget=budget,
                          checkpoints=checkpoints, episodes=episodes, eval_seed=eval_seed,
                          baselines=baselines, overrides=common)


def _entry_config(path: Path, i: int, entry: Any,
                  common: dict[str, Any]) -> tuple[str, dict[str, Any], Path, dict[str, Any]]:
    """Entry ``runs[i]``'s config with the suite's and the entry's overrides: returns where
    errors point (``at``), the entry as a mapping, its config file and the merged config."""
    where = str(path)
    at = f"{where}: runs[{i}]"
    if isinstance(entry, str):
        entry = {"config": entry}
    if not isinstance(entry, dict) or "config" not in entry:
        raise ConfigError(f"{at} must be a mapping with a 'config' key (a config file "
                          f"relative to {path.parent}), got {entry!r}")
    _unknown(entry, RUN_KEYS, at)
    if not isinstance(entry["config"], str):
        raise ConfigError(f"{at}: 'config' must be a file path, got {entry['config']!r}")
    cfg_path = path.parent / entry["config"]
    at = f"{where}: runs[{i}] ({entry['config']})"
    if not cfg_path.is_file():
        raise ConfigError(f"{at}: config file '{cfg_path}' not found; the path is relative "
                          f"to the suite file's folder ({path.parent})")
    try:
        base = load_config_data(cfg_path)
        base = merge_config_data(base, common)
        base = merge_config_data(base, overrides_to_nested(entry.get("overrides"),
                                                           "'overrides'"))
    except ConfigError as e:
        raise ConfigError(f"{at}: {e}") from None
    return at, entry, cfg_path, base


def _entry_runs(path: Path, i: int, entry: Any, s: _SuiteSettings,
                names: dict[str, int]) -> list[RunSpec]:
    """The runs of entry ``runs[i]``, one per seed; ``names`` maps the entry names taken so
    far to their index (this entry's is added)."""
    at, entry, cfg_path, base = _entry_config(path, i, entry, s.overrides)
    try:
        probe = config_from_dict(base)
    except ConfigError as e:
        raise ConfigError(f"{at}: {e}") from None
    agent = probe.agent_type
    run_budget = (_int(entry["budget"], f"{at}: 'budget'", 1) if "budget" in entry
                  else s.budget.get(agent))
    if run_budget is None:
        raise ConfigError(f"{at}: no budget for agent_type '{agent}'; add it to the "
                          f"suite's 'budget' (e.g. budget: {{{agent}: 100000}}) or give "
                          "the entry a 'budget'")
    run_name = entry.get("name") or f"{agent}/{cfg_path.stem}"
    if not isinstance(run_name, str) or not _NAME.match(run_name) or ".." in run_name:
        raise ConfigError(f"{at}: 'name' must be letters, digits, '_', '-', '.' and '/', "
                          f"got {run_name!r}")
    if run_name in names:
        raise ConfigError(f"{at}: the name '{run_name}' is taken by runs[{names[run_name]}]; "
                          "give one of them a 'name'")
    names[run_name] = i
    run_seeds = _seeds(entry["seeds"], f"{at}: 'seeds'") if "seeds" in entry else s.seeds
    runs = []
    for seed in run_seeds:
        final = merge_config_data(base, {
            "seed": seed,
            "train": {"total_env_steps": run_budget,
                      "checkpoint_every_steps": checkpoint_every(run_budget, s.checkpoints),
                      "keep_checkpoints": s.checkpoints + 2},
            "eval": {"episodes": s.episodes, "seed": s.eval_seed},
        })
        try:
            cfg = config_to_dict(config_from_dict(final))
        except ConfigError as e:
            raise ConfigError(f"{at}: {e}") from None
        runs.append(RunSpec(name=run_name, seed=seed, config_file=entry["config"],
                            agent_type=agent, env_id=probe.env.id, budget=run_budget,
                            config=cfg, spec_hash=spec_hash(cfg)))
    return runs


def _baseline_specs(runs: list[RunSpec]) -> list[BaselineSpec]:
    """A random-policy baseline per task, set up as the first run on that task is."""
    base_specs: list[BaselineSpec] = []
    seen: set[str] = set()
    for run in runs:
        if run.env_id in seen:
            continue
        seen.add(run.env_id)
        cfg = {"agent_type": "random", "seed": 0, "env": run.config["env"],
               "eval": {**run.config["eval"], "greedy": False}}
        cfg = config_to_dict(config_from_dict(cfg))
        base_specs.append(BaselineSpec(env_id=run.env_id, config=cfg,
                                       spec_hash=spec_hash(cfg)))
    return base_specs

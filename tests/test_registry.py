"""The agent registry (omega/agents/registry.py), the config sections it defines, and the
experiments made before only the active agent's section was hashed (they must resume)."""

import dataclasses
import shutil
from pathlib import Path

import pytest
from flax import serialization

from omega.agents import build_agent
from omega.agents.registry import (
    AgentSpec,
    agent_spec,
    agent_types,
    register_agent,
    unregister_agent,
)
from omega.cli.main import main
from omega.config import (
    AGENT_TYPES,
    config_from_dict,
    config_hash,
    config_to_dict,
    config_to_yaml,
    load_config,
)
from omega.errors import ConfigError

LEGACY = Path(__file__).resolve().parent / "data" / "legacy_experiments"


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    rollout_length: int = dataclasses.field(default=4, metadata={"min": 1, "max": None})
    scale: float = 1.0


@pytest.fixture
def toy():
    from omega.agents.random import RandomAgent

    def check(cfg):
        if cfg.toy.scale > 1.0 and cfg.model.recurrent:
            raise ValueError("config key 'toy.scale' must be <= 1 with model.recurrent: true")

    spec = register_agent(AgentSpec(
        name="toy", config_cls=ToyConfig, check=check,
        factory=lambda cfg, num_actions, dp: RandomAgent(num_actions),
        rollout_length=lambda cfg: cfg.toy.rollout_length))
    yield spec
    unregister_agent("toy")


def test_builtins_are_registered_with_their_sections():
    assert agent_types()[:3] == ("random", "ppo", "muzero") == AGENT_TYPES[:3]
    assert agent_spec("ppo").section == "ppo" and agent_spec("random").section is None
    assert agent_spec("muzero").keeps_replay and agent_spec("muzero").reanalyze is not None
    assert not agent_spec("ppo").keeps_replay and agent_spec("ppo").reanalyze is None
    cfg = config_from_dict({"agent_type": "ppo", "ppo": {"rollout_length": 7}})
    assert agent_spec("ppo").rollout_length(cfg) == 7
    assert agent_spec("random").rollout_length(cfg) == 128


def test_unknown_agent_type_lists_the_known_ones():
    with pytest.raises(ConfigError, match="must be one of random, ppo, muzero.*did you mean 'ppo'"):
        config_from_dict({"agent_type": "ppo2"})


def test_registering_twice_or_an_omega_section_is_refused(toy):
    with pytest.raises(ValueError, match="already registered"):
        register_agent(toy)
    with pytest.raises(ValueError, match="config section of omega's own"):
        register_agent(dataclasses.replace(toy, name="toy2", section="train"))
    with pytest.raises(ValueError, match="is agent 'toy'"):
        register_agent(dataclasses.replace(toy, name="toy3"))
    with pytest.raises(ValueError, match="end_streams"):
        AgentSpec(name="r", factory=toy.factory, rollout_length=toy.rollout_length,
                  keeps_replay=True)


def test_a_registered_agent_section_is_parsed_validated_and_written(toy):
    cfg = config_from_dict({"agent_type": "toy", "toy": {"rollout_length": 9}})
    assert cfg.toy == ToyConfig(rollout_length=9)
    assert build_agent(cfg, 5)[1] == 9
    assert config_from_dict({"agent_type": "toy"}).toy == ToyConfig()  # defaults, written too
    assert config_to_dict(config_from_dict({"agent_type": "toy"}))["toy"] == {
        "rollout_length": 4, "scale": 1.0}
    assert "toy:\n  rollout_length: 9" in config_to_yaml(cfg)
    assert config_from_dict(config_to_dict(cfg)) == cfg  # config.yaml reads back the same
    assert config_from_dict({"agent_type": "ppo"}).toy == ToyConfig()  # unused: defaults
    with pytest.raises(ConfigError, match="'toy.rollout_length' must be >= 1"):
        config_from_dict({"agent_type": "toy", "toy": {"rollout_length": 0}})
    with pytest.raises(ConfigError, match="unknown config key 'toy.scal'; did you mean 'toy.scale'"):
        config_from_dict({"agent_type": "toy", "toy": {"scal": 2.0}})
    with pytest.raises(ConfigError, match="unknown config key 'toyy'; did you mean 'toy'"):
        config_from_dict({"agent_type": "toy", "toyy": {}})
    with pytest.raises(ConfigError, match="unknown config key 'extra_agents'"):
        config_from_dict({"extra_agents": {}})
    with pytest.raises(ConfigError, match="toy.scale' must be <= 1 with model.recurrent"):
        config_from_dict({"agent_type": "toy", "toy": {"scale": 2.0},
                          "model": {"kind": "perceiver", "recurrent": True}})


def test_config_hash_covers_the_active_plugin_section_only(toy):
    base = config_hash(config_from_dict({"agent_type": "toy"}))
    assert base == config_hash(config_from_dict({"agent_type": "toy", "ppo": {"gamma": 0.5}}))
    assert base != config_hash(config_from_dict({"agent_type": "toy", "toy": {"scale": 0.5}}))
    ppo = config_hash(config_from_dict({"agent_type": "ppo"}))
    assert ppo == config_hash(config_from_dict({"agent_type": "ppo", "toy": {"scale": 0.5}}))
    assert ppo == ppo.legacy


def test_unknown_agent_module_in_the_env_var_is_a_config_error(monkeypatch):
    monkeypatch.setenv("OMEGA_AGENT_MODULES", "no_such_omega_plugin")
    with pytest.raises(ConfigError, match="OMEGA_AGENT_MODULES names module 'no_such_omega_plugin'"):
        agent_types()


# ---------------------------------------------------------------------------------------------
# Experiment dirs made before the hash covered only the active agent's section
#
# tests/data/legacy_experiments/<agent>/ was made with the omega of that time from
# tests/data/legacy_experiments/<agent>.yaml: 'omega make' then 'omega run --steps 256' (the
# muzero dir has its replay file too; the tb/ folder and the stale run.lock were left out).


def _stored_hash(path: Path) -> str:
    return serialization.msgpack_restore(path.read_bytes())["config_hash"]


@pytest.mark.parametrize("agent, steps", [("random", 512), ("muzero", 320)])
def test_experiment_made_before_the_hash_change_resumes(tmp_path, capsys, agent, steps):
    exp = tmp_path / agent
    shutil.copytree(LEGACY / agent, exp)
    chash = config_hash(load_config(exp / "config.yaml"))
    old = exp / "checkpoints" / "ckpt_000000000256.msgpack"
    assert _stored_hash(old) == chash.legacy != chash  # the dir really is a legacy one
    assert main(["run", "--dir", str(exp), "--steps", str(steps)]) == 0
    out = capsys.readouterr().out
    assert "resuming from ckpt_000000000256.msgpack at 256 env steps" in out
    if agent == "muzero":
        assert "restored the replay from replay_000000000256.msgpack" in out
    new = exp / "checkpoints" / f"ckpt_{steps:012d}.msgpack"
    assert _stored_hash(new) == chash  # written with the current hash from now on
    assert main(["eval", "--dir", str(exp), "--episodes", "1"]) == 0

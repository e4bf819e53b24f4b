"""Every bad config input: exit code 2 and one line naming the key or file and the fix."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from omega.cli.main import main
from omega.config import (
    ExperimentConfig,
    config_from_dict,
    config_hash,
    config_to_dict,
    config_to_yaml,
    load_config,
    load_config_data,
)
from omega.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def run_make(tmp_path, config_text, capsys):
    cfg = write(tmp_path, config_text)
    code = main(["make", "--config", str(cfg), "--output-dir", str(tmp_path / "exp")])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    "text, expected",
    [
        ("agent_type: random\nenv:\n  nmu_envs: 4\n", "unknown config key 'env.nmu_envs'; did you mean 'env.num_envs'?"),
        ("bogus: 1\n", "unknown config key 'bogus'"),
        ("env:\n  num_envs: many\n", "config key 'env.num_envs' must be an integer, got 'many'"),
        ("env:\n  num_envs: 2.5\n", "config key 'env.num_envs' must be an integer"),
        ("env:\n  num_envs: 0\n", "config key 'env.num_envs' must be between 1 and 4096, got 0"),
        ("train:\n  total_env_steps: -5\n", "config key 'train.total_env_steps' must be >= 1"),
        ("env:\n  id: MiniHack-Room-5x5-v9\n", "unknown environment 'MiniHack-Room-5x5-v9'; did you mean 'MiniHack-Room-5x5-v0'?"),
        ("agent_type: dqn\n", "config key 'agent_type' must be one of"),
        ("env:\n  observation:\n    keys: [glyphs, pixels]\n", "unknown key 'pixels'"),
        ("env:\n  observation:\n    keys: [glyphs, visited_crop]\nmodel:\n  map: full\n",
         "has 'visited_crop', which the encoder reads with the glyph crop, but model.map is 'full'"),
        ("env: [1, 2]\n", "config key 'env' must be a mapping"),
        ("env:\n  num_envs: 2\n  num_workers: 4\n", "'env.num_workers' (4) must be <= env.num_envs (2)"),
        ("env: {id: [\n", "is not valid YAML"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("record:\n  every_n_episodes: true\n", "'record.every_n_episodes' must be an integer, got True"),
        ("ppo:\n  entropy_coef_final: 0.1\n", "entropy_coef_final is only used with entropy_schedule: linear"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path, capsys, text, expected):
    code, err = run_make(tmp_path, text, capsys)
    assert code == 2
    assert expected in err, err
    assert len(err.splitlines()) == 1
    assert err.startswith("omega: error: ")
    assert not (tmp_path / "exp").exists()


def test_missing_config_file(tmp_path, capsys):
    code = main(["make", "--config", str(tmp_path / "nope.yaml"), "--output-dir", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.yaml' not found" in err


def test_existing_output_dir_refused(tmp_path, capsys):
    cfg = write(tmp_path, "agent_type: random\n")
    (tmp_path / "exp").mkdir()
    assert main(["make", "--config", str(cfg), "--output-dir", str(tmp_path / "exp")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_run_on_missing_dir(tmp_path, capsys):
    assert main(["run", "--dir", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err


def test_gpu_without_gpu_is_a_clear_error(tmp_path, capsys):
    cfg = write(tmp_path, "agent_type: random\n")
    assert main(["make", "--config", str(cfg), "--output-dir", str(tmp_path / "exp")]) == 0
    assert main(["run", "--dir", str(tmp_path / "exp"), "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "JAX sees no GPU" in err and "omega[cuda]" in err


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    cfg = write(tmp_path, "env:\n  num_envs: lots\n")
    proc = subprocess.run(
        [sys.executable, "-m", "omega", "make", "--config", str(cfg), "--output-dir", str(tmp_path / "e")],
        capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "omega: error: " + f"{cfg}: config key 'env.num_envs' must be an integer, got 'lots'"


def test_defaults_and_round_trip(tmp_path):
    cfg = config_from_dict({})
    assert isinstance(cfg, ExperimentConfig)
    path = write(tmp_path, config_to_yaml(cfg))
    again = load_config(path)
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)


def test_hash_ignores_budget_but_not_model():
    base = config_from_dict({})
    longer = config_from_dict({"train": {"total_env_steps": 10**6}})
    other_env = config_from_dict({"env": {"num_envs": 4}})
    assert config_hash(base) == config_hash(longer)
    assert config_hash(base) != config_hash(other_env)


# configs/suites/ holds suite files ('omega suite'), not experiment configs: test_suite.py.
@pytest.mark.parametrize("path", sorted(p for p in (REPO / "configs").rglob("*.yaml")
                                        if "suites" not in p.parts),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert load_config_data(path)["agent_type"] == cfg.agent_type


@pytest.mark.parametrize("with_memory, without_memory, allowed", [
    ("memory_k6.yaml", "memory_k6_no_memory.yaml",
     {("model", "recurrent"), ("muzero", "burn_in_steps"), ("muzero", "burn_in_gradient")}),
])
def test_memory_control_configs_differ_only_in_memory(with_memory, without_memory, allowed):
    # The memory ablation means something only if the control is the same run without memory.
    a = config_to_dict(load_config(REPO / "configs" / "muzero" / with_memory))
    b = config_to_dict(load_config(REPO / "configs" / "muzero" / without_memory))
    differ = {(section, key) for section in a if isinstance(a[section], dict)
              for key in a[section] if a[section][key] != b[section][key]}
    differ |= {(key,) for key in a if not isinstance(a[key], dict) and a[key] != b[key]}
    assert ("model", "recurrent") in differ
    assert differ <= allowed, differ - allowed


def test_config_error_is_config_error():
    with pytest.raises(ConfigError):
        config_from_dict({"seed": -1})


def test_every_config_key_is_documented():
    import dataclasses

    doc = (REPO / "docs" / "configuration.md").read_text()

    def keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            if f.metadata.get("agent_sections"):  # plugin agents' sections, not a key
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                yield from keys(type(default), prefix + f.name + ".")
            else:
                yield prefix + f.name

    missing = [k for k in keys(ExperimentConfig) if f"`{k}`" not in doc]
    assert not missing, f"undocumented config keys: {missing}"


@pytest.mark.parametrize("path, expected, legacy", [
    # PPO's hash never covered another agent's section: the same in both forms.
    ("configs/ppo/room_5x5.yaml", "2d7b07a1cd91c7f3", "2d7b07a1cd91c7f3"),
    # MuZero's covered the ppo section too; legacy: since its 6k recipe.
    ("configs/muzero/room_5x5.yaml", "86330de85df5b596", "440f3a4abf83bce2"),
])
def test_config_hash_is_stable_across_new_keys(path, expected, legacy):
    # Checkpoints store this hash: if it changes, existing experiments stop resuming. Keys
    # added later must leave it alone while they are at their defaults (config._ADDED_LATER).
    # ``legacy`` is the hash from before only the active agent's section was hashed, which
    # checkpoints of older experiments store (and resume with).
    from pathlib import Path

    from omega.config import config_hash, load_config

    root = Path(__file__).resolve().parents[1]
    h = config_hash(load_config(root / path))
    assert (h, h.legacy) == (expected, legacy)


def test_config_hash_covers_only_the_active_agent_section():
    ppo = config_from_dict({"agent_type": "ppo"})
    assert config_hash(ppo) == config_hash(config_from_dict(
        {"agent_type": "ppo", "muzero": {"num_simulations": 3}}))
    muzero = config_from_dict({"agent_type": "muzero"})
    other_ppo = config_from_dict({"agent_type": "muzero", "ppo": {"learning_rate": 0.1}})
    assert config_hash(muzero) == config_hash(other_ppo)
    assert config_hash(muzero).legacy != config_hash(other_ppo).legacy  # legacy hashed ppo
    random = config_from_dict({"agent_type": "random", "ppo": {"learning_rate": 0.1}})
    assert config_hash(random) == config_hash(config_from_dict({"agent_type": "random"}))
    assert config_hash(muzero) != config_hash(config_from_dict(
        {"agent_type": "muzero", "muzero": {"num_simulations": 3}}))


# ---------------------------------------------------------------------------------------------
# base: a config derived from another


def test_base_merges_mappings_and_replaces_the_rest(tmp_path):
    write(tmp_path, "agent_type: ppo\nenv:\n  id: MiniHack-Room-5x5-v0\n  num_envs: 8\n"
                    "  observation:\n    keys: [glyphs_crop, blstats]\n    crop_size: 9\n"
                    "ppo:\n  learning_rate: 0.001\n", "recipe.yaml")
    (tmp_path / "tasks").mkdir()
    child = write(tmp_path / "tasks", "base: ../recipe.yaml\nenv:\n  id: MiniHack-Room-Dark-5x5-v0\n"
                                      "  observation:\n    keys: [glyphs_crop]\n", "dark.yaml")
    cfg = load_config(child)
    assert cfg.agent_type == "ppo"
    assert cfg.env.id == "MiniHack-Room-Dark-5x5-v0"
    assert cfg.env.num_envs == 8  # kept from the base
    assert cfg.env.observation.keys == ("glyphs_crop",)  # a list replaces the base's
    assert cfg.env.observation.crop_size == 9
    assert cfg.ppo.learning_rate == 0.001
    assert "base" not in load_config_data(child)


@pytest.mark.parametrize("text, expected", [
    ("base: missing.yaml\n", "config key 'base': 'missing.yaml' not found"),
    ("base: 3\n", "config key 'base' must be the path of another config file"),
    ("base: cfg.yaml\n", "config key 'base' makes a loop"),
])
def test_bad_base_exits_2_with_one_line(tmp_path, capsys, text, expected):
    code, err = run_make(tmp_path, text, capsys)
    assert code == 2 and expected in err, err
    assert len(err.splitlines()) == 1


def test_base_errors_after_the_merge_name_the_file(tmp_path):
    write(tmp_path, "agent_type: ppo\n", "recipe.yaml")
    child = write(tmp_path, "base: recipe.yaml\nppo:\n  learnig_rate: 0.1\n", "child.yaml")
    with pytest.raises(ConfigError, match="child.yaml: unknown config key 'ppo.learnig_rate'"):
        load_config(child)


def test_made_experiment_holds_the_resolved_config(tmp_path, capsys):
    write(tmp_path, "agent_type: random\nenv:\n  num_envs: 4\n  num_workers: 1\n", "recipe.yaml")
    child = write(tmp_path, "base: recipe.yaml\nseed: 3\n", "child.yaml")
    assert main(["make", "--config", str(child), "--output-dir", str(tmp_path / "exp")]) == 0
    data = yaml.safe_load((tmp_path / "exp" / "config.yaml").read_text())
    assert "base" not in data and data["seed"] == 3 and data["env"]["num_envs"] == 4

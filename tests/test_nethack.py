"""The full game: the shipped NetHackScore / NetHackChallenge configs and the action set."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from nle import nethack

from omega.cli.main import main
from omega.config import config_from_dict, config_hash, load_config
from omega.envs import EnvFactory, make
from omega.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_nethack_score_config_builds_the_full_game():
    cfg = load_config(REPO / "configs/ppo/nethack_score.yaml")
    assert cfg.env.id == "NetHackScore-v0"
    env = EnvFactory.from_config(cfg.env)(0)
    try:
        # The whole keyboard, not NetHackScore's own 23 task actions.
        assert env.action_space.n == len(nethack.ACTIONS)
        obs, _ = env.reset(seed=5)
        assert tuple(obs) == cfg.env.observation.keys
        assert env.observation_space.contains(obs)
        assert obs["blstats"].shape == (nethack.NLE_BLSTATS_SIZE,)
        crop = cfg.env.observation.crop_size
        assert obs["glyphs_crop"].shape == (crop, crop)
        obs, *_ = env.step(int(np.flatnonzero(np.asarray(nethack.ACTIONS) == ord("s"))[0]))
        assert env.observation_space.contains(obs)
    finally:
        env.close()
    for path in ("configs/ppo/nethack_challenge.yaml", "configs/random/nethack_score.yaml"):
        assert load_config(REPO / path).env.action_set == "full"


def test_action_set_default_keeps_the_env_own_and_the_config_hash():
    env = make("NetHackScore-v0", observation_keys=("blstats",))
    assert env.action_space.n < len(nethack.ACTIONS)
    env.close()
    # Experiments made before the key existed keep a valid checkpoint hash.
    plain, default = config_from_dict({}), config_from_dict({"env": {"action_set": "default"}})
    assert config_hash(plain) == config_hash(default)
    assert config_hash(config_from_dict({"env": {"action_set": "full"}})) != config_hash(plain)


def test_extra_actions_follow_the_env_own_and_are_checked():
    env = make("MiniHack-CorridorBattle-v0", extra_actions=["SEARCH"])
    try:
        # The task's eight moves first, in their order, then the search command.
        assert env.unwrapped.actions == (*nethack.CompassDirection, nethack.Command.SEARCH)
        assert env.action_space.n == 9
        obs, _ = env.reset(seed=3)
        before = obs["blstats"][:2].copy()
        obs, *_ = env.step(8)
        assert env.observation_space.contains(obs)
        assert (obs["blstats"][:2] == before).all()  # a turn in place: the hero did not move
    finally:
        env.close()
    cfg = config_from_dict({"env": {"id": "MiniHack-CorridorBattle-v0",
                                    "extra_actions": ["SEARCH"]}})
    env = EnvFactory.from_config(cfg.env)(0)
    assert env.action_space.n == 9
    env.close()
    # Experiments made before the key existed keep their hash; a set with extras is another.
    assert config_hash(config_from_dict({})) == config_hash(
        config_from_dict({"env": {"extra_actions": []}}))
    assert config_hash(cfg) != config_hash(
        config_from_dict({"env": {"id": "MiniHack-CorridorBattle-v0"}}))
    bad = {"SERCH": "did you mean 'SEARCH'", "NOT_AN_ACTION": "nle.nethack.ACTIONS"}
    for name, hint in bad.items():
        with pytest.raises(ConfigError, match=f"env.extra_actions.*{name}.*{hint}"):
            config_from_dict({"env": {"extra_actions": [name]}})
    with pytest.raises(ConfigError, match="listed twice"):
        config_from_dict({"env": {"extra_actions": ["SEARCH", "SEARCH"]}})
    with pytest.raises(ConfigError, match="needs env.action_set 'default'"):
        config_from_dict({"env": {"action_set": "full", "extra_actions": ["SEARCH"]}})
    with pytest.raises(ConfigError, match="among its own actions already"):
        make("MiniHack-CorridorBattle-v0", extra_actions=["E"])


def test_an_extra_action_the_env_has_is_refused_by_omega_make(tmp_path, capsys):
    cfg = tmp_path / "cb.yaml"
    cfg.write_text(yaml.safe_dump({"base": str(REPO / "configs/ppo/corridor_battle.yaml"),
                                   "env": {"extra_actions": ["SEARCH", "E"]}}))
    assert main(["make", "--config", str(cfg), "--output-dir", str(tmp_path / "exp")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'E' among its own actions already" in err
    assert not (tmp_path / "exp").exists()


def test_challenge_eval_says_its_seeds_do_not_fix_the_games(tmp_path, capsys):
    data = yaml.safe_load((REPO / "configs/ppo/nethack_challenge.yaml").read_text())
    data["agent_type"] = "random"
    data["env"].update(num_envs=2, num_workers=1, max_episode_steps=40)
    data["train"].update(total_env_steps=256, checkpoint_every_steps=256, log_every_steps=128)
    data["record"]["every_n_episodes"] = 0
    cfg = tmp_path / "challenge.yaml"
    cfg.write_text(yaml.safe_dump(data))
    exp = tmp_path / "exp"
    assert main(["make", "--config", str(cfg), "--output-dir", str(exp)]) == 0
    assert main(["run", "--dir", str(exp)]) == 0
    out = tmp_path / "eval.json"
    capsys.readouterr()
    assert main(["eval", "--dir", str(exp), "--episodes", "2", "--seed", "7",
                 "--json", str(out)]) == 0
    assert "cannot be seeded" in capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["seeded"] is False and result["seeds"] == [7, 8]
    assert all(0 < n <= 40 for n in result["lengths"])  # within the configured time limit

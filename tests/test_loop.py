"""The local training loop: synchronous and asynchronous (``train.async_learning``) learning."""

import csv

import jax.numpy as jnp
import pytest
from test_cli import SMALL_RANDOM, TINY_PPO

import omega.training.loop as loop_module
from omega.agents.random import RandomAgent, RandomAgentState
from omega.cli.main import main
from omega.config import load_config
from omega.envs import EnvFactory


class VersionSpy:
    """A random agent whose params are its update count; records the version each rollout
    was acted with and the version each update started from."""

    def __init__(self, num_actions: int):
        self.inner = RandomAgent(num_actions)
        self.acted: list[int] = []
        self.learned_from: list[int] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def params(self, state: RandomAgentState):
        return int(state.updates)

    def act(self, params, obs, first, carry, rng, greedy=False):
        self.acted.append(params)
        return self.inner.act({}, obs, first, carry, rng, greedy)

    def learn(self, state, trajectory, rng):
        self.learned_from.append(int(state.updates))
        return RandomAgentState(updates=state.updates + jnp.int32(1)), {}


def run_spy(tmp_path, monkeypatch, async_learning: bool):
    spies = []

    def build_spy(cfg, num_actions, data_parallel=None):
        spies.append(VersionSpy(num_actions))
        return spies[-1], 16

    monkeypatch.setattr(loop_module, "build_agent", build_spy)
    cfg = tmp_path / f"cfg{async_learning}.yaml"
    # 4 envs x 16 steps = 64 env steps per update; 256 steps = 4 updates.
    text = SMALL_RANDOM.format(steps=256, ckpt=10_000).replace("log_every_steps: 512",
                                                               "log_every_steps: 64")
    flag = "true" if async_learning else "false"
    cfg.write_text(text.replace("train:\n", f"train:\n  async_learning: {flag}\n"))
    exp = tmp_path / f"exp{async_learning}"
    assert main(["make", "--config", str(cfg), "--output-dir", str(exp)]) == 0
    assert main(["run", "--dir", str(exp)]) == 0
    spy = spies[-1]
    # One act call per group (2 workers) and step: the version of each rollout.
    per_rollout = [spy.acted[i] for i in range(0, len(spy.acted), 2 * 16)]
    with (exp / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return spy, per_rollout, rows


def test_sync_loop_acts_with_the_newest_params(tmp_path, monkeypatch):
    spy, per_rollout, rows = run_spy(tmp_path, monkeypatch, async_learning=False)
    assert per_rollout == [0, 1, 2, 3]
    assert spy.learned_from == [0, 1, 2, 3]
    assert [int(r["env_steps"]) for r in rows] == [64, 128, 192, 256]
    assert all(float(r["learning_s"]) >= 0 and float(r["acting_s"]) > 0 for r in rows)


def test_async_loop_has_one_update_of_policy_lag(tmp_path, monkeypatch):
    spy, per_rollout, rows = run_spy(tmp_path, monkeypatch, async_learning=True)
    # Rollout k is acted while update k - 1 runs: with the params from before it.
    assert per_rollout == [0, 0, 1, 2]
    assert spy.learned_from == [0, 1, 2, 3]  # every rollout learned from exactly once, in order
    assert [int(r["env_steps"]) for r in rows] == [64, 128, 192, 256]
    assert [int(r["updates"]) for r in rows] == [1, 2, 3, 4]


@pytest.mark.usefixtures("fast_compiles")
def test_async_ppo_run_checkpoints_and_resumes(tmp_path):
    cfg = tmp_path / "ppo.yaml"
    cfg.write_text(TINY_PPO.replace("train:\n", "train:\n  async_learning: true\n"))
    exp = tmp_path / "exp"
    assert main(["make", "--config", str(cfg), "--output-dir", str(exp)]) == 0
    assert main(["run", "--dir", str(exp)]) == 0
    assert main(["run", "--dir", str(exp), "--steps", "256"]) == 0
    with (exp / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["env_steps"]) for r in rows] == [64, 128, 192, 256]
    assert [int(r["updates"]) for r in rows] == [1, 2, 3, 4]
    assert all(r["policy_loss"] for r in rows)


def test_train_time_limit_applies_to_training_envs_only(tmp_path, capsys):
    # Room-15x15 (limit 300) with a random agent: a training limit of 6 caps every episode.
    text = SMALL_RANDOM.format(steps=512, ckpt=10_000).replace(
        "MiniHack-Room-5x5-v0", "MiniHack-Room-15x15-v0").replace(
        "train:\n", "train:\n  max_episode_steps: 6\n")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(text)
    exp = tmp_path / "exp"
    assert main(["make", "--config", str(cfg_path), "--output-dir", str(exp)]) == 0
    cfg = load_config(cfg_path)
    training_env = loop_module.recording_factory(cfg, exp)(0)
    eval_env = EnvFactory.from_config(cfg.env)(0)
    try:
        for env, limit in ((training_env, 6), (eval_env, None)):
            env.reset(seed=0)
            for t in range(1, 8):
                _, _, terminated, truncated, _ = env.step(7 if t % 2 else 3)  # NW, W: no goal
                assert not terminated
                assert truncated == (t == limit)
                if truncated:
                    break
    finally:
        training_env.close()
        eval_env.close()
    capsys.readouterr()
    assert main(["run", "--dir", str(exp)]) == 0
    assert "training episodes end after at most 6 steps" in capsys.readouterr().out
    with (exp / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert int(rows[-1]["episodes"]) == 4 * (512 // 4 // 6)  # 4 envs, 128 steps each
    assert all(float(r["episode_length"]) <= 6 for r in rows)

"""Data-parallel learning (``--device gpu:all``), tested on the CPU with 2 faked devices."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from omega.cli.main import main

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def two_devices():
    # A fresh interpreter: JAX reads XLA_FLAGS once, at import.
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(HERE / "data_parallel_check.py")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_device_update_equals_the_single_device_one(two_devices):
    r = two_devices
    assert r["num_devices"] == 2
    # Same params after two PPO learn steps, up to float summation order; the update itself
    # is five orders of magnitude larger, so a wrong gradient (e.g. one device's half) shows.
    assert r["ppo_update_size"] > 1e-3
    assert r["ppo_diff_2_devices"] < 1e-6, r
    assert r["ppo_loss_diff"] < 1e-6, r
    assert r["muzero_train_steps"] > 0 and r["muzero_update_size"] > 1e-3
    assert r["muzero_diff_2_devices"] < 1e-5, r


def test_two_device_batch_is_split_and_params_replicated(two_devices):
    r = two_devices
    assert r["shard_devices"] == 2 and r["shard_shapes"] == [[4, 4], [4, 4]]  # [T, N / 2] each
    assert r["params_replicated"] and r["params_devices"] == 2
    assert r["all_reduce"], "the compiled update must all-reduce across the devices"


def test_indivisible_batch_is_one_clear_error(two_devices):
    err = two_devices["indivisible_error"]
    assert err.startswith("OmegaError: env.num_envs (3) must be divisible by the number of "
                          "devices (2)"), err


TINY_PPO = """\
agent_type: ppo
env:
  id: MiniHack-Room-5x5-v0
  num_envs: 2
  num_workers: 1
train:
  total_env_steps: 64
  log_every_steps: 32
record:
  every_n_episodes: 0
model:
  embed_dim: 8
  cnn_channels: []
  mlp_hidden: 16
  output_dim: 16
ppo:
  rollout_length: 32
  num_epochs: 1
  num_minibatches: 2
"""


def test_run_on_all_devices_of_one_and_device_errors(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(TINY_PPO)
    exp = tmp_path / "exp"
    assert main(["make", "--config", str(cfg), "--output-dir", str(exp)]) == 0
    # The data-parallel path, unchanged on a machine with a single device of the kind.
    assert main(["run", "--dir", str(exp), "--device", "cpu:all"]) == 0
    out = capsys.readouterr().out
    assert "(data-parallel learning)" in out and "done, 64 env steps" in out
    assert main(["eval", "--dir", str(exp), "--episodes", "1", "--device", "cpu:all"]) == 2
    assert "runs on one device" in capsys.readouterr().err
    assert main(["run", "--dir", str(exp), "--steps", "128", "--device", "gpu:all"]) == 2
    assert "sees no GPU" in capsys.readouterr().err

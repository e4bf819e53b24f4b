"""CLI round trip in a temp dir: make -> run -> eval -> play --gif, and kill -9 -> resume."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from omega.cli.main import main
from omega.training.checkpoint import list_checkpoints
from omega.viz.ttyrec import read_ttyrec

REPO = Path(__file__).resolve().parents[1]

SMALL_RANDOM = """\
agent_type: random
seed: 3
env:
  id: MiniHack-Room-5x5-v0
  num_envs: 4
  num_workers: 2
train:
  total_env_steps: {steps}
  checkpoint_every_steps: {ckpt}
  log_every_steps: 512
record:
  every_n_episodes: 2
  max_files: 6
"""


def make_exp(tmp_path, steps=2048, ckpt=1024):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(SMALL_RANDOM.format(steps=steps, ckpt=ckpt))
    exp = tmp_path / "exp"
    assert main(["make", "--config", str(cfg), "--output-dir", str(exp)]) == 0
    return exp


def _dated_greeting(screen: str) -> bool:
    """Whether NetHack's start-up screens carry its greeting of the date (moon, Friday 13th)."""
    return any(m in screen for m in ("moon tonight", "Friday the 13th"))


def read_metrics(exp):
    with (exp / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("keep", [None, 5])
def test_run_keeps_the_newest_checkpoints(tmp_path, keep):
    cfg = tmp_path / "cfg.yaml"
    text = SMALL_RANDOM.format(steps=3072, ckpt=512)
    if keep is not None:
        text = text.replace("  log_every_steps: 512\n",
                            f"  log_every_steps: 512\n  keep_checkpoints: {keep}\n")
    cfg.write_text(text)
    exp = tmp_path / "exp"
    assert main(["make", "--config", str(cfg), "--output-dir", str(exp)]) == 0
    assert main(["run", "--dir", str(exp)]) == 0
    steps = [int(p.stem.split("_")[-1]) for p in list_checkpoints(exp / "checkpoints")]
    # six checkpoints are written (every 512 env steps up to 3,072); the newest ones stay
    assert steps == [512 * i for i in range(7 - (keep or 3), 7)]


def test_round_trip(tmp_path, capsys):
    exp = make_exp(tmp_path)
    assert (exp / "config.yaml").is_file()
    assert main(["run", "--dir", str(exp)]) == 0
    rows = read_metrics(exp)
    assert rows and rows[0].keys() >= {"env_steps", "episode_return", "success_rate"}
    assert int(rows[-1]["env_steps"]) == 2048
    assert list_checkpoints(exp / "checkpoints")
    assert list((exp / "tb").iterdir())
    episodes = list((exp / "episodes").rglob("*.ttyrec*"))
    assert 0 < len(episodes) <= 6  # recorded, and pruned to record.max_files

    out_json = tmp_path / "eval.json"
    assert main(["eval", "--dir", str(exp), "--episodes", "6", "--seed", "5", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "success_rate" in printed and "95% CI" in printed
    data = json.loads(out_json.read_text())
    assert data["seeds"] == [5, 6, 7, 8, 9, 10]
    for key in ("success_rate", "mean_return", "mean_length"):
        lo, hi = data[f"{key}_ci95"]
        assert lo <= data[key] <= hi
    assert data["env_steps"] == 2048

    # Same seeds, same checkpoint: the same numbers.
    again = tmp_path / "eval2.json"
    assert main(["eval", "--dir", str(exp), "--episodes", "6", "--seed", "5", "--json", str(again)]) == 0
    assert json.loads(again.read_text())["lengths"] == data["lengths"]
    assert "num_simulations" not in data  # no search: the key is MuZero's
    capsys.readouterr()
    assert main(["eval", "--dir", str(exp), "--num-simulations", "8"]) == 2
    assert "applies to MuZero runs only" in capsys.readouterr().err

    gif = tmp_path / "ep.gif"
    assert main(["play", "--file", str(exp), "--gif", str(gif)]) == 0
    with Image.open(gif) as im:
        assert im.n_frames > 1

    # Training again to the same budget is a no-op; --steps extends it.
    assert main(["run", "--dir", str(exp), "--steps", "3072"]) == 0
    assert int(read_metrics(exp)[-1]["env_steps"]) == 3072

    assert main(["cleanup", "--dir", str(exp), "--yes"]) == 0
    assert not (exp / "metrics.csv").exists() and not list_checkpoints(exp / "checkpoints")
    assert (exp / "config.yaml").is_file()


def test_eval_record_writes_one_playable_recording_per_seed(tmp_path, capsys):
    exp = make_exp(tmp_path, steps=1024, ckpt=1024)
    assert main(["run", "--dir", str(exp)]) == 0
    plain, recorded, rec = tmp_path / "plain.json", tmp_path / "rec.json", tmp_path / "rec"
    assert main(["eval", "--dir", str(exp), "--episodes", "5", "--seed", "7",
                 "--json", str(plain)]) == 0
    assert main(["eval", "--dir", str(exp), "--episodes", "5", "--seed", "7",
                 "--json", str(recorded), "--record", str(rec)]) == 0
    assert "omega play --file" in capsys.readouterr().out
    with_rec, without = json.loads(recorded.read_text()), json.loads(plain.read_text())
    assert with_rec["lengths"] == without["lengths"]  # recording changes nothing played
    assert with_rec["recordings"] == str(rec)
    assert len(with_rec["endings"]) == 5 and sum(with_rec["ending_counts"].values()) == 5
    for ok, ending in zip(with_rec["successes"], with_rec["endings"], strict=True):
        assert (ending == "solved") == ok
    assert {p.name for p in rec.iterdir()} == {f"seed{s}.ttyrec3.bz2" for s in range(7, 12)}
    for i, seed in enumerate(with_rec["seeds"]):  # each file is its seed's episode
        gif = tmp_path / f"seed{seed}.gif"
        path = rec / f"seed{seed}.ttyrec3.bz2"
        assert main(["play", "--file", str(path), "--gif", str(gif)]) == 0
        # At full and new moon and on Friday the 13th NetHack greets behind a --More-- that
        # the env answers in reset(): one start-up frame more (omega/viz/ttyrec.py).
        episode = read_ttyrec(path)
        start_frames = int(_dated_greeting(episode.text(0) + episode.text(1)))
        frames = with_rec["lengths"][i] + 1 + start_frames
        assert f"({frames} frames" in capsys.readouterr().out
    assert main(["play", "--file", str(rec), "--gif", str(tmp_path / "any.gif")]) == 0
    # Recordings are never written over.
    assert main(["eval", "--dir", str(exp), "--episodes", "1", "--record", str(rec)]) == 2
    assert "exists and is not an empty dir" in capsys.readouterr().err


def test_eval_without_checkpoint_is_clear(tmp_path, capsys):
    exp = make_exp(tmp_path)
    assert main(["eval", "--dir", str(exp)]) == 2
    assert "no checkpoint yet" in capsys.readouterr().err


def test_corrupt_checkpoint_is_one_clear_line(tmp_path, capsys):
    exp = make_exp(tmp_path, steps=512, ckpt=512)
    assert main(["run", "--dir", str(exp)]) == 0
    ckpt = list_checkpoints(exp / "checkpoints")[-1]
    ckpt.write_bytes(b"\x93garbage" * 10)
    capsys.readouterr()
    assert main(["run", "--dir", str(exp), "--steps", "1024"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is corrupt" in err and len(err.splitlines()) == 1


def test_mismatched_checkpoint_is_refused(tmp_path, capsys):
    exp = make_exp(tmp_path, steps=512, ckpt=512)
    assert main(["run", "--dir", str(exp)]) == 0
    text = (exp / "config.yaml").read_text().replace("num_envs: 4", "num_envs: 2")
    (exp / "config.yaml").write_text(text)
    assert main(["run", "--dir", str(exp), "--steps", "1024"]) == 2
    assert "different config" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path):
    exp = make_exp(tmp_path, steps=400_000, ckpt=1024)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "omega", "run", "--dir", str(exp)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(exp / "checkpoints")) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: trainer and env workers
    proc.wait()
    ckpts = list_checkpoints(exp / "checkpoints")
    assert ckpts, "no checkpoint written before the kill"
    saved_steps = int(ckpts[-1].name[5:17])
    assert saved_steps >= 1024

    target = saved_steps + 2048
    proc = subprocess.run(cmd + ["--steps", str(target)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"resuming from {ckpts[-1].name} at {saved_steps:,} env steps" in proc.stdout
    steps = [int(r["env_steps"]) for r in read_metrics(exp)]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # no duplicated rows
    assert steps[-1] == target


def test_bench_reports_raw_and_training_rates(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(SMALL_RANDOM.format(steps=1024, ckpt=1024))
    out = tmp_path / "bench.json"
    assert main(["bench", "--config", str(cfg), "--steps", "1024", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["raw_env_steps_per_s"] > 0 and data["train_env_steps_per_s"] > 0
    assert data["ratio"] == pytest.approx(data["train_env_steps_per_s"] / data["raw_env_steps_per_s"])
    # The time split of an update: acting and learning are both measured and both take time.
    assert data["acting_s_per_update"] > 0 and data["learning_s_per_update"] > 0
    printed = capsys.readouterr().out
    assert "ratio" in printed and "acting" in printed and "learning" in printed
    assert data["async_learning"] is False
    assert main(["bench", "--config", str(cfg), "--steps", "1024", "--async-learning",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["async_learning"] is True


def test_wandb_online_without_key_or_terminal_falls_back_to_offline(tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(SMALL_RANDOM.format(steps=512, ckpt=512) + "wandb:\n  mode: online\n")
    exp = tmp_path / "exp"
    assert main(["make", "--config", str(cfg), "--output-dir", str(exp)]) == 0
    assert main(["run", "--dir", str(exp), "--wandb"]) == 0
    assert "logging to W&B in offline mode" in capsys.readouterr().err
    assert list((exp / "wandb").glob("offline-run-*"))


TINY_PPO = """\
agent_type: ppo
seed: 1
env:
  id: MiniHack-Room-5x5-v0
  num_envs: 4
  num_workers: 1
train:
  total_env_steps: 128
  checkpoint_every_steps: 64
  log_every_steps: 64
record:
  every_n_episodes: 0
model:
  embed_dim: 8
  cnn_channels: []
  mlp_hidden: 32
  output_dim: 32
ppo:
  rollout_length: 16
  num_minibatches: 2
  num_epochs: 1
"""


def test_ppo_save_resume_identical_params_and_step_count(tmp_path):
    import jax
    import numpy as np

    from omega.agents import build_agent
    from omega.config import config_hash, load_config
    from omega.training.checkpoint import load_checkpoint, save_checkpoint
    from omega.training.loop import probe_env

    cfg_path = tmp_path / "ppo.yaml"
    cfg_path.write_text(TINY_PPO)
    exp = tmp_path / "exp"
    assert main(["make", "--config", str(cfg_path), "--output-dir", str(exp)]) == 0
    assert main(["run", "--dir", str(exp)]) == 0
    cfg = load_config(exp / "config.yaml")
    obs, n_actions = probe_env(cfg)
    agent, _ = build_agent(cfg, n_actions)
    template = agent.init(jax.random.PRNGKey(0), obs, cfg.env.num_envs)
    ckpt = list_checkpoints(exp / "checkpoints")[-1]
    state, loop = load_checkpoint(ckpt, template, config_hash(cfg))
    assert loop.env_steps == 128 and loop.updates == 2
    # The restored params are the trained ones, not the template's, and survive a round trip.
    leaves = jax.tree_util.tree_leaves
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(state.params), leaves(template.params), strict=True))
    again_path = save_checkpoint(tmp_path / "copy", state, loop, config_hash(cfg))
    again, _ = load_checkpoint(again_path, template, config_hash(cfg))
    for a, b in zip(leaves(state), leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)

    assert main(["run", "--dir", str(exp), "--steps", "256"]) == 0
    rows = read_metrics(exp)
    assert [int(r["env_steps"]) for r in rows] == [64, 128, 192, 256]
    assert [int(r["updates"]) for r in rows] == [1, 2, 3, 4]
    assert "policy_loss" in rows[-1]

    # eval.greedy picks the action mode; --greedy / --sample override it; the JSON says which.
    for flags, greedy in (([], True), (["--sample"], False), (["--greedy"], True)):
        out = tmp_path / f"eval{len(flags)}{greedy}.json"
        assert main(["eval", "--dir", str(exp), "--episodes", "2", "--seed", "0", "--json",
                     str(out), *flags]) == 0
        assert json.loads(out.read_text())["greedy"] is greedy
    with pytest.raises(SystemExit):
        main(["eval", "--dir", str(exp), "--greedy", "--sample"])
    resolved = (exp / "config.yaml").read_text()
    assert "greedy: true" in resolved
    (exp / "config.yaml").write_text(resolved.replace("greedy: true", "greedy: false"))
    out = tmp_path / "eval_cfg_sampled.json"
    assert main(["eval", "--dir", str(exp), "--episodes", "2", "--seed", "0", "--json",
                 str(out)]) == 0
    assert json.loads(out.read_text())["greedy"] is False


def test_a_closed_stdout_ends_the_command_quietly():
    # 'omega envs | head -1': the reader is gone before omega writes (a pipe with no reader).
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "omega", "envs"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 128 + signal.SIGPIPE
    assert proc.stderr == ""

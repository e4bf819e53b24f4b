"""A plugin agent end to end: tests/reinforce_agent/ registers ``agent_type: reinforce``
(OMEGA_AGENT_MODULES) and trains through 'omega make / run / eval' without a change to omega
(docs/extending.md)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from omega.cli.main import main

HERE = Path(__file__).resolve().parent

CONFIG = """\
agent_type: reinforce
seed: 0
env:
  id: MiniHack-Room-5x5-v0
  num_envs: 4
  num_workers: 1
train:
  total_env_steps: 320
  checkpoint_every_steps: 128
  log_every_steps: 64
record:
  every_n_episodes: 0
model:
  embed_dim: 8
  cnn_channels: []
  mlp_hidden: 32
  output_dim: 32
reinforce:
  rollout_length: 16
  learning_rate: 0.003
"""


def _omega(*args, modules=None):
    env = {k: v for k, v in os.environ.items() if k != "OMEGA_AGENT_MODULES"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    if modules:
        env["OMEGA_AGENT_MODULES"] = modules
    return subprocess.run([sys.executable, "-m", "omega", *args], env=env, text=True,
                          capture_output=True, timeout=300)


def test_plugin_agent_trains_through_make_run_eval(tmp_path, monkeypatch):
    cfg, exp = tmp_path / "reinforce.yaml", tmp_path / "exp"
    cfg.write_text(CONFIG)
    unknown = _omega("make", "--config", str(cfg), "--output-dir", str(exp))
    assert unknown.returncode == 2 and "unknown config key 'reinforce'" in unknown.stderr
    made = _omega("make", "--config", str(cfg), "--output-dir", str(exp),
                  modules="reinforce_agent")
    assert made.returncode == 0, made.stderr
    assert "reinforce:\n  learning_rate: 0.003" in (exp / "config.yaml").read_text()

    monkeypatch.setenv("OMEGA_AGENT_MODULES", "reinforce_agent")  # as a user's shell would
    assert main(["run", "--dir", str(exp)]) == 0
    with (exp / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert int(rows[-1]["env_steps"]) == 320 and rows[-1]["loss"] not in ("", "nan")
    assert main(["run", "--dir", str(exp), "--steps", "384"]) == 0  # resumes
    out = tmp_path / "eval.json"
    assert main(["eval", "--dir", str(exp), "--episodes", "2", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["episodes"] == 2


def test_a_suite_gives_a_plugin_agent_its_budget(tmp_path):
    (tmp_path / "reinforce.yaml").write_text(CONFIG)
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: plug\nseeds: [0, 1]\nbudget: {reinforce: 256}\ncheckpoints: 2\n"
                     "eval: {episodes: 2, seed: 5}\nbaselines: false\nruns:\n"
                     "  - reinforce.yaml\n")
    listed = _omega("suite", str(suite), "--output-dir", str(tmp_path / "out"), "--dry-run",
                    modules="reinforce_agent")
    assert listed.returncode == 0, listed.stderr
    assert "reinforce/seed0" in listed.stdout and "reinforce/seed1" in listed.stdout
    # A budget for an agent type nobody registered is still an error, naming the known ones.
    suite.write_text(suite.read_text().replace("{reinforce: 256}", "{reinforce: 256, dqn: 9}"))
    bad = _omega("suite", str(suite), "--dry-run", modules="reinforce_agent")
    assert bad.returncode == 2 and "dqn" in bad.stderr and "reinforce" in bad.stderr
    # The Python API: an agent registered after omega.suite was imported is known to it too.
    suite.write_text(suite.read_text().replace("{reinforce: 256, dqn: 9}", "{reinforce: 256}"))
    code = ("import omega.suite.spec as spec, reinforce_agent, sys\n"
            f"s = spec.load_suite({str(suite)!r})\n"
            "print(sorted({r.budget for r in s.runs}))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    late = subprocess.run([sys.executable, "-c", code], env=env, text=True, capture_output=True,
                          timeout=300)
    assert late.returncode == 0, late.stderr
    assert late.stdout.strip() == "[256]"

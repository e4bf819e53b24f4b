"""Benchmark scripts that read trained runs: run on a tiny random-agent experiment."""

import json
import subprocess
import sys
from pathlib import Path

from omega.cli.main import main

try:
    from tests.test_cli import make_exp
except ImportError:  # pragma: no cover
    from test_cli import make_exp

REPO = Path(__file__).resolve().parents[1]


def test_eval_curve_evaluates_every_kept_checkpoint(tmp_path):
    exp = make_exp(tmp_path, steps=1024, ckpt=512)
    assert main(["run", "--dir", str(exp)]) == 0
    out = tmp_path / "curve.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "eval_curve.py"), "--group", "rand", str(exp),
         "--episodes", "3", "--seed", "7", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert [r["env_steps"] for r in data["rows"]] == [512, 1024]
    assert all(r["eval"]["seeds"] == [7, 8, 9] for r in data["rows"])
    assert [s["runs"] for s in data["summary"]] == [1, 1]
    # The newest checkpoint's row is what 'omega eval' reports for the run.
    direct = tmp_path / "eval.json"
    assert main(["eval", "--dir", str(exp), "--episodes", "3", "--seed", "7",
                 "--json", str(direct)]) == 0
    assert data["rows"][-1]["eval"]["lengths"] == json.loads(direct.read_text())["lengths"]


def test_eval_curve_refuses_a_dir_without_checkpoints(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "eval_curve.py"), "--group", "x",
         str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert "has no checkpoints/" in proc.stderr and "train it first" in proc.stderr


def test_fixed_policies_scores_like_eval_and_refuses_unknown_actions(tmp_path):
    out = tmp_path / "fixed.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "fixed_policies.py"),
           "--env", "MiniHack-Room-5x5-v0", "--episodes", "3", "--seed", "5"]
    proc = subprocess.run(cmd + ["--policy", "random", "--policy", "E:3,SE", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert [r["policy"] for r in data["policies"]] == ["random", "E:3,SE"]
    for row in data["policies"]:
        assert 0.0 <= row["success_rate"] <= 1.0
        lo, hi = row["success_rate_ci95"]
        assert lo <= row["success_rate"] <= hi
        assert row["mean_length"] >= 1
    # Unknown action names fail before any episode is played, naming the valid ones.
    proc = subprocess.run(cmd + ["--policy", "random", "--policy", "UP"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode != 0
    assert "unknown action 'UP'" in proc.stderr and "NE" in proc.stderr
    assert "random" not in proc.stdout


def test_fixed_policy_distribution():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from fixed_policies import action_probs

    actions = ["N", "E", "S", "W"]
    assert list(action_probs("E:3,S", actions)) == [0.0, 0.75, 0.25, 0.0]
    assert list(action_probs("random", actions)) == [0.25] * 4


def tiny_muzero_exp(tmp_path: Path, env_id: str = "MiniHack-Room-5x5-v0",
                    name: str = "mz") -> Path:
    """A tiny MuZero experiment, trained for 512 env steps."""
    import yaml

    cfg = {
        "agent_type": "muzero", "seed": 0,
        "env": {"id": env_id, "num_envs": 4, "num_workers": 1},
        "train": {"total_env_steps": 512, "log_every_steps": 256,
                  "checkpoint_every_steps": 1024},
        "record": {"every_n_episodes": 0},
        "model": {"kind": "plain", "map": "crop", "embed_dim": 8, "cnn_channels": [],
                  "mlp_hidden": 32, "output_dim": 32},
        "muzero": {"search": "gumbel", "latent_dim": 16, "dynamics_hidden": 32,
                   "prediction_hidden": 32, "num_simulations": 4, "warmup_steps": 128,
                   "batch_size": 16, "replay_ratio": 1.0, "unroll_steps": 3},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    exp = tmp_path / name
    assert main(["make", "--config", str(path), "--output-dir", str(exp)]) == 0
    assert main(["run", "--dir", str(exp)]) == 0
    return exp


def test_model_probe_reads_a_muzero_run_and_refuses_other_agents(tmp_path):
    exp = tiny_muzero_exp(tmp_path)
    out = tmp_path / "probe.json"
    script = str(REPO / "benchmarks" / "model_probe.py")
    proc = subprocess.run([sys.executable, script, "--dir", str(exp), "--seed", "3",
                           "--actions", "E,E,S,S,SE", "--json", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    steps = data["steps"]
    assert 1 <= len(steps) <= 5 and [s["action"] for s in steps] == ["E", "E", "S", "S", "SE"][
        :len(steps)]
    for s in steps:
        assert set(s["model_q"]) == set(data["actions"]) and len(s["prior"]) == 8
        assert abs(sum(s["prior"]) - 1.0) < 1e-3
    # The real one-step target is the reward plus the discounted value of the next state,
    # the state whose v(s) the next row reports.
    for s, nxt in zip(steps[:-1], steps[1:], strict=True):
        assert abs(s["real_target"] - (s["reward"] + data["gamma"] * nxt["value"])) < 1e-4

    bad = subprocess.run([sys.executable, script, "--dir", str(exp), "--actions", "E,UP"],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert bad.returncode == 2 and "unknown action(s) UP" in bad.stderr
    random_exp = make_exp(tmp_path)
    assert main(["run", "--dir", str(random_exp)]) == 0
    other = subprocess.run([sys.executable, script, "--dir", str(random_exp), "--actions", "E"],
                           capture_output=True, text=True, cwd=REPO, timeout=600)
    assert other.returncode == 2 and "not a plain MuZero experiment" in other.stderr


def test_river_transition_kinds():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from river_transitions import kind_of

    water = {(44, 3), (44, 4), (45, 3), (45, 4)}
    assert kind_of("", (50, 2), (49, 2), water, success=True) == "goal"
    assert kind_of("You push the boulder into the water.  Now you can cross it!", (42, 3),
                   (41, 3), water, False) == "fill"
    assert kind_of("With great effort you move the boulder.", (40, 3), (39, 3), water,
                   False) == "push"
    assert kind_of("You try to move the boulder, but in vain.", (39, 3), (39, 3), water,
                   False) == "other"
    assert kind_of("Pheew!  That was close.", (43, 2), (43, 3), water, False) == "water"
    assert kind_of("", (44, 3), (43, 3), water, False) == "onto_crossing"
    assert kind_of("", (47, 3), (46, 3), water, False) == "far_bank"
    assert kind_of("", (40, 3), (39, 3), water, False) == "other"


def test_river_transitions_sorts_every_step_and_refuses_other_envs(tmp_path):
    exp = tiny_muzero_exp(tmp_path, "MiniHack-River-Narrow-v0", name="river")
    out = tmp_path / "river.json"
    script = str(REPO / "benchmarks" / "river_transitions.py")
    proc = subprocess.run([sys.executable, script, "--dir", str(exp), "--episodes", "1",
                           "--seed", "5", "--json", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    (episode,) = data["episodes"]
    assert episode["seed"] == 5 and 1 <= episode["length"] <= 350
    assert sum(episode["counts"].values()) == episode["length"]
    assert {k: d["count"] for k, d in data["kinds"].items()} == episode["counts"]
    assert episode["counts"]["goal"] == int(episode["success"])
    x0, y0 = episode["start"]
    assert 0 <= x0 <= episode["east_x"] < 79 and 0 <= y0 < 21
    if episode["success"]:  # the goal is across the river
        assert episode["river_x"] is not None and episode["east_x"] > episode["river_x"]
    room = tiny_muzero_exp(tmp_path)
    other = subprocess.run([sys.executable, script, "--dir", str(room)],
                           capture_output=True, text=True, cwd=REPO, timeout=600)
    assert other.returncode == 2 and "River tasks only" in other.stderr


def test_muzero_ablation_records_what_each_variant_changed():
    import yaml

    sys.path.insert(0, str(REPO / "benchmarks"))
    from muzero_ablation import config_diff, variant_config

    base_path = REPO / "configs/muzero/river_narrow.yaml"
    base = yaml.safe_load(base_path.read_text())
    data = variant_config("replay8", 1000, 0.1, 2.0, 16.0, base=base_path)
    data["env"]["observation"]["crop_size"] = 15
    # The budget is shared by every row; keys the config already had are no override.
    assert config_diff(base, data) == {"muzero.replay_ratio": 16.0,
                                       "env.observation.crop_size": 15}
    assert config_diff(base, base) == {}

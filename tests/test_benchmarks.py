"""Benchmark scripts: those that read trained runs run on a tiny random-agent experiment."""

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


def test_corridor_fighter_holds_the_corridor_and_attacks_what_comes():
    import numpy as np

    sys.path.insert(0, str(REPO / "benchmarks"))
    from corridor_battle_script import CorridorFighter

    def grid(*rows):
        return np.array([[ord(c) for c in r] for r in rows], np.uint8)

    start = grid("|...|       ",
                 "|..@.##     ",
                 "|...|       ")
    fighter = CorridorFighter(hold=1)
    fighter.reset(start)
    assert (fighter.row, fighter.hold_x) == (1, 6)  # 1 cell past the first corridor cell
    assert fighter.act(start, (3, 1)) == (1, 0)  # no rat in view: east along the corridor
    rats = grid("|...|       ",
                "|....##@# rr",
                "|...|       ")
    assert fighter.act(rats, (7, 1)) == (-1, 0)  # rats in view, past the hold cell: back
    assert fighter.act(rats, (6, 1)) == (-1, 0)  # at the hold cell: the step west ...
    assert fighter.act(rats, (5, 1)) == (1, 0)  # ... and back
    adjacent = grid("|...|       ",
                    "|....##@r   ",
                    "|...|       ")
    assert fighter.act(adjacent, (7, 1)) == (1, 0)  # a rat next to it: attack
    room = grid("|...|       ",
                "|....#####..",
                "|...|     .>")
    assert fighter.act(room, (10, 1)) == (1, 1)  # no rats, in the room: to the goal
    waiting = CorridorFighter(hold=1, tactic="wait")
    waiting.reset(start)
    assert waiting.act(rats, (6, 1)) == (0, 0)  # at the hold cell with a wait: search in place
    assert waiting.act(rats, (7, 1)) == (-1, 0)  # past it: back, as without
    assert waiting.act(adjacent, (7, 1)) == (1, 0)


def test_corridor_battle_script_scores_like_eval(tmp_path):
    out = tmp_path / "fighter.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "corridor_battle_script.py"),
         "--episodes", "2", "--seed", "1000000", "--hold", "2", "--tactic", "step", "wait",
         "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["tactic"], r["hold"]) for r in rows] == [("step", 2), ("wait", 2)]
    for row in rows:
        assert row["seeds"] == [1000000, 1000001]
        assert sum(row["ending_counts"].values()) == 2 and len(row["successes"]) == 2
        assert row["success_rate"] == sum(row["successes"]) / 2


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


def test_muzero_ablation_variant_of_a_config_with_a_base_loads_from_another_folder(tmp_path):
    import yaml

    from omega.config import load_config

    sys.path.insert(0, str(REPO / "benchmarks"))
    from muzero_ablation import variant_config

    # hide_n_seek_mapped.yaml names a base relative to its folder and has no train section.
    path = REPO / "configs/muzero/hide_n_seek_mapped.yaml"
    assert "base" in yaml.safe_load(path.read_text())
    data = variant_config("consistency", 1000, 0.1, 0.5, 8.0, base=path)
    assert "base" not in data and data["train"]["total_env_steps"] == 1000
    written = tmp_path / "elsewhere" / "variant.yaml"
    written.parent.mkdir()
    written.write_text(yaml.safe_dump(data))
    cfg = load_config(written)
    assert cfg.env.id == "MiniHack-HideNSeek-Mapped-v0"
    assert cfg.muzero.consistency_loss_weight == 0.5
    # Inherited from the base (room_random_15x15_150k.yaml), overridden by the file itself.
    assert cfg.muzero.gumbel_value_scale == 0.1
    assert cfg.train.total_env_steps == 1000


def test_no_benchmark_patches_sys_path():
    """The scripts run as 'python benchmarks/x.py' with omega installed; what they share
    lives in omega, not in a path hack."""
    offenders = [p.name for p in sorted((REPO / "benchmarks").rglob("*.py"))
                 if "sys.path" in p.read_text()]
    assert offenders == []


def test_eval_search_reevaluates_a_muzero_run_with_other_search_settings(tmp_path, capsys):
    try:
        from tests.test_hostile import TINY_MUZERO
    except ImportError:  # pragma: no cover
        from test_hostile import TINY_MUZERO
    sys.path.insert(0, str(REPO / "benchmarks"))
    import eval_search

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(TINY_MUZERO + "eval:\n  episodes: 3\n  seed: 11\n  greedy: false\n")
    exp = tmp_path / "exp"
    assert main(["make", "--config", str(cfg), "--output-dir", str(exp)]) == 0
    assert main(["run", "--dir", str(exp)]) == 0
    out = tmp_path / "search.json"
    assert eval_search.main(["--runs", str(exp), "--variant", "as_trained",
                             "--variant", "more:num_simulations=8,gumbel_value_scale=0.5",
                             "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["as_trained", "more"]
    assert rows[0]["search"]["num_simulations"] == 4 and rows[0]["overrides"] == {}
    assert rows[1]["search"]["num_simulations"] == 8
    assert rows[1]["search"]["gumbel_value_scale"] == 0.5
    assert all(r["seeds"] == [11, 12, 13] and r["env_steps"] == 256 for r in rows)
    # The run as it trained scores what 'omega eval' reports for it, episode by episode.
    direct = tmp_path / "eval.json"
    assert main(["eval", "--dir", str(exp), "--json", str(direct)]) == 0
    assert rows[0]["lengths"] == json.loads(direct.read_text())["lengths"]
    # --episodes plays fewer (or more) of the config's eval episodes.
    assert eval_search.main(["--runs", str(exp), "--variant", "x", "--episodes", "2",
                             "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][0]["seeds"] == [11, 12]
    capsys.readouterr()
    # Keys the network learned, and invalid values, are refused before any episode is played.
    assert eval_search.main(["--runs", str(exp), "--variant", "x:latent_dim=8"]) == 2
    assert "not KEY=VALUE over a search key" in capsys.readouterr().err
    assert eval_search.main(["--runs", str(exp), "--variant", "x:num_simulations=0"]) == 2
    assert "muzero.num_simulations" in capsys.readouterr().err
    # A missing run or checkpoint is one line too.
    assert eval_search.main(["--runs", str(tmp_path / "nope"), "--variant", "x"]) == 2
    assert "not found" in capsys.readouterr().err
    assert eval_search.main(["--runs", str(exp), "--variant", "x", "--checkpoint",
                             "ckpt_9.msgpack"]) == 2
    assert "no checkpoint ckpt_9.msgpack" in capsys.readouterr().err


def test_learner_speed_times_the_train_step_of_each_variant(tmp_path):
    try:
        from tests.test_hostile import TINY_MUZERO
    except ImportError:  # pragma: no cover
        from test_hostile import TINY_MUZERO
    sys.path.insert(0, str(REPO / "benchmarks"))
    import learner_speed

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(TINY_MUZERO)
    exp = tmp_path / "exp"
    assert main(["make", "--config", str(cfg), "--output-dir", str(exp)]) == 0
    assert main(["run", "--dir", str(exp)]) == 0
    out = tmp_path / "speed.json"
    assert learner_speed.main(["--run", str(exp), "--steps", "2", "--variant",
                               'small={"batch_size": 4}', "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["variant"] for r in data["rows"]] == ["shipped", "small"]
    assert data["rows"][1]["muzero"] == {"batch_size": 4}
    for row in data["rows"]:
        assert row["update_ms"] > 0
        assert row["train_step_ms"] >= row["update_ms"]
    assert data["checkpoint"] == "ckpt_000000000256.msgpack"
    # Bad input: one line, exit 2, before anything is timed.
    for bad in (["--run", str(tmp_path / "nope")],
                ["--run", str(exp), "--variant", "x={not json}"],
                ["--run", str(exp), "--variant", 'x={"no_such_key": 1}'],
                ["--run", str(exp), "--steps", "0"]):
        assert learner_speed.main(bad) == 2, bad

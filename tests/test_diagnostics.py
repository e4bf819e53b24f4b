"""The diagnostics (omega.diagnostics): each one's --help, and those that read a trained
MuZero run on a tiny one."""

import importlib
import json
import math
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import omega.diagnostics
from omega.cli.main import main

try:
    from tests.test_cli import make_exp
except ImportError:  # pragma: no cover
    from test_cli import make_exp

REPO = Path(__file__).resolve().parents[1]


def test_every_diagnostic_is_listed_and_importable():
    public = sorted(m.name for m in pkgutil.iter_modules(omega.diagnostics.__path__)
                    if not m.name.startswith("_") and m.name != "runs")  # runs: a helper
    assert public == sorted(omega.diagnostics.DIAGNOSTICS)
    for name in public:
        module = importlib.import_module(f"omega.diagnostics.{name}")
        assert callable(module.main) and name in omega.diagnostics.__doc__


@pytest.mark.parametrize("name", omega.diagnostics.DIAGNOSTICS)
def test_diagnostic_help(name, capsys):
    module = importlib.import_module(f"omega.diagnostics.{name}")
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m omega.diagnostics.{name}")
    # argparse wraps the description (at spaces and hyphens): compare without whitespace
    assert "".join(module.__doc__.splitlines()[0].split()) in "".join(out.split())


def run_diagnostic(name: str, *args) -> subprocess.CompletedProcess:
    """``python -m omega.diagnostics.<name> ARGS`` from the repository root."""
    return subprocess.run([sys.executable, "-m", f"omega.diagnostics.{name}",
                           *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          timeout=600)


def test_diagnostic_runs_as_a_module():
    proc = run_diagnostic("model_probe", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--actions" in proc.stdout


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
    proc = run_diagnostic("model_probe", "--dir", exp, "--seed", 3, "--actions", "E,E,S,S,SE",
                          "--json", out)
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

    bad = run_diagnostic("model_probe", "--dir", exp, "--actions", "E,UP")
    assert bad.returncode == 2 and "unknown action(s) UP" in bad.stderr
    random_exp = make_exp(tmp_path)
    assert main(["run", "--dir", str(random_exp)]) == 0
    other = run_diagnostic("model_probe", "--dir", random_exp, "--actions", "E")
    assert other.returncode == 2 and "not a plain MuZero experiment" in other.stderr


def test_river_transition_kinds():
    from omega.diagnostics.river_transitions import kind_of

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
    proc = run_diagnostic("river_transitions", "--dir", exp, "--episodes", 1, "--seed", 5,
                          "--json", out)
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
    other = run_diagnostic("river_transitions", "--dir", room)
    assert other.returncode == 2 and "River tasks only" in other.stderr


def test_shaped_rewards_auc_and_returns_on_known_inputs():
    from omega.diagnostics.shaped_rewards import auc, discounted_returns, entropy_ratio

    assert auc([3.0, 4.0], [1.0, 2.0]) == 1.0 and auc([1.0], [2.0]) == 0.0
    assert auc([1.0, 2.0], [1.0, 2.0]) == 0.5  # ties count half
    assert math.isnan(auc([], [1.0]))
    assert discounted_returns([0.0, 0.0, 1.0], 0.5).tolist() == [0.25, 0.5, 1.0]
    assert entropy_ratio(np.zeros(8)) == pytest.approx(1.0)


def test_shaped_rewards_reads_a_muzero_run_and_refuses_other_agents(tmp_path):
    exp = tiny_muzero_exp(tmp_path)
    out = tmp_path / "shaped.json"
    proc = run_diagnostic("shaped_rewards", "--runs", exp, "--policy", "agent", "--policy",
                          "random", "--episodes", 2, "--json", out)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["policy"] for r in rows] == ["agent", "random"]
    for r in rows:
        assert r["episodes"] == 2 and r["steps"] >= 2 and r["env_steps"] == 512
        assert 0.0 <= r["prior_entropy"] <= 1.0 + 1e-6 and 0.0 <= r["stood_still_rate"] <= 1.0
    random_exp = make_exp(tmp_path)
    assert main(["run", "--dir", str(random_exp)]) == 0
    other = run_diagnostic("shaped_rewards", "--runs", random_exp)
    assert other.returncode == 2 and "is not a MuZero experiment" in other.stderr
    bad = run_diagnostic("shaped_rewards", "--runs", exp, "--episodes", 0)
    assert bad.returncode == 2 and "--episodes must be >= 1" in bad.stderr


def test_monsters_sorts_moves_next_to_a_monster():
    from nle import nethack

    from omega.diagnostics.monsters import died_within, hostile_cells, move_kinds
    from omega.diagnostics.search_accuracy import MOVES

    glyphs = np.full((21, 79), nethack.GLYPH_CMAP_OFF + 19, np.int16)  # room floor
    glyphs[5, 10] = nethack.GLYPH_MON_OFF + 16  # a monster at (10, 5)
    glyphs[8, 20] = nethack.GLYPH_PET_OFF + 16  # a pet at (20, 8): not hostile
    assert hostile_cells(glyphs) == {(10, 5)}
    n, e, s, w, ne, se, sw, nw = (MOVES[ord(c)] for c in "kljhunby")
    moves = [n, e, s, w, ne, se, sw, nw, None]
    # The hero at (11, 6): the monster is to its north-west.
    assert move_kinds(moves, (11, 6), {(10, 5)}) == [
        "stay", "away", "away", "stay", "away", "away", "away", "attack", "stay"]
    assert move_kinds(moves, (13, 6), {(10, 5)}) is None  # two cells away
    assert died_within(None, 3, 5).tolist() == [False] * 3
    assert died_within(6, 7, 5).tolist() == [False, False, True, True, True, True, True]


def test_monsters_reads_a_muzero_run_and_refuses_other_agents(tmp_path):
    exp = tiny_muzero_exp(tmp_path, "MiniHack-Room-Monster-5x5-v0", name="monster")
    out = tmp_path / "monsters.json"
    proc = run_diagnostic("monsters", "--dir", exp, "--episodes", 3, "--seed", 7,
                          "--json", out)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["seeds"] == [7, 9] and sum(row["endings"].values()) == 3
    groups = row["groups"]
    assert groups["next_to_monster"]["steps"] + groups["no_monster_next"]["steps"] == row["steps"]
    kinds = row["next_to_monster_by_kind"]
    if groups["next_to_monster"]["steps"]:
        assert sum(k["action_share"] for k in kinds.values()) == pytest.approx(1.0)
        assert sum(k["prior_mass"] for k in kinds.values()) == pytest.approx(1.0, abs=1e-4)
        assert sum(k["taken"] for k in kinds.values()) == groups["next_to_monster"]["steps"]
    died = row["endings"].get("died", 0)
    assert sum(g["died_at_step"] * g["steps"] for g in groups.values()
               if g["steps"]) == pytest.approx(died)
    random_exp = make_exp(tmp_path)
    assert main(["run", "--dir", str(random_exp)]) == 0
    other = run_diagnostic("monsters", "--dir", random_exp)
    assert other.returncode == 2 and "is not a MuZero experiment" in other.stderr

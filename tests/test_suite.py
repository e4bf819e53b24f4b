"""omega suite: validation before anything trains, and a tiny suite killed mid-run and run
again (finished runs are not redone, the killed one resumes from its checkpoint, the summary
is complete)."""

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from omega.cli.main import main
from omega.errors import ConfigError
from omega.suite.report import entry_rows, fmt_steps, row_cells
from omega.suite.run import GIF_EPISODES, GIF_RECORDINGS, make_gif, select_runs
from omega.suite.spec import SUITE_SET_KEYS, checkpoint_every, load_suite, spec_hash

REPO = Path(__file__).resolve().parents[1]

RANDOM_ROOM = """agent_type: random
env: {id: MiniHack-Room-5x5-v0, num_envs: 2, num_workers: 1}
record: {every_n_episodes: 0}
eval: {num_envs: 2}
"""
# One env: 128 env steps per update (the random agent's rollout), so this run checkpoints
# every few seconds and can be killed between two checkpoints.
RANDOM_BEAR = """agent_type: random
env: {id: Omega-AvoidFuzzyBear-v0, num_envs: 1, num_workers: 1}
record: {every_n_episodes: 0}
eval: {num_envs: 2}
"""
PPO = """agent_type: ppo
env: {id: MiniHack-Room-5x5-v0, num_envs: 4, num_workers: 1}
model: {kind: plain, embed_dim: 8, cnn_channels: [], mlp_hidden: 32, output_dim: 32}
ppo: {rollout_length: 32, num_minibatches: 2}
"""


def write_suite(tmp_path, runs, **top):
    (tmp_path / "room.yaml").write_text(RANDOM_ROOM)
    (tmp_path / "bear.yaml").write_text(RANDOM_BEAR)
    (tmp_path / "ppo.yaml").write_text(PPO)
    data = {"seeds": [0, 1], "budget": 256, "checkpoints": 2, "baselines": False,
            "eval": {"episodes": 4, "seed": 1000000}, "runs": runs, **top}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


# ---------------------------------------------------------------------------------------------
# validation: one line, exit 2, nothing trained


@pytest.mark.parametrize("runs, top, expected", [
    ([{"config": "nope.yaml"}], {}, "runs[0] (nope.yaml): config file"),
    ([{"config": "room.yaml", "overrides": {"env.num_envz": 4}}], {},
     "runs[0] (room.yaml): unknown config key 'env.num_envz'; did you mean 'env.num_envs'?"),
    ([{"config": "room.yaml", "overrides": {"ppo.learning_rate": "fast"}}], {},
     "config key 'ppo.learning_rate' must be a finite number"),
    ([{"config": "room.yaml", "overrides": {"train.total_env_steps": 9}}], {},
     "'train.total_env_steps' is set by the suite; use its 'budget' key instead"),
    ([{"config": "room.yaml"}], {"overrides": {"seed": 3}},
     "'seed' is set by the suite; use its 'seeds' key instead"),
    ([{"config": "ppo.yaml"}], {"budget": {"random": 256}},
     "no budget for agent_type 'ppo'"),
    ([{"config": "room.yaml"}, {"config": "room.yaml"}], {},
     "the name 'random/room' is taken by runs[0]"),
    ([{"config": "room.yaml", "seedz": [1]}], {}, "unknown key 'seedz'; did you mean 'seeds'?"),
    ([{"config": "room.yaml"}], {"checkpoint": 3}, "unknown key 'checkpoint'"),
    ([{"config": "room.yaml", "seeds": [1, 1]}], {}, "names a seed twice"),
    ([], {}, "'runs' must be a non-empty list"),
])
def test_bad_suite_fails_at_once(tmp_path, capsys, runs, top, expected):
    path = write_suite(tmp_path, runs, **top)
    out_dir = tmp_path / "out"
    code, _, err = run_cli(["suite", str(path), "--output-dir", str(out_dir)], capsys)
    assert code == 2, err
    assert err.startswith("omega: error: ") and expected in err, err
    assert len(err.splitlines()) == 1
    assert not out_dir.exists()  # nothing started


def test_bad_entry_after_good_ones_stops_everything(tmp_path, capsys):
    path = write_suite(tmp_path, [{"config": "room.yaml"}, {"config": "bear.yaml"},
                                  {"config": "ppo.yaml", "overrides": {"model.kind": "cnn"}}])
    code, _, err = run_cli(["suite", str(path), "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and "runs[2] (ppo.yaml)" in err and "model.kind" in err, err
    assert not (tmp_path / "out").exists()


def test_unreachable_ray_address_fails_at_once(tmp_path, capsys):
    pytest.importorskip("ray")
    path = write_suite(tmp_path, [{"config": "room.yaml"}])
    code, _, err = run_cli(["suite", str(path), "--output-dir", str(tmp_path / "out"),
                            "--backend", "ray", "--address", "127.0.0.1:1"], capsys)
    assert code == 2 and "no Ray cluster answers at --address 127.0.0.1:1" in err, err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, expected", [
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--address", "h:1"], "--address needs --backend ray"),
    (["--cpus-per-run", "2"], "--cpus-per-run needs --backend ray"),
])
def test_bad_flags(tmp_path, capsys, args, expected):
    path = write_suite(tmp_path, [{"config": "room.yaml"}])
    code, _, err = run_cli(["suite", str(path)] + args, capsys)
    assert code == 2 and expected in err


def test_resolved_configs(tmp_path):
    path = write_suite(tmp_path, [{"config": "room.yaml", "seeds": [4], "budget": 1000},
                                  {"config": "ppo.yaml", "name": "ppo/small",
                                   "overrides": {"ppo": {"learning_rate": 0.002}}}],
                       budget={"random": 300, "ppo": 640}, checkpoints=4,
                       overrides={"env.num_envs": 2})
    suite = load_suite(path, tmp_path / "out")
    assert [r.run_id for r in suite.runs] == ["random/room/seed4", "ppo/small/seed0",
                                               "ppo/small/seed1"]
    room, ppo0, ppo1 = suite.runs
    assert room.config["seed"] == 4 and room.budget == 1000
    assert room.config["train"]["total_env_steps"] == 1000
    assert room.config["train"]["checkpoint_every_steps"] == checkpoint_every(1000, 4) == 250
    assert room.config["train"]["keep_checkpoints"] >= 5  # every checkpoint is evaluated
    assert room.config["eval"] == {**room.config["eval"], "episodes": 4, "seed": 1000000}
    assert ppo0.config["ppo"]["learning_rate"] == 0.002 and ppo0.budget == 640
    assert ppo0.config["env"]["num_envs"] == 2  # the suite's overrides
    assert ppo0.spec_hash != ppo1.spec_hash  # the seed is part of the run
    assert suite.output_dir == tmp_path / "out"


def test_another_agents_defaults_leave_a_run_finished(tmp_path):
    path = write_suite(tmp_path, [{"config": "ppo.yaml"}], budget={"ppo": 640})
    run = load_suite(path, tmp_path / "out").runs[0]
    other = copy.deepcopy(run.config)
    other["muzero"]["gamma"] = 0.5  # as if MuZero's defaults changed
    assert spec_hash(other) == run.spec_hash
    mine = copy.deepcopy(run.config)
    mine["ppo"]["learning_rate"] = 0.5
    assert spec_hash(mine) != run.spec_hash
    budget = copy.deepcopy(run.config)
    budget["train"]["total_env_steps"] = 1280
    assert spec_hash(budget) != run.spec_hash


def test_only_selects_runs_seed_by_seed(tmp_path, capsys):
    path = write_suite(tmp_path, [{"config": "room.yaml"}, {"config": "bear.yaml"},
                                  {"config": "ppo.yaml", "seeds": [3]}],
                       budget={"random": 256, "ppo": 640})
    suite = load_suite(path, tmp_path / "out")
    assert [r.run_id for r in select_runs(suite)] == [
        "random/room/seed0", "random/bear/seed0", "ppo/ppo/seed3", "random/room/seed1",
        "random/bear/seed1"]
    assert [r.run_id for r in select_runs(suite, ("random/*",))] == [
        "random/room/seed0", "random/bear/seed0", "random/room/seed1", "random/bear/seed1"]
    assert [r.run_id for r in select_runs(suite, ("*/bear/seed1", "ppo/ppo"))] == [
        "random/bear/seed1", "ppo/ppo/seed3"]
    code, out, _ = run_cli(["suite", str(path), "--output-dir", str(tmp_path / "out"),
                            "--only", "random/bear", "--dry-run"], capsys)
    assert code == 0 and "2 runs of 5 (--only)" in out and "random/room/seed0" not in out
    code, _, err = run_cli(["suite", str(path), "--output-dir", str(tmp_path / "out"),
                            "--only", "random/beer"], capsys)
    assert code == 2 and "--only 'random/beer' matches no run" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    # Commas separate patterns as repeated flags do; an empty one is refused.
    code, out, _ = run_cli(["suite", str(path), "--output-dir", str(tmp_path / "out"),
                            "--only", "*/bear/seed1, ppo/ppo", "--dry-run"], capsys)
    assert code == 0 and "2 runs of 5 (--only)" in out and "random/room/seed0" not in out
    code, _, err = run_cli(["suite", str(path), "--output-dir", str(tmp_path / "out"),
                            "--only", "ppo/ppo,"], capsys)
    assert code == 2 and "empty pattern" in err and len(err.splitlines()) == 1


def test_gif_shows_an_eval_episode_the_trained_agent_solves(tmp_path, capsys):
    (tmp_path / "room.yaml").write_text(RANDOM_ROOM + "train: {total_env_steps: 256}\n")
    exp = tmp_path / "exp"
    assert main(["make", "--config", str(tmp_path / "room.yaml"), "--output-dir", str(exp)]) == 0
    assert main(["run", "--dir", str(exp)]) == 0
    gif = make_gif(exp, tmp_path / "gifs" / "seed0.gif")
    assert gif == tmp_path / "gifs" / "seed0.gif"
    with Image.open(gif) as im:
        assert im.n_frames > 1
    data = json.loads((exp / GIF_RECORDINGS / "eval.json").read_text())
    assert len(data["seeds"]) == GIF_EPISODES and data["seeds"][0] == 1000000
    drawn = next(s for s, ok in zip(data["seeds"], data["successes"], strict=True) if ok)
    assert f"GIF of eval seed {drawn} (solved)" in capsys.readouterr().out
    assert not list(tmp_path.glob("gifs/.*"))  # no temporary file left


def test_a_run_another_process_trains_is_left_to_it(tmp_path, capsys):
    from omega.config import config_from_dict, config_to_yaml
    from omega.suite.run import config_path, run_dir
    from omega.training.experiment import ExperimentLock, make_experiment

    path = write_suite(tmp_path, [{"config": "room.yaml"}])
    suite = load_suite(path, tmp_path / "out")
    held, free = suite.runs
    cfg = config_path(suite.output_dir, held)
    cfg.parent.mkdir(parents=True)
    cfg.write_text(config_to_yaml(config_from_dict(held.config)))
    make_experiment(cfg, run_dir(suite.output_dir, held))
    args = ["suite", str(path), "--output-dir", str(tmp_path / "out")]
    with ExperimentLock(run_dir(suite.output_dir, held), "omega run"):
        code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert f"{held.run_id} is training in another process, 'omega run' (pid {os.getpid()}" in out
    assert "1 in another process" in out and "failed" not in out
    assert f"were left to it ({held.run_id})" in out
    results = tmp_path / "out" / "results" / held.name
    assert (results / "seed1.json").is_file() and not (results / "seed0.json").exists()
    code, out, err = run_cli(args, capsys)  # the lock is free again: this command trains it
    assert code == 0, err
    assert (results / "seed0.json").is_file() and "another process" not in out


def test_changed_config_is_refused_not_mixed(tmp_path, capsys):
    path = write_suite(tmp_path, [{"config": "room.yaml"}])
    suite = load_suite(path, tmp_path / "out")
    run = suite.runs[0]
    res = tmp_path / "out" / "results" / run.name / "seed0.json"
    res.parent.mkdir(parents=True)
    res.write_text(json.dumps({"spec_hash": "something else"}))
    code, _, err = run_cli(["suite", str(path), "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and "with another config" in err and len(err.splitlines()) == 1


def test_row_cells_and_formats():
    assert fmt_steps(1_000_000) == "1M" and fmt_steps(500_000) == "500k"
    assert fmt_steps(51_200) == "51.2k" and fmt_steps(None) == "–"
    entry = {"name": "ppo/x", "agent_type": "ppo", "env_id": "E", "config": "x.yaml",
             "budget": 1000, "seeds": [0, 1, 2]}

    def result(seed, rate, steps09):
        succ = [True] * int(rate * 10) + [False] * (10 - int(rate * 10))
        return {"name": "ppo/x", "seed": seed, "env_steps": 1000, "train_wall_s": 60.0 * (seed + 1),
                "steps_to_success_0.9": steps09,
                "final": {"success_rate": rate, "successes": succ, "mean_return": rate},
                "curve": [{"env_steps": 1000, "success_rate": rate}]}

    rows = entry_rows([entry], [result(0, 1.0, 500), result(1, 0.5, None)],
                      {"E": {"eval": {"success_rate": 0.2, "mean_return": 0.1}}})
    cells = row_cells(rows[0])
    assert cells["success"] == "0.75" and cells["per_seed"] == "1.00, 0.50 (2 of 3 seeds)"
    assert cells["steps"] == "500, not reached" and cells["wall"] == "1.0–2.0 min"
    assert rows[0]["random_success"] == 0.2
    lo, hi = rows[0]["success_ci95"]  # Wilson over the 20 pooled episodes, 15 successes
    assert 0.5 < lo < 0.75 < hi < 0.95
    assert row_cells(entry_rows([entry], [], {})[0])["success"] == "not run"
    assert cells["failures"] == "–"  # evaluations made before the endings were kept
    first, second = result(0, 0.7, None), result(1, 0.9, 500)
    first["final"]["ending_counts"] = {"solved": 7, "died": 2, "time_limit": 1, "ended": 0}
    second["final"]["ending_counts"] = {"solved": 9, "died": 0, "time_limit": 0, "ended": 1}
    rows = entry_rows([entry], [first, second], {})
    assert row_cells(rows[0])["failures"] == "died 2, time limit 1, other ending 1"


# ---------------------------------------------------------------------------------------------
# killed mid-run, started again


def _wait_for(pred, proc, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def test_killed_suite_resumes_and_redoes_nothing_finished(tmp_path):
    # Two configs x two seeds, run seed by seed (room 0, bear 0, room 1, bear 1); the bear
    # runs are 768 env steps on one env, checkpointed every 256, so the suite is killed
    # while the first of them trains.
    path = write_suite(tmp_path, [{"config": "room.yaml"},
                                  {"config": "bear.yaml", "budget": 768}], checkpoints=3)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "omega", "suite", str(path), "--output-dir", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results = out / "results"
    first = [results / "random" / "room" / "seed0.json"]
    bear0 = out / "runs" / "random" / "bear" / "seed0"
    log = tmp_path / "first.log"
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        ok = _wait_for(lambda: all(p.is_file() for p in first)
                       and any((bear0 / "checkpoints").glob("ckpt_*.msgpack")), proc, 240)
        assert ok, log.read_text()
        assert not (results / "random" / "bear" / "seed0.json").exists(), \
            "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the suite, its run and the run's env workers
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {p: p.read_bytes() for p in first}
    metrics = out / "runs" / "random" / "room" / "seed0" / "metrics.csv"
    metrics_mtime = metrics.stat().st_mtime_ns

    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 finished before, 1 to resume, 2 to start" in again.stdout, again.stdout
    assert "started random/room/seed0" not in again.stdout  # finished runs are not redone
    assert "started random/room/seed1" in again.stdout
    assert {p: p.read_bytes() for p in first} == before
    assert metrics.stat().st_mtime_ns == metrics_mtime

    bear_log = (out / "logs" / "random__bear__seed0.log").read_text()
    assert "resuming from ckpt_" in bear_log, bear_log
    resumed = json.loads((results / "random" / "bear" / "seed0.json").read_text())
    assert resumed["status"] == "done" and resumed["env_steps"] == 768
    assert resumed["killed_segments"] == 1
    assert resumed["train_wall_s"] > 0
    # Every kept checkpoint was evaluated: 256, 512 and 768 env steps.
    assert [c["env_steps"] for c in resumed["curve"]] == [256, 512, 768]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs_planned"] == summary["runs_finished"] == 4
    assert [(r["name"], [x["seed"] for x in r["runs"]]) for r in summary["rows"]] == \
        [("random/room", [0, 1]), ("random/bear", [0, 1])]
    assert all(x["success_rate"] is not None for r in summary["rows"] for x in r["runs"])
    md = (out / "summary.md").read_text()
    assert "`random/room`" in md and "`random/bear`" in md and "not run" not in md
    assert (out / "plots" / "Omega-AvoidFuzzyBear-v0.png").is_file()


def test_curves_leave_out_checkpoints_written_off_the_cadence(tmp_path):
    # Cadence 1000: 1024 and 2048 are scheduled; 100 and 1536 were saved when the run was
    # stopped and resumed; the newest (2560, the end of the budget) is always a point.
    from types import SimpleNamespace

    from omega.suite.run import EVAL_DIR, evaluate_checkpoints
    from omega.training.checkpoint import checkpoint_path

    exp = tmp_path / "exp"
    (exp / EVAL_DIR).mkdir(parents=True)
    for steps in (100, 1024, 1536, 2048, 2560):
        ckpt = checkpoint_path(exp / "checkpoints", steps)
        ckpt.parent.mkdir(exist_ok=True)
        ckpt.write_bytes(b"")  # never read: every evaluation below is cached
        (exp / EVAL_DIR / (ckpt.stem + ".json")).write_text(
            json.dumps({"env_steps": steps, "success_rate": 0.5}))
    cfg = SimpleNamespace(train=SimpleNamespace(checkpoint_every_steps=1000))
    curve = evaluate_checkpoints(exp, cfg, "cpu")
    assert [c["env_steps"] for c in curve] == [1024, 2048, 2560]


def test_a_run_stopped_alone_is_stopped_not_failed_and_the_others_go_on(tmp_path):
    # Ctrl-C / SIGTERM to one run's process (to free a core, say): the run saves a checkpoint
    # and exits 130; the suite counts it as stopped, not failed, still trains the runs after
    # it, exits 130, and the same command resumes it.
    path = write_suite(tmp_path, [{"config": "bear.yaml", "budget": 768},
                                  {"config": "room.yaml"}], checkpoints=3, seeds=[0])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "omega", "suite", str(path), "--output-dir", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    bear_log = out / "logs" / "random__bear__seed0.log"
    bear_ckpts = out / "runs" / "random" / "bear" / "seed0" / "checkpoints"
    log = tmp_path / "first.log"
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        ok = _wait_for(lambda: any(bear_ckpts.glob("ckpt_*.msgpack")), proc, 240)
        assert ok, log.read_text()
        header = bear_log.read_text().splitlines()[0]  # "=== omega suite: ID, pid N on ..."
        os.kill(int(header.split(", pid ")[1].split()[0]), signal.SIGINT)
        assert proc.wait(timeout=300) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    first = log.read_text()
    assert "random/bear/seed0 stopped by a signal (exit 130) after saving a checkpoint" in first
    assert "failed" not in first, first
    assert "random/room/seed0 done" in first, first  # the next run still trained
    assert "2/2 done" not in first and "1/2 done, 0 running, 0 left, 1 stopped" in first
    assert not (out / "results" / "random" / "bear" / "seed0.json").exists()

    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 finished before, 1 to resume, 0 to start" in again.stdout, again.stdout
    assert "resuming from ckpt_" in bear_log.read_text()
    resumed = json.loads((out / "results" / "random" / "bear" / "seed0.json").read_text())
    assert resumed["status"] == "done" and resumed["env_steps"] == 768


def test_dry_run_lists_the_runs_and_their_state(tmp_path, capsys):
    path = write_suite(tmp_path, [{"config": "room.yaml"}], baselines=True)
    code, out, _ = run_cli(["suite", str(path), "--output-dir", str(tmp_path / "out"),
                            "--dry-run"], capsys)
    assert code == 0
    assert "random/MiniHack-Room-5x5-v0" in out and "random/room/seed1" in out
    assert out.count(" new ") == 3
    assert not (tmp_path / "out").exists()


def test_the_time_left_comes_from_the_finished_runs_pace(tmp_path, capsys):
    import io
    import json

    from omega.suite.run import Tracker, fmt_duration, result_path

    path = write_suite(tmp_path, [{"config": "room.yaml"}, {"config": "ppo.yaml"}],
                       budget={"random": 1000, "ppo": 4000})
    suite = load_suite(path, tmp_path / "out")
    room0, ppo0, room1, ppo1 = select_runs(suite)

    def finish(run, env_steps, train_s, eval_s, output_dir=None):
        out = result_path(output_dir or suite.output_dir, run)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"spec_hash": run.spec_hash, "env_steps": env_steps,
                                   "train_wall_s": train_s, "eval_wall_s": eval_s}))

    finish(room0, 1000, 90.0, 10.0)  # random: 0.1 s per env step
    tracker = Tracker(suite, list(suite.runs), io.StringIO(), parallel=2)
    assert tracker.seconds_left() is None  # no PPO run has finished: no pace for PPO yet
    assert "to go" not in tracker.line()
    finish(ppo0, 4000, 1100.0, 100.0)  # PPO: 0.3 s per env step
    tracker.done += 1
    # room1: 1000 x 0.1 s, ppo1: 4000 x 0.3 s, two at a time; a failed run is not waited for.
    assert tracker.seconds_left() == (100.0 + 1200.0) / 2
    assert "; about 11 min to go at the finished runs' pace, 2 at a time" in tracker.line()
    fresh = Tracker(suite, list(suite.runs), io.StringIO(), parallel=2)
    fresh.failed.append(ppo1.run_id)
    assert fresh.seconds_left() == 100.0 / 2
    # Recurrent runs are several times slower per env step: a run's pace comes from its own
    # entry's finished seeds, else from runs of its agent type with the same memory.
    (tmp_path / "mixed").mkdir()
    mixed_path = write_suite(tmp_path / "mixed", [
        {"config": "ppo.yaml"},
        {"config": "ppo.yaml", "name": "memory",
         "overrides": {"model.kind": "perceiver", "model.recurrent": True}},
        {"config": "ppo.yaml", "name": "other", "overrides": {"ppo.learning_rate": 0.001}}],
        budget={"ppo": 4000})
    mixed_suite = load_suite(mixed_path, tmp_path / "out2")
    runs = {r.run_id: r for r in select_runs(mixed_suite)}
    finish(runs["ppo/ppo/seed0"], 4000, 1100.0, 100.0, mixed_suite.output_dir)  # 0.3 s/step
    finish(runs["memory/seed0"], 4000, 5900.0, 100.0, mixed_suite.output_dir)  # 1.5 s/step
    mixed = Tracker(mixed_suite, list(mixed_suite.runs), io.StringIO(), parallel=1)
    # ppo seed 1 and both 'other' seeds at 0.3, memory seed 1 at 1.5 (not the pooled 0.9).
    assert mixed.seconds_left() == pytest.approx(3 * 4000 * 0.3 + 4000 * 1.5)
    assert [fmt_duration(s) for s in (30, 600, 5400, 19080)] == [
        "under a minute", "10 min", "1.5 h", "5.3 h"]
    code, out, _ = run_cli(["suite", str(path), "--output-dir", str(tmp_path / "out"),
                            "--dry-run", "--jobs", "2"], capsys)
    assert code == 0 and "about 11 min of runs left at the finished runs' pace, 2 at a time" in out


def test_shipped_suites_load():
    original = load_suite(REPO / "configs" / "suites" / "original.yaml")
    tasks = {r.env_id for r in original.runs}
    assert len(tasks) == 19
    assert {r.agent_type for r in original.runs} == {"ppo", "muzero"}
    for env_id in tasks:  # both agents on every task
        assert {r.agent_type for r in original.runs if r.env_id == env_id} == {"ppo", "muzero"}
    assert {r.budget for r in original.runs if r.agent_type == "ppo"} == {1_000_000}
    assert {r.budget for r in original.runs if r.agent_type == "muzero"} == {500_000}
    for env_id in ("MiniHack-CorridorBattle-v0", "MiniHack-Room-Ultimate-15x15-v0",
                   "MiniHack-MazeWalk-15x15-v0", "MiniHack-Memento-Short-F2-v0"):
        assert all(len({r.seed for r in original.runs if r.env_id == env_id
                        and r.agent_type == a}) >= 3 for a in ("ppo", "muzero"))
    assert original.eval_episodes == 100 and original.eval_seed == 1_000_000
    assert len(original.baselines) == 19
    quick = load_suite(REPO / "configs" / "suites" / "quick.yaml")
    assert quick.runs and all(r.budget <= 50_000 for r in quick.runs)



def test_both_agents_train_on_the_same_task():
    # The env section is the task (its reward shaping, MiniHack's step penalty, the cells the
    # observation shows): a row pair compares agents only if both see the same task.
    original = load_suite(REPO / "configs" / "suites" / "original.yaml")
    for env_id in {r.env_id for r in original.runs}:
        envs = {r.agent_type: r.config["env"] for r in original.runs if r.env_id == env_id}
        assert envs["ppo"] == envs["muzero"], env_id


def test_transfer_suite_runs_the_recipes_unchanged_but_for_the_env():
    # The suite asks whether a recipe is tuned to its room: each entry must be the recipe
    # itself (as it ships, whatever it becomes), not a task config that has taken settings
    # of its own. Only the env id, PPO's HideNSeek crop (not in *_crop9), the shaped entries'
    # reward and the same-inputs entries' reward and observation keys differ.
    from omega.config import config_to_dict, load_config
    transfer = load_suite(REPO / "configs" / "suites" / "transfer.yaml")
    recipes = {a: config_to_dict(load_config(REPO / "configs" / a / f))
               for a, f in (("muzero", "room_random_15x15_100k.yaml"),
                            ("ppo", "room_random_15x15.yaml"))}

    def without_suite_keys(config):
        config = copy.deepcopy(config)
        for dotted in SUITE_SET_KEYS:
            *sections, key = dotted.split(".")
            section = config
            for name in sections:
                section = section[name]
            section.pop(key)
        return config

    assert {r.env_id for r in transfer.runs} == {"MiniHack-Room-Ultimate-15x15-v0",
                                                 "MiniHack-HideNSeek-Mapped-v0"}
    for run in transfer.runs:
        expected = without_suite_keys(recipes[run.agent_type])
        expected["env"]["id"] = run.env_id
        same_inputs = run.name.endswith("_same_inputs")
        if (run.agent_type == "ppo" and "HideNSeek" in run.env_id and not same_inputs
                and not run.name.endswith("_crop9")):
            expected["env"]["observation"]["crop_size"] = 21
        if run.name.endswith("_shaped") or same_inputs:
            expected["env"]["reward_shaping"] = recipes["muzero"]["env"]["reward_shaping"]
        if same_inputs:
            expected["env"]["observation"]["keys"] = recipes["muzero"]["env"]["observation"]["keys"]
        assert without_suite_keys(run.config) == expected, run.name
    assert {r.budget for r in transfer.runs if r.agent_type == "muzero"} == {300_000}
    assert {r.budget for r in transfer.runs if r.agent_type == "ppo"} == {500_000}


def test_config_error_type():
    with pytest.raises(ConfigError):
        load_suite(REPO / "configs" / "suites" / "missing.yaml")


def test_a_run_process_gets_sigterm_when_the_suite_dies(tmp_path):
    """A suite killed outright must not leave its runs training (they would hold their
    experiment locks): each run's process asks the kernel for SIGTERM when its parent dies,
    and SIGTERM makes a run save a checkpoint and exit."""
    mark = tmp_path / "got_sigterm"
    child = ("import os, signal, sys, time\n"
             "from omega.suite.run import _die_with_parent\n"
             "_die_with_parent(int(sys.argv[1]))\n"
             "def on_term(*_):\n"
             # Written then renamed: the test must never read a created but unwritten file.
             f"    with open({str(mark) + '.tmp'!r}, 'w') as f:\n"
             "        f.write('yes')\n"
             f"    os.replace({str(mark) + '.tmp'!r}, {str(mark)!r})\n"
             "    sys.exit(0)\n"
             "signal.signal(signal.SIGTERM, on_term)\n"
             "print('ready', flush=True)\n"
             "time.sleep(120)\n")
    parent = ("import os, subprocess, sys, time\n"
              f"c = subprocess.Popen([sys.executable, '-c', {child!r}, str(os.getpid())], "
              "stdout=subprocess.PIPE, text=True)\n"
              "print(c.stdout.readline().strip(), flush=True)\n"
              "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.kill()  # SIGKILL: no chance to pass anything on
        proc.wait()
        t0 = time.monotonic()
        while not mark.exists() and time.monotonic() - t0 < 30:
            time.sleep(0.1)
        assert mark.read_text() == "yes"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ray_backend_runs_each_job_as_a_ray_task(tmp_path):
    pytest.importorskip("ray")
    path = write_suite(tmp_path, [{"config": "room.yaml", "seeds": [0]}],
                       eval={"episodes": 2, "seed": 1000000})
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "omega", "suite", str(path), "--output-dir",
                           str(out), "--backend", "ray"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "omega: suite suite: 1/1 done, 0 running, 0 left" in proc.stdout, proc.stdout
    result = json.loads((out / "results" / "random" / "room" / "seed0.json").read_text())
    assert result["status"] == "done" and result["host"]["backend"] == "ray"
    assert "random/room/seed0 finished" in (out / "logs" / "random__room__seed0.log").read_text()

"""The Ray backend on a local Ray: training (PPO, MuZero with a reanalyze worker),
checkpoints + resume, killed actors, stale trajectories, and the errors. One Ray session
serves the whole module."""

import csv
import json
import os
import signal
import sys
import warnings

import numpy as np
import pytest
import ray

from omega.agents.base import Trajectory
from omega.cli.main import main
from omega.errors import OmegaError
from omega.training.checkpoint import list_checkpoints
from omega.training.distributed import (
    LagStats,
    ReanalyzeWorker,
    actor_seeds,
    admit,
    check_reachable,
    concat_rollouts,
    train_distributed,
)

TINY_PPO = """\
agent_type: ppo
seed: 1
env:
  id: MiniHack-Room-5x5-v0
  num_envs: 4
  num_workers: 1
train:
  total_env_steps: 256
  checkpoint_every_steps: 128
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

# The random agent acts 128 steps per rollout: 512 env steps per update with 4 envs.
RANDOM = """\
agent_type: random
seed: 2
env:
  id: MiniHack-Room-5x5-v0
  num_envs: 4
  num_workers: 1
train:
  total_env_steps: {steps}
  checkpoint_every_steps: 100000
  log_every_steps: 512
record:
  every_n_episodes: 0
distributed:
  max_policy_lag: {lag}
"""


# 2 actors x 4 envs x T = 8: 64 env steps per round. One reanalyze worker.
TINY_MUZERO = """\
agent_type: muzero
seed: 3
env:
  id: MiniHack-Room-5x5-v0
  num_envs: 4
  num_workers: 1
train:
  total_env_steps: {steps}
  checkpoint_every_steps: 128
  log_every_steps: 64
record:
  every_n_episodes: 0
model:
  embed_dim: 8
  cnn_channels: []
  mlp_hidden: 32
  output_dim: 32
muzero:
  latent_dim: 16
  dynamics_hidden: 32
  prediction_hidden: 32
  support_size: 5
  num_simulations: 4
  rollout_length: 8
  replay_size: 512
  warmup_steps: 64
  batch_size: 16
  unroll_steps: 3
  td_steps: 3
  reanalyze_fraction: 0.5
  reanalyze_batch_size: 32
distributed:
  num_reanalyze_workers: {reanalyze}
"""


@pytest.fixture(scope="module")
def ray_session():
    # The Ray actors inherit this: XLA's optimisations would take longer than running the
    # tiny programs unoptimised (the fast_compiles fixture does it for this process).
    old = os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS")
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    try:
        with warnings.catch_warnings():  # Ray's fork + exec of its services is not a bare fork
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
            ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=True,
                     logging_level="WARNING")
    finally:
        if old is None:
            del os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"]
        else:
            os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = old
    yield
    ray.shutdown()


def make_exp(tmp_path, text, name="exp"):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(text)
    exp = tmp_path / name
    assert main(["make", "--config", str(cfg), "--output-dir", str(exp)]) == 0
    return exp


def read_metrics(exp):
    with (exp / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# Pure bookkeeping


def test_admit_drops_beyond_max_lag_and_counts_each_trajectory_once():
    stats = LagStats()
    decisions = []
    # (learner version, version the trajectory was acted with), max lag 1.
    for learner, behaviour in ((0, 0), (1, 0), (2, 0), (2, 2), (5, 3), (5, 4)):
        ok, stats = admit(stats, learner, behaviour, max_lag=1)
        decisions.append(ok)
    assert decisions == [True, True, False, True, False, True]
    assert stats == LagStats(consumed=4, dropped=2, lag_sum=0 + 1 + 0 + 1)
    assert stats.mean_lag == pytest.approx(0.5)
    assert np.isnan(LagStats().mean_lag)
    assert admit(LagStats(), 3, 0, max_lag=3)[0]
    with pytest.raises(ValueError, match="newer than the learner"):
        admit(LagStats(), 1, 2, max_lag=5)


def test_actor_seeds_differ_per_actor_replacement_and_resume():
    seeds = {actor_seeds(0, steps, i, g) for steps in (0, 512) for i in range(3) for g in range(3)}
    assert len(seeds) == 18
    assert actor_seeds(0, 0, 1, 0) == actor_seeds(0, 0, 1, 0)
    assert all(0 <= env_s < 2**31 for env_s, _ in seeds)


def test_concat_rollouts_puts_each_actors_envs_side_by_side():
    rng = np.random.default_rng(0)
    t, a, mem = 3, 4, (2, 5)

    def rollout(n, carry=True):
        return Trajectory(
            obs={"glyphs_crop": rng.integers(0, 100, (t + 1, n, 3, 3)).astype(np.int16),
                 "blstats": rng.normal(size=(t + 1, n, 7)).astype(np.float32)},
            first=rng.random((t + 1, n)) < 0.5, action=rng.integers(0, a, (t, n)),
            reward=rng.normal(size=(t, n)).astype(np.float32), terminated=rng.random((t, n)) < .3,
            truncated=rng.random((t, n)) < .3, truncation_value=rng.normal(size=(t, n)),
            extras={"search_policy": rng.dirichlet(np.ones(a), (t, n)),
                    "root_value": rng.normal(size=(t, n)),
                    "memory": rng.normal(size=(t, n) + mem)},  # a recurrent encoder's memory
            initial_carry=rng.normal(size=(n,) + mem) if carry else None)

    parts = [rollout(2), rollout(3)]
    both = concat_rollouts(parts)
    assert both.action.shape == (t, 5) and both.obs["glyphs_crop"].shape == (t + 1, 5, 3, 3)
    assert both.extras["memory"].shape == (t, 5) + mem and both.initial_carry.shape == (5,) + mem
    for lo, part in ((0, parts[0]), (2, parts[1])):
        envs = slice(lo, lo + part.action.shape[1])
        for field in ("first", "action", "reward", "terminated", "truncated",
                      "truncation_value"):
            np.testing.assert_array_equal(getattr(both, field)[:, envs], getattr(part, field))
        for key in part.obs:
            np.testing.assert_array_equal(both.obs[key][:, envs], part.obs[key])
        for key in part.extras:
            np.testing.assert_array_equal(both.extras[key][:, envs], part.extras[key])
        np.testing.assert_array_equal(both.initial_carry[envs], part.initial_carry)
    assert both.obs["glyphs_crop"].dtype == np.int16
    # Stateless policies: no carry; and rollouts of different lengths are refused.
    assert concat_rollouts([rollout(2, carry=False), rollout(1, carry=False)]).initial_carry is None
    short = parts[0]._replace(action=parts[0].action[:2])
    with pytest.raises(ValueError, match="different lengths"):
        concat_rollouts([short, parts[1]])


def test_reanalyze_worker_targets_are_written_back_unless_evicted():
    import dataclasses

    from test_muzero_ext import SMALL, TINY, A, filled_agent, walk_trajectory

    from omega.config import ExperimentConfig

    cfg = dataclasses.replace(SMALL, reanalyze_fraction=0.5, reanalyze_batch_size=24,
                              replay_size=384)  # 48 slots per env: three rollouts of 16
    agent, state = filled_agent(cfg, rollouts=2)
    worker = ReanalyzeWorker(ExperimentConfig(agent_type="muzero", muzero=cfg, model=TINY), A)
    batch = agent.sample_reanalyze_batch()
    assert len(batch.env) == 24 and batch.obs["glyphs_crop"].shape[0] == 24
    assert np.all(batch.time >= agent.replay.oldest) and np.all(batch.time < agent.replay.time)
    policy, value = worker.reanalyze(agent.params(state), batch)  # what a Ray actor returns
    # The worker's agent searches as the learner's would: same greedy search, fixed key.
    mine = agent.search_targets(state.params, batch)
    np.testing.assert_allclose(policy, mine[0], atol=1e-6)
    np.testing.assert_allclose(value, mine[1], atol=1e-6)
    slots = batch.time % agent.replay.capacity
    before = agent.replay.data["search_policy"].copy()
    assert agent.write_search_targets(batch.env, batch.time, policy, value) == 24
    np.testing.assert_allclose(agent.replay.data["search_policy"][batch.env, slots], policy)
    np.testing.assert_allclose(agent.replay.data["root_value"][batch.env, slots], value)
    assert np.all(np.abs(agent.replay.data["search_policy"][batch.env, slots]
                         - before[batch.env, slots]).sum(-1) > 1e-4)

    # Two more rollouts evict the first one (times 0..15) while a batch is out.
    batch = agent.sample_reanalyze_batch()
    np_rng = np.random.default_rng(9)
    for _ in range(2):
        traj = walk_trajectory(np_rng, np_rng)
        agent.replay.add({k: v[:-1] for k, v in traj.obs.items()}, traj.action, traj.reward,
                         traj.terminated, traj.truncated, traj.truncation_value,
                         traj.extras["search_policy"], traj.extras["root_value"])
    assert agent.replay.oldest == 16
    evicted = batch.time < 16
    assert evicted.any() and not evicted.all()
    before = agent.replay.data["search_policy"].copy()
    policy, value = worker.reanalyze(agent.params(state), batch)
    assert agent.write_search_targets(batch.env, batch.time, policy, value) == (~evicted).sum()
    slots = batch.time % agent.replay.capacity
    np.testing.assert_allclose(agent.replay.data["search_policy"][batch.env[~evicted],
                                                                  slots[~evicted]],
                               policy[~evicted])
    # The evicted steps' slots hold the newest rollout's steps now: untouched.
    np.testing.assert_array_equal(agent.replay.data["search_policy"][batch.env[evicted],
                                                                     slots[evicted]],
                                  before[batch.env[evicted], slots[evicted]])


# ---------------------------------------------------------------------------------------------
# End to end on local Ray


@pytest.mark.usefixtures("ray_session")
def test_ppo_trains_checkpoints_metrics_and_evaluates(tmp_path, capsys):
    exp = make_exp(tmp_path, TINY_PPO)
    assert main(["run", "--dir", str(exp), "--backend", "ray", "--num-actors", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 Ray actors x 4 envs" in out and "omega: actor 1 ready (pid" in out
    rows = read_metrics(exp)
    # Every consumed trajectory adds T * N = 64 env steps and one update, exactly once.
    assert [int(r["env_steps"]) for r in rows] == [64, 128, 192, 256]
    assert [int(r["updates"]) for r in rows] == [1, 2, 3, 4]
    assert {"actor_restarts", "dropped_stale", "policy_lag", "worker_restarts",
            "policy_loss"} <= rows[-1].keys()
    assert int(rows[-1]["actor_restarts"]) == 0
    lags = [float(r["policy_lag"]) for r in rows]
    assert all(0 <= x <= 2 for x in lags)  # distributed.max_policy_lag defaults to 2
    ckpts = list_checkpoints(exp / "checkpoints")
    assert [c.name for c in ckpts] == ["ckpt_000000000128.msgpack", "ckpt_000000000256.msgpack"]

    # Same checkpoint format as the local loop: eval reads it.
    eval_json = tmp_path / "eval.json"
    assert main(["eval", "--dir", str(exp), "--episodes", "2", "--seed", "0",
                 "--json", str(eval_json)]) == 0
    assert json.loads(eval_json.read_text())["env_steps"] == 256


@pytest.mark.usefixtures("ray_session")
def test_killed_actor_is_replaced_then_resume_hits_the_restart_limit(tmp_path, capsys):
    # One actor: the run can only finish if its replacement delivers.
    exp = make_exp(tmp_path, RANDOM.format(steps=2048, lag=2))
    killed = []

    def kill_once(updates, handles):
        if updates == 2 and not killed:
            killed.append(handles[0])
            ray.kill(handles[0], no_restart=True)

    loop = train_distributed(exp, num_actors=1, on_update=kill_once)
    out = capsys.readouterr().out
    assert killed
    assert "omega: actor 0 died (" in out and "); restarting it" in out
    assert "omega: actor 0 is back (pid" in out
    assert (loop.env_steps, loop.updates) == (2048, 4)
    rows = read_metrics(exp)
    assert [int(r["env_steps"]) for r in rows] == [512, 1024, 1536, 2048]
    assert [int(r["actor_restarts"]) for r in rows] == [0, 0, 1, 1]
    assert "omega: done, 2,048 env steps" in out

    # The distributed section is not part of the config hash: a ray run resumes with a new
    # restart limit. With none allowed, the next death stops the run with one clear error,
    # and the learner's work up to then is checkpointed.
    config = exp / "config.yaml"
    config.write_text(config.read_text().replace("max_actor_restarts: 10",
                                                 "max_actor_restarts: 0"))

    def kill_always(updates, handles):
        ray.kill(handles[0], no_restart=True)

    with pytest.raises(OmegaError, match=r"after 0 actor restarts \(distributed.max_actor_restarts\)"):
        train_distributed(exp, total_env_steps=4096, num_actors=1, on_update=kill_always)
    assert "resuming from ckpt_000000002048.msgpack at 2,048 env steps" in capsys.readouterr().out
    assert list_checkpoints(exp / "checkpoints")[-1].name == "ckpt_000000002560.msgpack"


@pytest.mark.usefixtures("ray_session")
def test_stale_trajectories_are_dropped_and_counted_then_sigint_stops_cleanly(tmp_path, capsys):
    # Two actors start from the same params: once the first trajectory is learned from, the
    # other actor's is one update old, beyond max_policy_lag 0. The hook makes sure that one
    # is finished before the run is (an actor answers pid() after its rollout in flight).
    exp = make_exp(tmp_path, RANDOM.format(steps=2048, lag=0))

    def wait_for_every_actor(updates, handles):
        if updates == 1:
            ray.get([h.pid.remote() for h in handles])

    loop = train_distributed(exp, num_actors=2, on_update=wait_for_every_actor)
    assert "most trajectories will be dropped as stale" in capsys.readouterr().out
    rows = read_metrics(exp)
    assert loop.env_steps == 2048 and loop.updates == 4  # dropped ones add no env steps
    assert int(rows[-1]["dropped_stale"]) >= 1
    assert all(float(r["policy_lag"]) == 0.0 for r in rows)

    # Ctrl-C (SIGINT) as on the local backend: checkpoint, the stop line, KeyboardInterrupt;
    # the ray run resumes from where the first one ended.
    def interrupt(updates, handles):
        os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train_distributed(exp, total_env_steps=8192, num_actors=2, on_update=interrupt)
    out = capsys.readouterr().out
    assert "resuming from ckpt_000000002048.msgpack" in out
    assert "omega: stopped by signal 2 at 2,560 env steps; checkpoint saved" in out
    assert list_checkpoints(exp / "checkpoints")[-1].name == "ckpt_000000002560.msgpack"
    assert int(read_metrics(exp)[-1]["env_steps"]) == 2560


@pytest.mark.usefixtures("ray_session", "fast_compiles")
def test_muzero_learns_in_rounds_with_a_reanalyze_worker(tmp_path, capsys):
    exp = make_exp(tmp_path, TINY_MUZERO.format(steps=256, reanalyze=1))

    def wait_for_reanalyze(updates, handles):
        # handles: the 2 actors, then the reanalyze worker. It answers pid() once the batch
        # it was sent after this update is searched; the driver writes that back first thing.
        assert len(handles) == 3
        if updates <= 2:
            ray.get(handles[2].pid.remote())

    loop = train_distributed(exp, num_actors=2, on_update=wait_for_reanalyze)
    out = capsys.readouterr().out
    assert "2 Ray actors x 4 envs over 1 workers, learning from rounds of 8 envs, " \
           "1 reanalyze workers" in out
    assert "omega: reanalyze worker 0 ready (pid" in out
    # One update per round of both actors' rollouts: T x 2 x N = 64 env steps, counted once.
    assert (loop.env_steps, loop.updates) == (256, 4)
    rows = read_metrics(exp)
    assert [int(r["env_steps"]) for r in rows] == [64, 128, 192, 256]
    assert [int(r["updates"]) for r in rows] == [1, 2, 3, 4]
    # The first round has lag 0; the next ones were acted while the learner updated: lag 1.
    assert [float(r["policy_lag"]) for r in rows] == [0.0, 1.0, 1.0, 1.0]
    assert all(int(r["dropped_stale"]) == 0 and int(r["actor_restarts"]) == 0 for r in rows)
    # The replay held both actors' envs as 8 streams; it trained from the first round on.
    assert float(rows[-1]["replay_size"]) == 256 and float(rows[-1]["train_steps"]) > 0
    assert np.isfinite(float(rows[-1]["loss"]))
    # Written back by the worker (per row), none evicted in a replay this size.
    assert sum(int(r["reanalyzed_steps"]) for r in rows) >= 32
    assert all(int(r["reanalyze_skipped"]) == 0 for r in rows)
    ckpts = list_checkpoints(exp / "checkpoints")
    assert [c.name for c in ckpts] == ["ckpt_000000000128.msgpack", "ckpt_000000000256.msgpack"]
    eval_json = tmp_path / "eval.json"
    assert main(["eval", "--dir", str(exp), "--episodes", "2", "--seed", "0",
                 "--json", str(eval_json)]) == 0
    assert json.loads(eval_json.read_text())["env_steps"] == 256


@pytest.mark.usefixtures("ray_session", "fast_compiles")
def test_killed_muzero_actor_is_replaced_and_its_round_waits_for_it(tmp_path, capsys):
    exp = make_exp(tmp_path, TINY_MUZERO.format(steps=192, reanalyze=0))
    killed = []

    def kill_once(updates, handles):
        if updates == 1 and not killed:  # actor 1 is acting round 1 (or done with it)
            killed.append(handles[1])
            ray.kill(handles[1], no_restart=True)

    loop = train_distributed(exp, num_actors=2, on_update=kill_once)
    out = capsys.readouterr().out
    assert "omega: actor 1 died (" in out and "omega: actor 1 is back (pid" in out
    assert (loop.env_steps, loop.updates) == (192, 3)
    rows = read_metrics(exp)
    assert [int(r["env_steps"]) for r in rows] == [64, 128, 192]
    # Noticed in round 1 or 2 (a rollout it finished before it died is still delivered).
    assert int(rows[0]["actor_restarts"]) == 0 and int(rows[-1]["actor_restarts"]) == 1
    assert float(rows[-1]["replay_size"]) == 192


@pytest.mark.usefixtures("ray_session")
def test_actor_that_cannot_start_is_one_clear_line(tmp_path, capsys):
    # The driver never records; an actor's envs must, into a dir that is a file here.
    exp = make_exp(tmp_path, RANDOM.format(steps=512, lag=2).replace(
        "every_n_episodes: 0", "every_n_episodes: 1"))
    (exp / "episodes").rmdir()
    (exp / "episodes").write_text("")
    assert main(["run", "--dir", str(exp), "--backend", "ray", "--num-actors", "1"]) == 2
    err = omega_lines(capsys.readouterr().err)
    assert len(err.splitlines()) == 1
    assert err.startswith("omega: error: Ray actor 0 could not start (")
    assert "Not a directory" in err


# ---------------------------------------------------------------------------------------------
# Errors that need no Ray session


def omega_lines(stderr: str) -> str:
    """omega's own stderr lines: Ray forwards its workers' log lines (also those of an earlier
    test's workers) to stderr whenever they arrive."""
    return "\n".join(line for line in stderr.splitlines() if not line.startswith(("\x1b[36m(", "(")))


def test_remote_traceback_is_summarised_by_its_exception_line():
    from omega.training.distributed import _one_line

    remote = ValueError("The actor died because of an error raised in its creation task, "
                        "\x1b[36mray::RolloutWorker.__init__()\x1b[39m (pid=1)\n"
                        "  File \"x.py\", line 6, in __init__\n"
                        "omega.envs.vector.EnvWorkerError: env 0 could not be built\n")
    assert _one_line(remote) == "omega.envs.vector.EnvWorkerError: env 0 could not be built"
    assert _one_line(RuntimeError("died\nmore")) == "RuntimeError: died"


def test_missing_ray_is_one_clear_line(tmp_path, capsys, monkeypatch):
    exp = make_exp(tmp_path, RANDOM.format(steps=512, lag=2))
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["run", "--dir", str(exp), "--backend", "ray"]) == 2
    assert omega_lines(capsys.readouterr().err) == (
        "omega: error: --backend ray needs the ray package; install it with "
        "pip install 'omega[distributed]'")


def test_ray_flags_are_refused_clearly(tmp_path, capsys):
    exp = make_exp(tmp_path, RANDOM.format(steps=512, lag=2))
    assert main(["run", "--dir", str(exp), "--address", "localhost:6379"]) == 2
    assert "--address needs --backend ray" in capsys.readouterr().err
    assert main(["run", "--dir", str(exp), "--backend", "ray", "--num-actors", "0"]) == 2
    assert "--num-actors must be >= 1, got 0" in capsys.readouterr().err
    assert main(["run", "--dir", str(exp), "--backend", "ray", "--device", "cpu:all"]) == 2
    assert "runs on one device" in capsys.readouterr().err
    # Nobody listens on port 1: one error at once, instead of Ray retrying for minutes. (Called
    # directly: while this module's Ray session is up, omega run keeps it and needs no address.)
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        with pytest.raises(OmegaError, match=f"no Ray cluster answers at --address {address} "):
            check_reachable(address)
    check_reachable("auto")  # not HOST:PORT: left to Ray


def test_distributed_config_is_validated(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("distributed:\n  max_policy_lag: -1\n")
    assert main(["make", "--config", str(cfg), "--output-dir", str(tmp_path / "x")]) == 2
    assert "'distributed.max_policy_lag' must be >= 0" in capsys.readouterr().err
    # Reanalyze workers need MuZero with reanalyze on.
    for text, message in (
            ("agent_type: ppo\ndistributed:\n  num_reanalyze_workers: 1\n",
             "'distributed.num_reanalyze_workers' (1) needs agent_type muzero (agent_type ppo "
             "has no replay to reanalyze); set it to 0"),
            ("agent_type: muzero\ndistributed:\n  num_reanalyze_workers: 2\n",
             "'distributed.num_reanalyze_workers' (2) needs reanalyze on: set "
             "muzero.reanalyze_fraction > 0, or set num_reanalyze_workers to 0")):
        cfg.write_text(text)
        assert main(["make", "--config", str(cfg), "--output-dir", str(tmp_path / "x")]) == 2
        err = omega_lines(capsys.readouterr().err)
        assert len(err.splitlines()) == 1 and message in err

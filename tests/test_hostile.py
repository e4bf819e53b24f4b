"""What a careless or hostile user can do to omega, and what omega does then.

Concurrent runs on one dir, cleanup of dirs omega did not make, NaN and inf in configs and in
training, duplicate YAML keys, empty and non-UTF-8 configs, env options the env does not
take, files that cannot be written, deleted checkpoints, temp files of a killed run, the
hints of env worker errors, SIGTERM, MuZero's replay across a resume, and recordings that
hold several games.
"""

from __future__ import annotations

import csv
import errno
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omega.cli.main import main
from omega.training.checkpoint import (
    checkpoint_steps,
    checkpoints_to_prune,
    list_checkpoints,
    off_cadence,
)

# Tiny programs: XLA's optimisation passes would take longer than running them unoptimised.
pytestmark = pytest.mark.usefixtures("fast_compiles")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

RANDOM = """\
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


def make_exp(tmp_path, text=None, steps=1024, ckpt=512, name="exp"):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(text if text is not None else RANDOM.format(steps=steps, ckpt=ckpt))
    exp = tmp_path / name
    assert main(["make", "--config", str(cfg), "--output-dir", str(exp)]) == 0
    return exp


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("omega: error: "), err
    return err


def metric_rows(exp):
    with (exp / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def start_run(exp, *extra):
    """``omega run`` in a subprocess (its own process group); returns once it has written a
    checkpoint, so it is past start-up and inside the training loop."""
    proc = subprocess.Popen([sys.executable, "-m", "omega", "run", "--dir", str(exp), *extra],
                            cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 180
    while not list_checkpoints(exp / "checkpoints"):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint within 180 s"
        time.sleep(0.2)
    return proc


# ---------------------------------------------------------------------------------------------
# 1. One run per experiment dir


def test_a_second_run_on_a_running_dir_exits_2_naming_the_first(tmp_path, capsys):
    exp = make_exp(tmp_path, steps=10_000_000, ckpt=1024)
    first = start_run(exp)
    try:
        assert main(["run", "--dir", str(exp), "--steps", "2048"]) == 2
        err = one_error_line(capsys)
        assert f"'{exp}' is in use by 'omega run' (pid {first.pid} " in err
        assert main(["cleanup", "--dir", str(exp), "--yes"]) == 2  # nor cleaned under it
        assert "is in use by 'omega run'" in one_error_line(capsys)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the trainer and its env workers
        first.wait()
    # The kernel dropped the killed run's lock: the next run resumes.
    ckpt = list_checkpoints(exp / "checkpoints")[-1]
    steps = int(ckpt.stem.split("_")[-1])
    assert main(["run", "--dir", str(exp), "--steps", str(steps + 1024)]) == 0
    assert f"resuming from {ckpt.name}" in capsys.readouterr().out


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path):
    exp = make_exp(tmp_path, steps=10_000_000, ckpt=1024)
    proc = start_run(exp)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "stopped by signal 15" in out and "checkpoint saved" in out
    steps = int(metric_rows(exp)[-1]["env_steps"]) if metric_rows(exp) else 0
    assert int(list_checkpoints(exp / "checkpoints")[-1].stem[5:]) >= steps


def test_checkpoints_of_a_stopped_run_go_before_its_cadence_checkpoints():
    # Cadence 1000: 1024 and 2048 are the first of their intervals, 1536 and 2560 were saved
    # when the run stopped; the newest (2560) always stays.
    assert checkpoints_to_prune([1024, 1536, 2048, 2560], keep=3, every=1000) == [1536]
    assert checkpoints_to_prune([1024, 1536, 2048, 2560], keep=2, every=1000) == [1024, 1536]
    assert checkpoints_to_prune([1024, 1536, 2048, 2560], keep=3) == [1024]  # no cadence: oldest
    assert checkpoints_to_prune([512, 1024], keep=3, every=1000) == []
    assert checkpoints_to_prune([1024, 2048], keep=1, every=1000) == [1024]
    # Before the first multiple of the cadence no checkpoint is scheduled: 512 was a stop.
    assert checkpoints_to_prune([512, 1024, 2048], keep=2, every=1000) == [512]
    assert off_cadence([512, 1024, 1536, 2048], every=1000) == {512, 1536}


def test_a_run_stopped_twice_keeps_its_cadence_checkpoints(tmp_path, capsys):
    text = RANDOM.format(steps=4096, ckpt=1024).replace(
        "  log_every_steps: 512\n", "  log_every_steps: 512\n  keep_checkpoints: 3\n")
    exp = make_exp(tmp_path, text=text)

    def names():
        return [checkpoint_steps(p) for p in list_checkpoints(exp / "checkpoints")]

    assert main(["run", "--dir", str(exp), "--steps", "1536"]) == 0  # stopped off the cadence
    assert names() == [1024, 1536]
    assert main(["run", "--dir", str(exp), "--steps", "2560"]) == 0  # and again
    assert names() == [1024, 2048, 2560]  # 1536 went first, not 1024
    # The cadence stays on the multiples of 1024 after a resume at 2560 (3072, not 3584).
    assert main(["run", "--dir", str(exp)]) == 0
    assert names() == [2048, 3072, 4096]


# ---------------------------------------------------------------------------------------------
# 2. Cleanup deletes only what omega wrote, in dirs omega made, after asking


def test_cleanup_refuses_a_dir_omega_make_did_not_create(tmp_path, capsys):
    exp = tmp_path / "mine"
    (exp / "checkpoints").mkdir(parents=True)
    (exp / "config.yaml").write_text("{}\n")  # a valid config: every default
    (exp / "checkpoints" / "weights.pt").write_bytes(b"precious")
    (exp / "metrics.csv").write_text("env_steps,loss\n1,2\n")
    assert main(["cleanup", "--dir", str(exp), "--yes"]) == 2
    assert "was not made by 'omega make'" in one_error_line(capsys)
    assert (exp / "checkpoints" / "weights.pt").read_bytes() == b"precious"
    assert (exp / "metrics.csv").read_text() == "env_steps,loss\n1,2\n"


def test_cleanup_deletes_only_omegas_files_and_asks_first(tmp_path, capsys, monkeypatch):
    exp = make_exp(tmp_path)
    assert main(["run", "--dir", str(exp)]) == 0
    mine = [exp / "checkpoints" / "weights.pt", exp / "episodes" / "notes.txt",
            exp / "tb" / "my_plot.png", exp / "results.json"]
    for path in mine:
        path.write_text("mine")
    ckpts = list_checkpoints(exp / "checkpoints")
    capsys.readouterr()

    # Not a terminal and no --yes: lists, deletes nothing.
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert main(["cleanup", "--dir", str(exp)]) == 2
    printed = capsys.readouterr()
    assert "pass --yes" in printed.err
    assert "metrics.csv" in printed.out and ckpts[-1].name in printed.out
    assert list_checkpoints(exp / "checkpoints") == ckpts

    # A terminal: asks; "n" keeps everything, "y" deletes omega's files only.
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["cleanup", "--dir", str(exp)]) == 0
    assert list_checkpoints(exp / "checkpoints") == ckpts
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["cleanup", "--dir", str(exp)]) == 0
    assert not list_checkpoints(exp / "checkpoints") and not (exp / "metrics.csv").exists()
    assert not list((exp / "episodes").rglob("*.ttyrec*"))
    assert not list((exp / "episodes").rglob("nle.*"))  # NetHack's score files beside them
    assert not list((exp / "tb").glob("events.out.tfevents.*"))
    for path in mine:
        assert path.read_text() == "mine"
    assert (exp / "config.yaml").is_file()


# ---------------------------------------------------------------------------------------------
# 3. NaN and inf: rejected in configs, and a diverging run stops


@pytest.mark.parametrize("text, key", [
    ("agent_type: ppo\nppo:\n  learning_rate: .nan\n", "ppo.learning_rate"),
    ("agent_type: muzero\nmuzero:\n  gamma: .nan\n", "muzero.gamma"),
    ("env:\n  reward_shaping:\n    step_penalty: .nan\n", "env.reward_shaping.step_penalty"),
    ("env:\n  step_timeout_s: .inf\n", "env.step_timeout_s"),
    ("agent_type: muzero\nmuzero:\n  temperature_schedule: [[0.0, .inf]]\n",
     "muzero.temperature_schedule[0][1]"),
])
def test_nan_and_inf_are_rejected_at_make(tmp_path, capsys, text, key):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    assert main(["make", "--config", str(cfg), "--output-dir", str(tmp_path / "exp")]) == 2
    err = one_error_line(capsys)
    assert f"config key '{key}' must be a finite number" in err
    assert not (tmp_path / "exp").exists()


DIVERGING_PPO = """\
agent_type: ppo
seed: 1
env:
  id: MiniHack-Room-5x5-v0
  num_envs: 4
  num_workers: 1
  reward_shaping:
    success_bonus: 1.0e+38  # a return of 1e38 overflows float32 advantages and losses
train:
  total_env_steps: 4096
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


def test_a_diverging_run_stops_naming_the_env_step_and_keeps_the_last_good_checkpoint(
        tmp_path, capsys):
    exp = make_exp(tmp_path, DIVERGING_PPO)
    capsys.readouterr()
    assert main(["run", "--dir", str(exp)]) == 4
    err = one_error_line(capsys)
    assert "training diverged at " in err and "is nan" in err
    diverged_at = int(err.split("diverged at ")[1].split(" env steps")[0].replace(",", ""))
    ckpts = list_checkpoints(exp / "checkpoints")
    assert ckpts and int(ckpts[-1].stem[5:]) < diverged_at
    assert ckpts[-1].name in err
    import jax

    from omega.agents import build_agent
    from omega.config import config_hash, load_config
    from omega.training.checkpoint import load_checkpoint
    from omega.training.loop import all_finite, probe_env

    cfg = load_config(exp / "config.yaml")
    obs, n = probe_env(cfg)
    agent, _ = build_agent(cfg, n)
    template = agent.init(jax.random.PRNGKey(0), obs, cfg.env.num_envs)
    for ckpt in ckpts:  # every checkpoint on disk is a good one
        state, _ = load_checkpoint(ckpt, template, config_hash(cfg))
        assert all_finite(state)
    assert all(int(r["env_steps"]) < diverged_at for r in metric_rows(exp))


def test_eval_of_a_nan_checkpoint_exits_4(tmp_path, capsys):
    import jax

    from omega.agents import build_agent
    from omega.config import config_hash, load_config
    from omega.training.checkpoint import LoopState, save_checkpoint
    from omega.training.loop import probe_env

    exp = make_exp(tmp_path, DIVERGING_PPO)
    # What an omega without the divergence check wrote: a checkpoint of NaN params.
    cfg = load_config(exp / "config.yaml")
    obs, n = probe_env(cfg)
    agent, _ = build_agent(cfg, n)
    state = agent.init(jax.random.PRNGKey(0), obs, cfg.env.num_envs)
    poisoned = state._replace(params=jax.tree_util.tree_map(lambda x: x * np.nan, state.params))
    save_checkpoint(exp / "checkpoints", poisoned,
                    LoopState(128, 2, 0, np.zeros(2, np.uint32)), config_hash(cfg))
    capsys.readouterr()
    assert main(["eval", "--dir", str(exp), "--episodes", "2"]) == 4
    assert "holds NaN or infinite parameters" in one_error_line(capsys)
    assert main(["run", "--dir", str(exp)]) == 4  # nor resumed from
    assert "holds NaN or infinite parameters" in one_error_line(capsys)


# ---------------------------------------------------------------------------------------------
# 4 and 5. Configs that used to be accepted and then misbehaved


@pytest.mark.parametrize("content, message", [
    (b"agent_type: random\nseed: 1\nagent_type: ppo\n",
     "has the key 'agent_type' twice in one mapping (lines 1 and 3)"),
    (b"env:\n  num_envs: 4\n  num_envs: 8\n", "has the key 'num_envs' twice"),
    (b"", "is empty (or only comments)"),
    (b"# agent_type: ppo\n\n   \n", "is empty (or only comments)"),
    (b"agent_type: ppo\nenv:\n  id: MiniHack-Room-5x5-v0  # caf\xe9\n", "is not UTF-8 text"),
    (b"env:\n  options: {fix_moon_phaze: true}\n",
     "config key 'env.options.fix_moon_phaze': MiniHack-Room-5x5-v0 takes no such option; "
     "did you mean 'fix_moon_phase'?"),
    (b"env:\n  options: {savedir: /tmp}\n", "config key 'env.options.savedir' is set by omega"),
])
def test_bad_config_files_exit_2_at_make(tmp_path, capsys, content, message):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_bytes(content)
    assert main(["make", "--config", str(cfg), "--output-dir", str(tmp_path / "exp")]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "exp").exists()


def test_explicit_empty_mapping_still_means_every_default(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}\n")
    assert main(["make", "--config", str(cfg), "--output-dir", str(tmp_path / "exp")]) == 0


def test_a_bad_env_option_in_an_existing_experiment_is_one_line_at_run(tmp_path, capsys):
    exp = make_exp(tmp_path)
    text = (exp / "config.yaml").read_text().replace("  options: {}\n",
                                                     "  options:\n    bogus: 1\n")
    (exp / "config.yaml").write_text(text)
    capsys.readouterr()
    assert main(["run", "--dir", str(exp)]) == 2
    assert "'env.options.bogus': MiniHack-Room-5x5-v0 takes no such option" in \
        one_error_line(capsys)


# ---------------------------------------------------------------------------------------------
# 6. Files that cannot be written: one line, exit 3, nothing half-written


def _failing(real, error_no, when):
    """``real`` wrapped to raise OSError(error_no) when ``when(*args)`` says so."""

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        if when(*args, **kwargs):
            raise OSError(error_no, os.strerror(error_no), str(args[0]) if args else None)
        return real(*args, **kwargs)

    return wrapper


def test_make_into_a_folder_it_cannot_write_is_one_line_exit_3(tmp_path, capsys, monkeypatch):
    import tempfile

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(RANDOM.format(steps=512, ckpt=512))
    out = tmp_path / "readonly" / "exp"
    out.parent.mkdir()
    monkeypatch.setattr(tempfile, "mkdtemp", _failing(
        tempfile.mkdtemp, errno.EROFS, lambda *a, **k: str(k.get("dir")) == str(out.parent)))
    assert main(["make", "--config", str(cfg), "--output-dir", str(out)]) == 3
    err = one_error_line(capsys)
    assert "Read-only file system" in err and "use a writable folder" in err
    assert list(out.parent.iterdir()) == []


def test_a_read_only_experiment_is_one_line_exit_3(tmp_path, capsys, monkeypatch):
    exp = make_exp(tmp_path)
    capsys.readouterr()
    # The first file a run writes is its lock; on a read-only mount that fails.
    monkeypatch.setattr(os, "open", _failing(
        os.open, errno.EROFS, lambda path, flags, *a, **k: str(path).startswith(str(exp))
        and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))))
    assert main(["run", "--dir", str(exp)]) == 3
    assert "Read-only file system" in one_error_line(capsys)
    assert not list_checkpoints(exp / "checkpoints")


def test_a_full_disk_during_a_checkpoint_keeps_the_earlier_ones_whole(tmp_path, capsys,
                                                                       monkeypatch):
    exp = make_exp(tmp_path, steps=4096, ckpt=1024)
    calls = {"fsync": 0}
    real_fsync = os.fsync

    def fsync(fd):
        calls["fsync"] += 1
        if calls["fsync"] > 2:  # two checkpoints, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    capsys.readouterr()
    assert main(["run", "--dir", str(exp)]) == 3
    err = one_error_line(capsys)
    assert "No space left on device" in err and "free some disk space" in err
    assert "resumes from the newest checkpoint" in err
    ckpts = list_checkpoints(exp / "checkpoints")
    assert [int(p.stem[5:]) for p in ckpts] == [1024, 2048]
    assert sorted(p.name for p in (exp / "checkpoints").iterdir()) == [p.name for p in ckpts]
    assert [int(r["env_steps"]) for r in metric_rows(exp)][:4] == [512, 1024, 1536, 2048]
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main(["run", "--dir", str(exp)]) == 0  # once there is space again
    assert int(metric_rows(exp)[-1]["env_steps"]) == 4096


def test_metrics_csv_unwritable_mid_run_is_one_line_exit_3(tmp_path, capsys, monkeypatch):
    exp = make_exp(tmp_path, steps=4096, ckpt=1024)
    real_open = Path.open
    appends = {"n": 0}

    def open_(self, mode="r", *args, **kwargs):
        if self.name == "metrics.csv" and mode.startswith("a"):
            appends["n"] += 1
            if appends["n"] > 3:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    capsys.readouterr()
    assert main(["run", "--dir", str(exp)]) == 3
    err = one_error_line(capsys)
    assert "Permission denied: " in err and "metrics.csv" in err
    assert [int(r["env_steps"]) for r in metric_rows(exp)] == [512, 1024, 1536]
    assert not list(exp.glob("*.tmp"))


def test_a_row_cut_short_by_a_full_disk_is_removed(tmp_path, monkeypatch):
    from omega.training.metrics import CsvLogger

    log = CsvLogger(tmp_path / "metrics.csv")
    log.write({"env_steps": 1, "loss": 0.5})
    before = (tmp_path / "metrics.csv").read_bytes()
    real_open = Path.open

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def write(self, data):
            self.f.write(data[:len(data) // 2])
            self.f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "open", lambda self, mode="r", *a, **k: HalfWriter(
        real_open(self, mode, *a, **k)) if mode.startswith("a") else real_open(self, mode, *a, **k))
    with pytest.raises(OSError):
        log.write({"env_steps": 2, "loss": 0.25})
    assert (tmp_path / "metrics.csv").read_bytes() == before


# ---------------------------------------------------------------------------------------------
# 7. Deleted checkpoints, a killed checkpoint write, worker hints


def test_metrics_without_a_checkpoint_are_not_overwritten(tmp_path, capsys):
    import shutil

    exp = make_exp(tmp_path)
    assert main(["run", "--dir", str(exp)]) == 0
    before = (exp / "metrics.csv").read_text()
    shutil.rmtree(exp / "checkpoints")
    capsys.readouterr()
    assert main(["run", "--dir", str(exp)]) == 2
    err = one_error_line(capsys)
    assert "has metrics.csv with 2 rows (up to 1,024 env steps) but no checkpoint" in err
    assert (exp / "metrics.csv").read_text() == before


def test_temp_files_of_a_killed_checkpoint_write_are_removed_at_start(tmp_path, capsys):
    exp = make_exp(tmp_path, steps=512, ckpt=512)
    assert main(["run", "--dir", str(exp)]) == 0
    ckpts = exp / "checkpoints"
    # What a SIGKILL in the middle of atomic_write_bytes leaves (its mkstemp names), and a
    # replay whose checkpoint was never written.
    stale = [ckpts / ".ckpt_000000001024.msgpackx1y2z3.tmp",
             ckpts / ".replay_000000001024.msgpackab12cd.tmp",
             ckpts / "replay_000000001024.msgpack", exp / "metrics.csv.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 4096)
    mine = ckpts / "notes.tmp"
    mine.write_text("mine")
    capsys.readouterr()
    assert main(["run", "--dir", str(exp), "--steps", "1024"]) == 0
    assert "removed 4 file(s) a killed run left unfinished" in capsys.readouterr().out
    assert not any(p.exists() for p in stale)
    assert mine.read_text() == "mine"


def test_atomic_writes_get_a_plain_files_mode(tmp_path):
    """Results, checkpoints, plots and GIFs go through a temporary file whose own mode is
    0600; the renamed file must be readable as any file the user writes (umask), e.g. by the
    other users of a shared experiment dir."""
    import stat

    from omega.training.files import atomic_write_bytes

    mask = os.umask(0)
    os.umask(mask)
    atomic_write_bytes(tmp_path / "eval.json", b"{}")
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    mode = stat.S_IMODE((tmp_path / "eval.json").stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~mask


def test_env_worker_errors_name_real_config_keys():
    from omega.config import ExperimentConfig
    from omega.envs.vector import EnvWorkerError, VectorEnv

    sys.path.insert(0, str(Path(__file__).parent))
    import toy_envs

    hung = functools.partial(toy_envs.make_failing_on_env, bad_index=1, sleep_on_step=2,
                             sleep_s=60.0)
    vec = VectorEnv(hung, num_envs=2, num_workers=2, seed=0, step_timeout_s=1.0)
    vec.reset()
    vec.step(np.zeros(2, dtype=np.int64))
    with pytest.raises(EnvWorkerError) as err:
        vec.step(np.zeros(2, dtype=np.int64))
    assert "raise env.step_timeout_s" in str(err.value)
    assert ExperimentConfig().env.step_timeout_s > 0  # the key exists

    dying = functools.partial(toy_envs.make_failing_on_env, bad_index=1, exit_on_step=1)
    vec = VectorEnv(dying, num_envs=2, num_workers=2, seed=0, max_restarts=1)
    vec.reset()
    with pytest.raises(EnvWorkerError) as err:
        for _ in range(3):
            vec.step(np.zeros(2, dtype=np.int64))
    vec.close()
    assert "envs." not in str(err.value) and "not a config key" in str(err.value)


# ---------------------------------------------------------------------------------------------
# 8. MuZero's replay survives a resume

TINY_MUZERO = """\
agent_type: muzero
seed: 0
env:
  id: MiniHack-Room-5x5-v0
  num_envs: 4
  num_workers: 1
train:
  total_env_steps: 256
  checkpoint_every_steps: 256
  log_every_steps: 32
record:
  every_n_episodes: 0
model:
  kind: plain
  map: crop
  embed_dim: 8
  cnn_channels: []
  mlp_hidden: 32
  output_dim: 32
muzero:
  latent_dim: 16
  dynamics_hidden: 32
  prediction_hidden: 32
  search: gumbel
  num_simulations: 4
  rollout_length: 8
  replay_size: 1000
  warmup_steps: 128
  batch_size: 16
  replay_ratio: 1.0
  unroll_steps: 3
  td_steps: 3
"""


def test_muzero_resumes_with_its_replay_and_trains_at_once(tmp_path, capsys):
    from flax import serialization

    exp = make_exp(tmp_path, TINY_MUZERO)
    assert main(["run", "--dir", str(exp)]) == 0
    ckpts = exp / "checkpoints"
    replay_file = ckpts / "replay_000000000256.msgpack"
    assert replay_file.is_file()
    before = {int(r["env_steps"]): r for r in metric_rows(exp)}
    assert float(before[256]["replay_size"]) == 256

    # msgpack of plain numpy arrays and numbers: no pickle, nothing to execute on load.
    saved = serialization.msgpack_restore(replay_file.read_bytes())
    assert saved["format_version"] == 1 and saved["env_steps"] == 256
    replay = saved["replay"]
    assert replay["time"] == 64 and replay["num_envs"] == 4 and replay["capacity"] == 250
    # Bounded: the ring arrays for replay_size steps, whatever has been added.
    per_step = sum(v.nbytes for part in ("data", "obs") for v in replay[part].values()) / 1000
    assert replay_file.stat().st_size < 1000 * per_step + 4096

    capsys.readouterr()
    assert main(["run", "--dir", str(exp), "--steps", "320"]) == 0
    out = capsys.readouterr().out
    assert "restored the replay from replay_000000000256.msgpack: 256 env steps" in out
    after = {int(r["env_steps"]): r for r in metric_rows(exp)}
    # The first rollout after the resume (32 env steps) is trained on at once: 32 * ratio 1
    # / batch 16 = 2 train steps (an empty replay would wait for 128 env steps of warm-up).
    assert float(after[288]["train_steps"]) == float(before[256]["train_steps"]) + 2
    assert float(after[288]["replay_size"]) == 288
    # Only the newest checkpoint's replay is kept.
    assert sorted(p.name for p in ckpts.glob("replay_*")) == ["replay_000000000320.msgpack"]


# ---------------------------------------------------------------------------------------------
# 9. A recording holds several games: play shows one

KNOWN = DATA / "room_5x5_three_games.ttyrec3.bz2"  # a scripted walk to the stairs, 3 times


def test_a_known_recording_splits_into_its_games():
    from omega.viz.ttyrec import read_ttyrec, split_games

    episode = read_ttyrec(KNOWN)
    assert len(episode) == 37  # 3 x (greeting + 4 steps + 7 quit screens) + the last screen
    games = split_games(episode)
    assert [(g.start, g.stop, g.finished) for g in games] == [
        (0, 5, True), (12, 17, True), (24, 29, True)]
    for g in games:
        assert "welcome to NetHack!" in episode.text(g.start)
        shown = "\n".join(episode.text(t) for t in range(g.start, g.stop))
        assert "Really quit?" not in shown and "Goodbye" not in shown
        # The last frame shown is the agent on the stairs.
        stairs = np.argwhere(episode.chars[g.start] == ord(">"))[0]
        assert episode.chars[g.stop - 1][tuple(stairs)] == ord("@")


@pytest.mark.parametrize("flags, frames, number", [([], 5, 3), (["--episode", "1"], 5, 1)])
def test_play_writes_one_game_as_a_gif(tmp_path, capsys, flags, frames, number):
    gif = tmp_path / "ep.gif"
    assert main(["play", "--file", str(KNOWN), "--gif", str(gif), *flags]) == 0
    assert f"episode {number} of 3" in capsys.readouterr().out
    with Image.open(gif) as im:
        assert im.n_frames == frames
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
    assert sum(durations) / 1000 < 4  # seconds: the walk to the stairs, then a 2 s hold


def test_play_episode_out_of_range_is_one_line(capsys):
    assert main(["play", "--file", str(KNOWN), "--episode", "4"]) == 2
    assert "holds 3 episode(s); --episode must be between 1 and 3, got 4" in \
        one_error_line(capsys)


def test_play_of_an_experiment_skips_a_game_cut_off_by_the_end_of_training(tmp_path, capsys):
    import shutil

    exp = make_exp(tmp_path)
    env_dir = exp / "episodes" / "env_000"
    env_dir.mkdir(parents=True)
    shutil.copy(KNOWN, env_dir / "nle.1.0.ttyrec3.bz2")
    # A newer recording that holds only the start of a game (training stopped during it).
    newer = env_dir / "nle.1.3.ttyrec3.bz2"
    shutil.copy(DATA / "room_5x5_unfinished.ttyrec3.bz2", newer)
    os.utime(newer, (time.time() + 10, time.time() + 10))
    gif = tmp_path / "ep.gif"
    assert main(["play", "--file", str(exp), "--gif", str(gif)]) == 0
    assert "episode 3 of 3 in nle.1.0.ttyrec3.bz2 (5 frames" in capsys.readouterr().out
    assert main(["play", "--file", str(newer), "--gif", str(gif)]) == 0
    assert "unfinished" in capsys.readouterr().out


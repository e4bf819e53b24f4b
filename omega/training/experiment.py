"""The experiment directory: what ``omega make`` creates and every other command reads.

Layout::

    DIR/
      config.yaml        the resolved config (every key, defaults filled in)
      .omega             written by 'omega make': marks DIR as an omega experiment
      run.lock           locked (flock) by the 'omega run' training in DIR, if any
      checkpoints/       ckpt_<env_steps>.msgpack, the newest few; MuZero also
                         replay_<env_steps>.msgpack, the replay of the newest one
      episodes/          NLE ttyrec recordings, env_<i>/nle.<pid>.<n>.ttyrec3.bz2
      metrics.csv        one row per log interval, first column env_steps
      tb/                TensorBoard event files
      wandb/             Weights & Biases run files (omega run --wandb)

Only one ``omega run`` trains in a dir at a time (:class:`ExperimentLock`). ``omega cleanup``
deletes only the files omega writes there (:func:`run_outputs` knows them by name), and only
in dirs ``omega make`` created.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from omega.config import ExperimentConfig, config_to_yaml, load_config
from omega.errors import ConfigError, OmegaError

CONFIG_FILE = "config.yaml"
MARKER_FILE = ".omega"
LOCK_FILE = "run.lock"
CHECKPOINT_DIR = "checkpoints"
EPISODE_DIR = "episodes"
METRICS_FILE = "metrics.csv"
TB_DIR = "tb"
WANDB_DIR = "wandb"

# The files omega (and NLE, TensorBoard, W&B on its behalf) writes into an experiment dir,
# as paths relative to it; 'omega cleanup' deletes these and nothing else.
_OUTPUT_PATTERNS = tuple(re.compile(p) for p in (
    r"checkpoints/(ckpt|replay)_\d{12}\.msgpack",
    r"checkpoints/\.(ckpt|replay)_\d{12}\.msgpack[^/]*\.tmp",  # a killed write's temp file
    r"metrics\.csv(\.tmp)?",
    r"tb/events\.out\.tfevents\.[^/]+",
    r"episodes/env_\d{3,}/nle\.\d+\.\d+\.ttyrec\d?(\.bz2)?",
    r"episodes/env_\d{3,}/nle\.\d+\.(xlogfile|logfile|record)",
    r"wandb/(offline-run|run)-[^/]+",  # a W&B run dir (deleted as a whole)
    r"wandb/latest-run",
    r"wandb/debug(-internal|-cli\.[^/]+)?\.log",
))
# Folders omega makes; emptied of omega's files, the ones below are removed too.
_OUTPUT_DIRS = (CHECKPOINT_DIR, EPISODE_DIR, TB_DIR, WANDB_DIR)
_REMOVABLE_DIRS = (re.compile(r"episodes/env_\d{3,}"), re.compile(r"tb"),
                   re.compile(r"wandb"))


def make_experiment(config_path: str | Path, output_dir: str | Path) -> Path:
    """Validates the config and creates the experiment dir; refuses an existing one."""
    cfg = load_config(config_path)
    if cfg.env.options or cfg.env.extra_actions:
        _check_env_options(cfg, config_path)
    out = Path(output_dir)
    if out.exists():
        raise OmegaError(f"output dir '{out}' already exists; choose a new --output-dir "
                         "(or 'omega run --dir' it to continue that experiment)")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build it under a temp name and rename, so a failure leaves nothing half-made.
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
    try:
        from omega import __version__

        (tmp / CONFIG_FILE).write_text(config_to_yaml(cfg))
        (tmp / MARKER_FILE).write_text(json.dumps({
            "made_by": "omega make", "omega_version": __version__,
            "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }) + "\n")
        (tmp / CHECKPOINT_DIR).mkdir()
        (tmp / EPISODE_DIR).mkdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_env_options(cfg: ExperimentConfig, config_path: str | Path) -> None:
    """Builds the env once with ``env.options`` and ``env.extra_actions``: an option it does
    not take (or a value it rejects), or an extra action it has already, is a config error now
    rather than a crash at 'omega run'."""
    from omega.envs import EnvFactory, options_error

    try:
        env = EnvFactory.from_config(cfg.env)(0)
    except ConfigError as e:  # omega's own check of the env section (env.extra_actions)
        raise ConfigError(f"{config_path}: {e}") from None
    except Exception as e:
        raise ConfigError(f"{config_path}: {options_error(cfg.env.id, dict(cfg.env.options), e)}"
                          ) from None
    env.close()


def load_experiment(exp_dir: str | Path) -> ExperimentConfig:
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise OmegaError(f"experiment dir '{exp_dir}' not found; create it with "
                         "'omega make --config FILE --output-dir DIR'")
    if not (exp_dir / CONFIG_FILE).is_file():
        raise OmegaError(f"'{exp_dir}' has no {CONFIG_FILE}; it is not an omega experiment "
                         "(create one with 'omega make')")
    return load_config(exp_dir / CONFIG_FILE)


# ---------------------------------------------------------------------------------------------
# A trained agent


class TrainedAgent(NamedTuple):
    """An experiment's agent with the state of one of its checkpoints."""

    cfg: ExperimentConfig
    agent: Any
    state: Any  # the agent state restored from ``checkpoint``
    loop: Any  # the checkpoint's LoopState (env_steps, updates, ...)
    checkpoint: Path

    @property
    def step(self) -> int:
        """The env steps the checkpoint was written at."""
        return self.loop.env_steps

    def eval_params(self, average: bool = True) -> Any:
        """The params evaluation acts with (see :func:`evaluation_params`); raises
        :class:`DivergedError` when any of them is NaN or infinite."""
        from omega.errors import DivergedError
        from omega.training.evaluate import evaluation_params
        from omega.training.loop import all_finite

        params = evaluation_params(self.agent, self.state, average=average)
        if not all_finite(params):
            raise DivergedError(f"checkpoint '{self.checkpoint}' holds NaN or infinite "
                                "parameters (its run diverged); evaluate an earlier one with "
                                "--checkpoint")
        return params


def find_checkpoint(exp_dir: str | Path, checkpoint: str | Path | None = None) -> Path:
    """``checkpoint`` if given, else the newest in ``exp_dir``; an :class:`OmegaError` when
    the experiment has none yet."""
    from omega.training.checkpoint import latest_checkpoint

    ckpt = Path(checkpoint) if checkpoint else latest_checkpoint(Path(exp_dir) / CHECKPOINT_DIR)
    if ckpt is None:
        raise OmegaError(f"'{exp_dir}' has no checkpoint yet; train it first with "
                         f"'omega run --dir {exp_dir}'")
    return ckpt


def agent_template(cfg: ExperimentConfig, agent_cfg: ExperimentConfig | None = None
                   ) -> tuple[Any, Any]:
    """(agent, initial state) for the env of ``cfg``: the structure a checkpoint of it is
    restored into. The agent is built from ``agent_cfg`` when given (the same run with, say,
    another search budget, which the learned params do not depend on)."""
    import jax

    from omega.agents import build_agent
    from omega.training.loop import probe_env

    obs_example, num_actions = probe_env(cfg)
    agent, _ = build_agent(agent_cfg or cfg, num_actions)
    return agent, agent.init(jax.random.PRNGKey(0), obs_example, cfg.env.num_envs)


def load_trained_agent(exp_dir: str | Path, checkpoint: str | Path | None = None, *,
                       cfg: ExperimentConfig | None = None,
                       agent_cfg: ExperimentConfig | None = None,
                       built: tuple[Any, Any] | None = None) -> TrainedAgent:
    """The agent of the experiment in ``exp_dir`` restored from ``checkpoint`` (default: the
    newest). ``cfg`` is the experiment's config when the caller has read it already;
    ``agent_cfg`` builds the agent from a variant of it (:func:`agent_template`); ``built``,
    an :func:`agent_template` result, reuses one agent for several checkpoints. The
    checkpoint must have been written with ``cfg`` (its config hash)."""
    from omega.config import config_hash
    from omega.training.checkpoint import load_checkpoint

    cfg = cfg if cfg is not None else load_experiment(exp_dir)
    ckpt = find_checkpoint(exp_dir, checkpoint)
    agent, template = built if built is not None else agent_template(cfg, agent_cfg)
    state, loop = load_checkpoint(ckpt, template, config_hash(cfg))
    return TrainedAgent(cfg, agent, state, loop, ckpt)


# ---------------------------------------------------------------------------------------------
# One run at a time


class ExperimentLock:
    """An exclusive ``flock`` on ``DIR/run.lock`` for as long as a command writes to DIR.

    The kernel releases it when the holder exits, however it exits (a SIGKILLed run leaves no
    stale lock). Env worker processes are started by the forkserver and do not inherit it.
    The file keeps the holder's pid, host and start time, for the error a second command
    gets; it is not deleted (deleting a lock file races with the next locker).
    """

    def __init__(self, exp_dir: str | Path, command: str):
        self.exp_dir, self.command = Path(exp_dir), command
        self.path = self.exp_dir / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> ExperimentLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_flock(fd):
            os.close(fd)
            raise OmegaError(
                f"experiment dir '{self.exp_dir}' is in use by {_holder(self.path)}; wait "
                "for it to finish or stop it, then try again")
        self.fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps({
            "pid": os.getpid(), "command": self.command, "host": socket.gethostname(),
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }) + "\n").encode())
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None


def lock_holder(exp_dir: str | Path) -> str | None:
    """Who holds ``DIR/run.lock`` now ('omega run' (pid ... on ..., since ...)), or None
    when nobody does (or DIR has no lock file). Takes the lock for an instant to find out."""
    path = Path(exp_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        return None if _try_flock(fd) else _holder(path)
    finally:
        os.close(fd)  # releases it if it was taken


def _try_flock(fd: int) -> bool:
    """Takes the exclusive lock on ``fd`` without waiting; False when another holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        return False
    return True


def _holder(path: Path) -> str:
    """The holder a lock file names, for an error message."""
    try:
        info = json.loads(path.read_text())
        return f"'{info['command']}' (pid {info['pid']} on {info['host']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another omega process (its lock file names no pid yet)"


def remove_stale_files(exp_dir: str | Path) -> list[Path]:
    """Deletes what a killed run can leave half-done: the temp files of checkpoint, replay
    and metrics.csv writes, and a replay file whose checkpoint was never completed. Call
    under the experiment's lock."""
    from omega.training.checkpoint import (
        checkpoint_steps,
        list_checkpoints,
        list_replays,
        remove_stale_temp_files,
    )

    exp_dir = Path(exp_dir)
    ckpt_dir = exp_dir / CHECKPOINT_DIR
    removed = remove_stale_temp_files(ckpt_dir)
    ckpt_steps = {checkpoint_steps(p) for p in list_checkpoints(ckpt_dir)}
    for path in list_replays(ckpt_dir):
        if checkpoint_steps(path) not in ckpt_steps:
            path.unlink(missing_ok=True)
            removed.append(path)
    tmp = exp_dir / (METRICS_FILE + ".tmp")
    if tmp.exists():
        tmp.unlink()
        removed.append(tmp)
    return removed


# ---------------------------------------------------------------------------------------------
# Cleanup


def is_made_by_omega(exp_dir: str | Path) -> bool:
    return (Path(exp_dir) / MARKER_FILE).is_file()


def run_outputs(exp_dir: str | Path, keep_checkpoint: bool = False
                ) -> tuple[list[Path], list[Path]]:
    """(omega's outputs in DIR, the other files in its output folders): the paths 'omega
    cleanup' deletes, and those it leaves (a W&B run dir is one path). With
    ``keep_checkpoint`` the newest checkpoint and its replay are left too."""
    from omega.training.checkpoint import latest_checkpoint, replay_path

    exp_dir = Path(exp_dir)
    keep: set[Path] = set()
    if keep_checkpoint:
        newest = latest_checkpoint(exp_dir / CHECKPOINT_DIR)
        if newest is not None:
            from omega.training.checkpoint import checkpoint_steps

            keep = {newest, replay_path(exp_dir / CHECKPOINT_DIR, checkpoint_steps(newest))}
    ours: list[Path] = []
    others: list[Path] = []

    def visit(path: Path) -> None:
        rel = path.relative_to(exp_dir).as_posix()
        if any(p.fullmatch(rel) for p in _OUTPUT_PATTERNS):
            if path not in keep:
                ours.append(path)
        elif path.is_dir() and not path.is_symlink():
            for child in sorted(path.iterdir()):
                visit(child)
        else:
            others.append(path)

    for name in (METRICS_FILE, METRICS_FILE + ".tmp"):
        if (exp_dir / name).exists():
            visit(exp_dir / name)
    for name in _OUTPUT_DIRS:
        if (exp_dir / name).is_dir():
            visit(exp_dir / name)
    return ours, others


def delete_outputs(exp_dir: str | Path, paths: list[Path]) -> None:
    """Deletes ``paths`` (from :func:`run_outputs`), then the output folders left empty
    (``checkpoints/`` and ``episodes/`` stay)."""
    exp_dir = Path(exp_dir)
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for folder in sorted((p for p in exp_dir.rglob("*") if p.is_dir()), reverse=True):
        rel = folder.relative_to(exp_dir).as_posix()
        if any(p.fullmatch(rel) for p in _REMOVABLE_DIRS) and not any(folder.iterdir()):
            folder.rmdir()
    (exp_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
    (exp_dir / EPISODE_DIR).mkdir(exist_ok=True)


def recorded_episodes(exp_dir: str | Path) -> list[Path]:
    """Recorded episode files, oldest first."""
    root = Path(exp_dir) / EPISODE_DIR
    files = [p for p in root.rglob("*.ttyrec*") if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime, str(p)))


def prune_episodes(exp_dir: str | Path, max_files: int) -> int:
    """Keeps the newest ``max_files`` recordings; returns how many were deleted."""
    files = recorded_episodes(exp_dir)
    doomed = files[:-max_files] if len(files) > max_files else []
    for path in doomed:
        path.unlink(missing_ok=True)
    return len(doomed)

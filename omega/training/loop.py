"""The single-process training loop: an :class:`Actor` and an agent's ``learn`` in turn.

``train(exp_dir)`` resumes from the newest checkpoint when there is one. The envs are not
part of a checkpoint: a resumed run starts fresh episodes (with new seeds), and the rows of
``metrics.csv`` written after the checkpoint are dropped so the file matches the restored
state.

The pieces every backend shares (restoring the run, logging, checkpoints, Ctrl-C) are
:func:`prepare_run` and :class:`RunRecorder`; the Ray backend (``distributed.py``) drives
the same ones.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import math
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from omega.agents import build_agent
from omega.agents.parallel import DataParallel
from omega.agents.registry import agent_spec
from omega.config import ExperimentConfig, config_hash, config_to_dict
from omega.envs import EnvFactory, options_error
from omega.envs.vector import EpisodeStats, VectorEnv
from omega.errors import CheckpointError, ConfigError, DivergedError, OmegaError
from omega.training.actor import Actor
from omega.training.checkpoint import (
    LoopState,
    latest_checkpoint,
    load_checkpoint,
    load_replay,
    prune_replays,
    replay_path,
    save_checkpoint,
    save_replay,
)
from omega.training.device import resolve_devices, wants_all_devices
from omega.training.experiment import (
    CHECKPOINT_DIR,
    EPISODE_DIR,
    METRICS_FILE,
    ExperimentLock,
    load_experiment,
    prune_episodes,
    remove_stale_files,
)
from omega.training.metrics import MetricsLogger
from omega.training.progress import Progress


def param_count(tree: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def probe_env(cfg: Any) -> tuple[dict[str, np.ndarray], int]:
    """One observation (batched to [1, ...]) and the number of actions of the configured env.

    Raises :class:`ConfigError` when ``env.options`` cannot build the env."""
    try:
        env = EnvFactory.from_config(cfg.env)(0)
    except ConfigError:
        raise
    except Exception as e:
        if not cfg.env.options:
            raise
        raise ConfigError(options_error(cfg.env.id, dict(cfg.env.options), e)) from None
    try:
        obs, _ = env.reset(seed=cfg.seed)
        num_actions = int(env.action_space.n)
    finally:
        env.close()
    return {k: v[None] for k, v in obs.items()}, num_actions


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal after saving its checkpoint; ``signum`` says which (the
    CLI exits with 128 + signum: 130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


@contextlib.contextmanager
def exclusive_run(exp_dir: Path, out):
    """Holds the experiment's lock for a training run (a second 'omega run' on the dir
    stops with an error naming this one) and first removes what a killed run left half-done
    (temp files, a replay whose checkpoint never completed)."""
    load_experiment(exp_dir)  # a clear error for a dir that is no experiment
    with ExperimentLock(exp_dir, "omega run"):
        removed = remove_stale_files(exp_dir)
        if removed:
            names = ", ".join(str(p.relative_to(exp_dir)) for p in removed)
            print(f"omega: removed {len(removed)} file(s) a killed run left unfinished: "
                  f"{names}", file=out)
        yield


def _metrics_extent(path: Path) -> tuple[int, int]:
    """(rows, env steps of the last row) of a metrics.csv; (0, 0) when it has none."""
    if not path.is_file():
        return 0, 0
    with path.open(newline="") as f:
        steps = [r.get("env_steps", "") for r in csv.DictReader(f)]
    last = steps[-1] if steps else ""
    return len(steps), int(float(last)) if last.replace(".", "", 1).isdigit() else 0


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def all_finite(tree: Any) -> bool:
    """Whether every float in ``tree`` (params, a state) is finite (no NaN, no inf)."""
    return bool(_all_finite(tree))


def _is_loss(name: str) -> bool:
    return name in ("loss", "grad_norm") or name.endswith("_loss")


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else math.nan


def env_seed(cfg: ExperimentConfig, env_steps: int) -> int:
    # New seeds after a resume, so a resumed run does not replay the same games.
    return (cfg.seed * 1_000_003 + env_steps) % (2**31)


def recording_factory(cfg: ExperimentConfig, exp_dir: Path) -> EnvFactory:
    """The training envs: recorded every Nth episode, with ``train.max_episode_steps``."""
    factory = EnvFactory.from_config(cfg.env, record_root=str(exp_dir / EPISODE_DIR),
                                     record_every=cfg.record.every_n_episodes)
    limit = cfg.train.max_episode_steps
    if limit is not None and (factory.max_episode_steps is None
                              or limit < factory.max_episode_steps):
        factory = dataclasses.replace(factory, max_episode_steps=limit)
    return factory


class Run(NamedTuple):
    """A run restored (or started) and ready to train."""

    exp_dir: Path
    cfg: ExperimentConfig
    agent: Any
    rollout_length: int
    num_actions: int
    state: Any  # the agent state
    loop: LoopState
    total: int  # env steps to train to
    config_hash: str


def prepare_run(exp_dir: Path, total_env_steps: int | None, device: Any, out,
                describe_envs: str | None = None,
                data_parallel: DataParallel | None = None,
                replay_streams: int | None = None) -> Run:
    """Builds the agent, restores the newest checkpoint (and the replay saved with it) and
    prints the header lines.

    Call inside ``jax.default_device(device)``. ``describe_envs`` replaces the "N envs over
    W workers" part of the header; ``replay_streams`` is how many envs each learner update
    brings (default ``env.num_envs``): a saved replay with another number is not restored.
    A run that has reached its budget says so (``run.loop.env_steps >= run.total``).
    """
    cfg = load_experiment(exp_dir)
    total = int(total_env_steps or cfg.train.total_env_steps)
    chash = config_hash(cfg)
    obs_example, num_actions = probe_env(cfg)
    agent, rollout_length = build_agent(cfg, num_actions, data_parallel)
    rng = jax.random.PRNGKey(cfg.seed)
    rng, init_key = jax.random.split(rng)
    state = agent.init(init_key, obs_example, cfg.env.num_envs)
    loop = LoopState(env_steps=0, updates=0, episodes=0, rng=np.asarray(rng))

    ckpt = latest_checkpoint(exp_dir / CHECKPOINT_DIR)
    if ckpt is None:
        rows, last = _metrics_extent(exp_dir / METRICS_FILE)
        if rows:
            raise OmegaError(
                f"'{exp_dir}' has {METRICS_FILE} with {rows} rows (up to {last:,} env steps) "
                f"but no checkpoint in {CHECKPOINT_DIR}/ to continue them from; a run would "
                f"start from 0 and replace them: move {METRICS_FILE} away, or 'omega cleanup "
                f"--dir {exp_dir}' to start afresh")
    if ckpt is not None:
        state, loop = load_checkpoint(ckpt, state, chash)
        if not all_finite(agent.params(state)):
            raise DivergedError(f"checkpoint '{ckpt}' holds NaN or infinite parameters (its "
                                "run diverged); delete it to resume from the one before")
        print(f"omega: resuming from {ckpt.name} at {loop.env_steps:,} env steps", file=out)
        if hasattr(agent, "restore_replay") and loop.env_steps < total:
            _restore_replay(agent, cfg, exp_dir / CHECKPOINT_DIR, loop.env_steps, chash,
                            replay_streams or cfg.env.num_envs, out)
    n_params = param_count(agent.params(state))
    envs = describe_envs or f"{cfg.env.num_envs} envs over {cfg.env.num_workers} workers"
    print(f"omega: {cfg.agent_type} agent on {cfg.env.id}, {n_params:,} parameters, "
          f"{envs}, device {device}", file=out)
    if cfg.train.max_episode_steps is not None:
        print(f"omega: training episodes end after at most {cfg.train.max_episode_steps:,} "
              "steps (train.max_episode_steps; omega eval keeps the env's time limit)", file=out)
    if loop.env_steps >= total:
        print(f"omega: already trained for {loop.env_steps:,} env steps (target {total:,}); "
              "pass --steps to train longer", file=out)
    return Run(exp_dir, cfg, agent, rollout_length, num_actions, state, loop, total, chash)


def _restore_replay(agent: Any, cfg: ExperimentConfig, ckpt_dir: Path, env_steps: int,
                    chash: str, streams: int, out) -> None:
    """Loads the replay saved with the checkpoint at ``env_steps`` into ``agent``, or says
    why the run starts with an empty one."""
    section = agent_spec(cfg.agent_type).section
    steps = getattr(getattr(cfg, section, None), "warmup_steps", None) if section else None
    warmup = ("training starts at once" if steps is None else
              f"no train steps until it holds {section}.warmup_steps ({steps:,})")
    path = replay_path(ckpt_dir, env_steps)
    if not cfg.train.checkpoint_replay or not path.is_file():
        why = ("train.checkpoint_replay is false" if not cfg.train.checkpoint_replay
               else f"no {path.name} next to the checkpoint")
        print(f"omega: starting with an empty replay ({why}); {warmup}", file=out)
        return
    saved = load_replay(path, chash)
    if int(saved.get("num_envs", 0)) not in (0, streams):
        print(f"omega: not restoring {path.name}: it holds {int(saved['num_envs'])} env "
              f"streams and this run learns from {streams}; starting with an empty replay, "
              f"{warmup}", file=out)
        return
    try:
        size = agent.restore_replay(saved)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"replay file '{path}' does not fit this run ({e}); delete it "
                              "to resume with an empty replay") from None
    print(f"omega: restored the replay from {path.name}: {size:,} env steps", file=out)


class RunRecorder:
    """Progress bar, metrics rows, checkpoints and Ctrl-C handling for a training loop.

    The loop calls :meth:`record` after every update and :meth:`close` in a ``finally``;
    it stops when :attr:`stop_signal` is set (SIGINT / SIGTERM).
    """

    def __init__(self, run: Run, use_wandb: bool, out):
        cfg, exp_dir = run.cfg, run.exp_dir
        self.run, self.out = run, out
        self.logger = MetricsLogger(exp_dir, use_wandb=use_wandb, wandb_cfg=cfg.wandb,
                                    run_name=exp_dir.name, config=config_to_dict(cfg))
        self.logger.csv.truncate_after(run.loop.env_steps)
        self.recent: collections.deque = collections.deque(maxlen=100)  # for the progress bar
        self.window: list[EpisodeStats] = []
        self.last_log_steps = self.last_ckpt_steps = run.loop.env_steps
        self.window_start = time.perf_counter()
        self.stop_signal: int | None = None
        self.diverged = False
        # Agents that count train steps (MuZero) log NaN losses until their first one.
        steps = getattr(run.state, "train_steps", None)
        self._train_steps = None if steps is None else float(steps)
        self._old_handlers = {s: signal.signal(s, self._on_signal)
                              for s in (signal.SIGINT, signal.SIGTERM)}
        self.progress = Progress(total=run.total, start=run.loop.env_steps, out=out)

    def _on_signal(self, signum, _frame) -> None:
        self.stop_signal = signum

    def record(self, state: Any, loop: LoopState, rng: jax.Array,
               episodes: Iterable[EpisodeStats], metrics: Mapping[str, Any],
               columns: Mapping[str, float]) -> bool:
        """Logs a row when one is due (``columns`` are backend counters) and checkpoints.

        Returns whether a row was written. Raises :class:`DivergedError` (and saves
        nothing from then on) when a loss or a parameter is NaN or infinite.
        """
        cfg = self.run.cfg
        self._check_finite(state, loop, metrics)
        episodes = list(episodes)
        self.window.extend(episodes)
        self.recent.extend((e.episode_return, e.length, e.success) for e in episodes)
        self.progress.update(loop.env_steps, self.recent)

        logged = loop.env_steps - self.last_log_steps >= cfg.train.log_every_steps \
            or loop.env_steps >= self.run.total
        if logged:
            elapsed = time.perf_counter() - self.window_start
            window = self.window
            row = {
                "env_steps": loop.env_steps,
                "updates": loop.updates,
                "episodes": loop.episodes,
                "env_steps_per_s": (loop.env_steps - self.last_log_steps) / max(elapsed, 1e-9),
                "episode_return": _mean([e.episode_return for e in window]),
                "episode_length": _mean([e.length for e in window]),
                "success_rate": _mean([float(e.success) for e in window]),
                **columns,
            }
            row.update({k: float(v) for k, v in jax.device_get(dict(metrics)).items()})
            self.logger.write(row)
            self.progress.log(row)
            self.window, self.last_log_steps = [], loop.env_steps
            self.window_start = time.perf_counter()
            prune_episodes(self.run.exp_dir, cfg.record.max_files)

        # On the multiples of the cadence, not every N steps since the last save: a run
        # stopped and resumed keeps its checkpoints where an unbroken run has them.
        every = cfg.train.checkpoint_every_steps
        if loop.env_steps // every > self.last_ckpt_steps // every:
            self.checkpoint(state, loop, rng)
        return logged

    def _check_finite(self, state: Any, loop: LoopState, metrics: Mapping[str, Any]) -> None:
        trained = True
        if "train_steps" in metrics:
            steps = float(metrics["train_steps"])
            trained = self._train_steps is None or steps > self._train_steps
            self._train_steps = steps
        losses = {k: float(v) for k, v in metrics.items() if _is_loss(k)} if trained else {}
        bad = [f"{k} is {v}" for k, v in losses.items() if not math.isfinite(v)]
        if not all_finite(self.run.agent.params(state)):
            bad.append("the parameters hold NaN or inf")
        if not bad:
            return
        self.diverged = True
        newest = latest_checkpoint(self.run.exp_dir / CHECKPOINT_DIR)
        kept = (f"{newest.name} is the newest checkpoint, from before it" if newest is not None
                else "no checkpoint was written before it")
        section = agent_spec(self.run.cfg.agent_type).section or self.run.cfg.agent_type
        raise DivergedError(
            f"training diverged at {loop.env_steps:,} env steps (update {loop.updates:,}): "
            f"{', '.join(bad)}; stopped without saving, {kept}; check the reward scale "
            f"(env.reward_shaping) or lower {section}.learning_rate (in a new experiment)")

    def checkpoint(self, state: Any, loop: LoopState, rng: jax.Array) -> None:
        """Writes the checkpoint, and first the agent's replay when it has one (so every
        checkpoint on disk has its replay until the next one is complete)."""
        run, ckpt_dir = self.run, self.run.exp_dir / CHECKPOINT_DIR
        replay = None
        if run.cfg.train.checkpoint_replay and hasattr(run.agent, "replay_state"):
            replay = run.agent.replay_state()
            save_replay(ckpt_dir, loop.env_steps, replay, run.config_hash)
        save_checkpoint(ckpt_dir, state, loop._replace(rng=np.asarray(rng)), run.config_hash,
                        keep=run.cfg.train.keep_checkpoints,
                        every=run.cfg.train.checkpoint_every_steps)
        if replay is not None:
            prune_replays(ckpt_dir, keep_steps=loop.env_steps)
        self.last_ckpt_steps = loop.env_steps

    def close(self, state: Any, loop: LoopState, rng: jax.Array) -> None:
        """Restores the signal handlers and saves what the last checkpoint lacks."""
        for s, h in self._old_handlers.items():
            signal.signal(s, h)
        self.progress.close()
        if loop.env_steps > self.last_ckpt_steps and not self.diverged:
            self.checkpoint(state, loop, rng)

    def close_sinks(self) -> None:
        """After the envs are closed (their last recordings are complete)."""
        self.logger.close()
        prune_episodes(self.run.exp_dir, self.run.cfg.record.max_files)

    def finish(self, loop: LoopState) -> None:
        """Prints the last line; raises KeyboardInterrupt after a signal."""
        if self.stop_signal is not None:
            print(f"omega: stopped by signal {self.stop_signal} at {loop.env_steps:,} env "
                  "steps; checkpoint saved, 'omega run' resumes", file=self.out)
            raise Interrupted(self.stop_signal)
        print(f"omega: done, {loop.env_steps:,} env steps, {loop.episodes:,} episodes; "
              f"evaluate with 'omega eval --dir {self.run.exp_dir}'", file=self.out)


def train(exp_dir: str | Path, device: str | None = None, total_env_steps: int | None = None,
          use_wandb: bool = False, out=None) -> LoopState:
    out = out if out is not None else sys.stdout
    exp_dir = Path(exp_dir)
    devices = resolve_devices(device)
    dp = DataParallel(devices) if wants_all_devices(device) else None
    where = devices[0] if dp is None else (
        f"{', '.join(str(d) for d in devices)} (data-parallel learning)")

    with exclusive_run(exp_dir, out), jax.default_device(devices[0]):
        run = prepare_run(exp_dir, total_env_steps, where, out, data_parallel=dp)
        if run.loop.env_steps >= run.total:
            return run.loop
        cfg, agent, state, loop = run.cfg, run.agent, run.state, run.loop
        recorder = RunRecorder(run, use_wandb, out)
        actor = None
        rng = jnp_key(loop.rng)
        try:
            venv = VectorEnv(recording_factory(cfg, exp_dir), cfg.env.num_envs,
                             cfg.env.num_workers, seed=env_seed(cfg, loop.env_steps),
                             step_timeout_s=cfg.env.step_timeout_s)
            rng, actor_key = jax.random.split(rng)
            actor = Actor(agent, venv, actor_key)
            steps_per_rollout = run.rollout_length * cfg.env.num_envs
            learner = _BackgroundLearner(agent) if cfg.train.async_learning else None
            timing = {"acting_s": 0.0, "learning_s": 0.0}  # since the last metrics row

            def account(state, loop, episodes, metrics):
                loop = loop._replace(env_steps=loop.env_steps + steps_per_rollout,
                                     updates=loop.updates + 1,
                                     episodes=loop.episodes + len(episodes))
                if recorder.record(state, loop, rng, episodes, metrics,
                                   {"worker_restarts": actor.worker_restarts, **timing}):
                    timing.update(acting_s=0.0, learning_s=0.0)
                return loop

            # Async: rollout k is acted with the params of update k - 1 while update k - 1 -> k
            # learns from rollout k - 1 on a thread (XLA releases the GIL), so the envs and
            # the policy do not wait for the learner; the price is one update of policy lag.
            # learning_s then counts only the wait for the learner after a rollout.
            pending = None  # episodes of the rollout whose update is in flight (async only)
            try:
                while loop.env_steps + (pending is not None) * steps_per_rollout < run.total \
                        and recorder.stop_signal is None:
                    params = agent.params(state)
                    if dp is not None:
                        params = dp.for_acting(params)
                    t0 = time.perf_counter()
                    trajectory, episodes = actor.rollout(params, run.rollout_length)
                    t1 = time.perf_counter()
                    timing["acting_s"] += t1 - t0
                    rng, learn_key = jax.random.split(rng)
                    if learner is None:
                        state, metrics = jax.block_until_ready(
                            agent.learn(state, trajectory, learn_key))
                        timing["learning_s"] += time.perf_counter() - t1
                        loop = account(state, loop, episodes, metrics)
                        continue
                    if pending is not None:
                        state, metrics = learner.result()
                        timing["learning_s"] += time.perf_counter() - t1
                        loop = account(state, loop, pending, metrics)
                    learner.submit(state, trajectory, learn_key)
                    pending = episodes
                if pending is not None:
                    t1 = time.perf_counter()
                    state, metrics = learner.result()
                    timing["learning_s"] += time.perf_counter() - t1
                    loop = account(state, loop, pending, metrics)
            finally:
                if learner is not None:
                    learner.close()
        finally:
            recorder.close(state, loop, rng)
            if actor is not None:
                actor.close()
            recorder.close_sinks()
        recorder.finish(loop)
        return loop


class _BackgroundLearner:
    """``agent.learn`` on one worker thread, one update in flight at a time."""

    def __init__(self, agent: Any):
        self.agent = agent
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="omega-learner")
        self.future: concurrent.futures.Future | None = None

    def submit(self, state: Any, trajectory: Any, key: jax.Array) -> None:
        assert self.future is None, "one update in flight at a time"
        self.future = self.pool.submit(self._learn, state, trajectory, key)

    def _learn(self, state: Any, trajectory: Any, key: jax.Array) -> tuple[Any, Any]:
        return jax.block_until_ready(self.agent.learn(state, trajectory, key))

    def result(self) -> tuple[Any, Any]:
        future, self.future = self.future, None
        assert future is not None, "no update in flight"
        return future.result()

    def close(self) -> None:
        """Waits for an update still in flight (after an error its result is dropped)."""
        if self.future is not None:
            self.future.exception()
            self.future = None
        self.pool.shutdown(wait=True)


def jnp_key(data: np.ndarray) -> jax.Array:
    key = jax.numpy.asarray(np.asarray(data, np.uint32))
    if key.shape != (2,):
        raise OmegaError("checkpoint holds a malformed PRNG key; start a new experiment")
    return key

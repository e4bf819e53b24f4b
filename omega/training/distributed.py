"""The Ray backend of ``omega run``: several remote actors, one learner in the driver.

Each Ray actor (:class:`RolloutWorker`) owns an :class:`~omega.training.actor.Actor` (a
:class:`~omega.envs.vector.VectorEnv` of env worker processes plus ``agent.act``) and returns
one :class:`~omega.agents.base.Trajectory` per ``rollout`` call. The driver process is the
learner: it runs ``agent.learn`` on trajectories in the order they arrive, puts the new params
into the Ray object store once per update, and hands that reference to the next rollout of the
actor whose trajectory it just consumed (Ray resolves it inside the actor).

Policy lag: a params version is the learner's update count when it was put. A trajectory acted
with version ``v`` reaching a learner at version ``u`` has lag ``u - v``; with lag above
``distributed.max_policy_lag`` it is dropped (counted in ``dropped_stale``, never learned from,
not counted in ``env_steps``) and its actor goes again with the newest params.

Failures: when an actor dies or its rollout raises, the driver logs one line, kills it, starts
a replacement with fresh env seeds and keeps training (``actor_restarts``); after
``distributed.max_actor_restarts`` replacements the run stops with an error. Checkpoints,
``metrics.csv``, resume and Ctrl-C are those of the local loop (:class:`RunRecorder`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from omega.agents import build_agent
from omega.agents.base import Params, Trajectory
from omega.config import ExperimentConfig
from omega.envs import EnvFactory
from omega.envs.vector import EpisodeStats, VectorEnv
from omega.errors import OmegaError
from omega.training.actor import Actor
from omega.training.checkpoint import LoopState
from omega.training.device import resolve_device
from omega.training.experiment import load_experiment
from omega.training.loop import RunRecorder, jnp_key, prepare_run, recording_factory

SUPPORTED_AGENTS = ("ppo", "random")
_WAIT_S = 0.5  # how often the driver looks for Ctrl-C while it waits for trajectories
_CLOSE_TIMEOUT_S = 30.0


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise OmegaError("--backend ray needs the ray package; install it with "
                         "pip install 'omega[distributed]'") from None
    return ray


# ---------------------------------------------------------------------------------------------
# Policy-lag bookkeeping (pure)


class LagStats(NamedTuple):
    consumed: int = 0  # trajectories learned from
    dropped: int = 0  # trajectories dropped as stale
    lag_sum: int = 0  # summed lag of the consumed ones

    @property
    def mean_lag(self) -> float:
        return self.lag_sum / self.consumed if self.consumed else float("nan")


def admit(stats: LagStats, learner_version: int, behaviour_version: int,
          max_lag: int) -> tuple[bool, LagStats]:
    """Whether a trajectory acted with ``behaviour_version`` may be learned from now."""
    lag = learner_version - behaviour_version
    if lag < 0:
        raise ValueError(f"trajectory from params version {behaviour_version} is newer than "
                         f"the learner's {learner_version}")
    if lag > max_lag:
        return False, stats._replace(dropped=stats.dropped + 1)
    return True, stats._replace(consumed=stats.consumed + 1, lag_sum=stats.lag_sum + lag)


def actor_seeds(seed: int, env_steps: int, index: int, generation: int) -> tuple[int, int]:
    """(env seed, PRNG seed) of actor ``index``'s ``generation``-th incarnation.

    Distinct per actor, per replacement and per resume point, so no two incarnations replay
    the same games.
    """
    env_s, key_s = np.random.SeedSequence([seed, env_steps, index, generation]).generate_state(2)
    return int(env_s % 2**31), int(key_s)


# ---------------------------------------------------------------------------------------------
# The remote actor


@dataclasses.dataclass(frozen=True)
class _OffsetFactory:
    """Env ``i`` of actor ``k`` is global env ``k * N + i`` (its own recording dir)."""

    factory: EnvFactory
    offset: int

    def __call__(self, index: int):
        return self.factory(index + self.offset)


class Rollout(NamedTuple):
    trajectory: Trajectory  # numpy, [T, N, ...]
    episodes: list[EpisodeStats]
    version: int  # params version it was acted with
    worker_restarts: int  # env worker restarts during this rollout


class RolloutWorker:
    """Body of a Ray actor: an :class:`Actor` that returns one trajectory per call."""

    def __init__(self, cfg: ExperimentConfig, num_actions: int, exp_dir: str, index: int,
                 env_seed: int, key_seed: int):
        # Ray hides GPUs from actors that did not ask for one; acting runs on the CPU.
        jax.config.update("jax_platforms", "cpu")
        agent, _ = build_agent(cfg, num_actions)
        factory = _OffsetFactory(recording_factory(cfg, Path(exp_dir)), index * cfg.env.num_envs)
        venv = VectorEnv(factory, cfg.env.num_envs, cfg.env.num_workers, seed=env_seed,
                         step_timeout_s=cfg.env.step_timeout_s)
        self.actor = Actor(agent, venv, jax.random.PRNGKey(key_seed))
        self._reported_restarts = 0

    def pid(self) -> int:
        return os.getpid()

    def rollout(self, params: Params, version: int, length: int) -> Rollout:
        trajectory, episodes = self.actor.rollout(jax.device_put(params), length)
        restarts = self.actor.worker_restarts - self._reported_restarts
        self._reported_restarts = self.actor.worker_restarts
        return Rollout(jax.device_get(trajectory), episodes, version, restarts)

    def close(self) -> None:
        self.actor.close()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b")


def _one_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error  # RayTaskError wraps the actor's exception
    lines = [ln.strip() for ln in _ANSI.sub("", str(cause)).splitlines() if ln.strip()]
    # An actor that failed in its constructor comes back with the remote traceback in the
    # message; its last exception line names the real problem.
    raised = [ln for ln in lines if _EXCEPTION_LINE.match(ln)]
    if raised:
        text = raised[-1]
    else:
        text = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class _Fleet:
    """The Ray actors, their in-flight rollouts and their replacements."""

    def __init__(self, ray: Any, run: Any, num_actors: int, out):
        self.ray, self.run, self.out = ray, run, out
        self.remote_cls = ray.remote(num_cpus=1, max_restarts=0)(RolloutWorker)
        self.handles: list[Any] = [None] * num_actors
        self.generation = [0] * num_actors
        # in-flight ref -> (actor index, whether it is a replacement's pid call, made so the
        # first rollout gets the params that are newest once it is up)
        self.pending: dict[Any, tuple[int, bool]] = {}
        self.restarts = 0

    def start(self, index: int, env_steps: int) -> None:
        cfg = self.run.cfg
        env_s, key_s = actor_seeds(cfg.seed, env_steps, index, self.generation[index])
        self.handles[index] = self.remote_cls.remote(
            cfg, self.run.num_actions, str(self.run.exp_dir.resolve()), index, env_s, key_s)

    def start_all(self, env_steps: int) -> None:
        for i in range(len(self.handles)):
            self.start(i, env_steps)
        for i, h in enumerate(self.handles):
            try:
                pid = self.ray.get(h.pid.remote())
            except self.ray.exceptions.RayError as e:
                raise OmegaError(f"Ray actor {i} could not start ({_one_line(e)}); "
                                 "check the env config with 'omega run' on the local "
                                 "backend") from None
            print(f"omega: actor {i} ready (pid {pid})", file=self.out, flush=True)

    def submit(self, index: int, params_ref: Any, version: int) -> None:
        ref = self.handles[index].rollout.remote(params_ref, version, self.run.rollout_length)
        self.pending[ref] = (index, False)

    def replace(self, index: int, error: BaseException, env_steps: int) -> None:
        limit = self.run.cfg.distributed.max_actor_restarts
        if self.restarts >= limit:
            raise OmegaError(f"Ray actor {index} failed ({_one_line(error)}) after {limit} "
                             "actor restarts (distributed.max_actor_restarts); fix the cause "
                             "or raise the limit")
        self.restarts += 1
        print(f"omega: actor {index} died ({_one_line(error)}); restarting it",
              file=self.out, flush=True)
        self.ray.kill(self.handles[index], no_restart=True)
        self.generation[index] += 1
        self.start(index, env_steps)
        self.pending[self.handles[index].pid.remote()] = (index, True)

    def close(self) -> None:
        """Closes the envs of live actors (finishing their recordings), then kills them all."""
        live = [h for h in self.handles if h is not None]
        closing = [h.close.remote() for h in live]
        self.ray.wait(closing, num_returns=len(closing), timeout=_CLOSE_TIMEOUT_S)
        for h in live:
            self.ray.kill(h, no_restart=True)
        self.pending.clear()


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fails fast on a HOST:PORT nobody listens on (``ray.init`` would retry for minutes)."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: left to Ray
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise OmegaError(f"no Ray cluster answers at --address {address} ({e.strerror or e}); "
                         "start one with 'ray start --head' or fix the address") from None


def _init_ray(ray: Any, address: str | None, num_actors: int) -> bool:
    """Starts or joins Ray unless this process already did; returns whether it did now."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                              "logging_level": "WARNING"}
    if address is None:
        # A private instance ("local"): None would join a 'ray start' cluster or RAY_ADDRESS.
        # Each actor asks Ray for one CPU; this one always has room for all of them.
        address = "local"
        kwargs["num_cpus"] = max(os.cpu_count() or 1, num_actors)
    try:
        with warnings.catch_warnings():
            # Ray starts its services with fork + exec, which this JAX warning cannot tell
            # apart from a bare fork.
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                                    category=RuntimeWarning)
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise OmegaError(f"could not start or reach Ray at {address} "
                         f"({_one_line(e)}); check --address (e.g. ray://HOST:10001 or "
                         "HOST:6379 of 'ray start --head')") from None
    return True


def train_distributed(exp_dir: str | Path, device: str | None = None,
                      total_env_steps: int | None = None, use_wandb: bool = False, out=None,
                      address: str | None = None, num_actors: int | None = None,
                      on_update: Callable[[int, Sequence[Any]], None] | None = None,
                      ) -> LoopState:
    """Trains with ``num_actors`` Ray actors (default ``distributed.num_actors``).

    ``on_update(updates, actor_handles)`` runs after every learner update (a hook for tests
    that kill actors).
    """
    out = out if out is not None else sys.stdout
    ray = import_ray()
    exp_dir = Path(exp_dir)
    cfg = load_experiment(exp_dir)
    if cfg.agent_type not in SUPPORTED_AGENTS:
        raise OmegaError(
            f"--backend ray runs agent_type {' and '.join(SUPPORTED_AGENTS)}, not "
            f"{cfg.agent_type}: MuZero's replay keeps each env's steps as one stream, which "
            "trajectories from several actors would interleave; use --backend local")
    n_actors = int(num_actors or cfg.distributed.num_actors)
    if n_actors < 1:
        raise OmegaError(f"--num-actors must be >= 1, got {n_actors}")
    max_lag = cfg.distributed.max_policy_lag
    dev = resolve_device(device)
    if address is not None and not ray.is_initialized():
        check_reachable(address)

    with jax.default_device(dev):
        run = prepare_run(exp_dir, total_env_steps, dev, out, describe_envs=(
            f"{n_actors} Ray actors x {cfg.env.num_envs} envs over {cfg.env.num_workers} "
            "workers"))
        if run.loop.env_steps >= run.total:
            return run.loop
        if max_lag < n_actors - 1:
            print(f"omega: note: distributed.max_policy_lag ({max_lag}) < actors - 1 "
                  f"({n_actors - 1}); most trajectories will be dropped as stale", file=out)
        started = _init_ray(ray, address, n_actors)
        agent, state, loop = run.agent, run.state, run.loop
        rng = jnp_key(loop.rng)
        fleet = _Fleet(ray, run, n_actors, out)
        recorder = None
        try:
            fleet.start_all(loop.env_steps)
            recorder = RunRecorder(run, use_wandb, out)
            steps_per_rollout = run.rollout_length * cfg.env.num_envs
            lag, window_lag = LagStats(), LagStats()
            worker_restarts = 0
            params_ref = ray.put(jax.device_get(agent.params(state)))
            for i in range(n_actors):
                fleet.submit(i, params_ref, loop.updates)
            while loop.env_steps < run.total and recorder.stop_signal is None:
                ready, _ = ray.wait(list(fleet.pending), num_returns=1, timeout=_WAIT_S)
                if not ready:
                    continue
                index, is_replacement = fleet.pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except ray.exceptions.RayError as e:  # died, or its rollout raised
                    fleet.replace(index, e, loop.env_steps)
                    continue
                if is_replacement:
                    print(f"omega: actor {index} is back (pid {result})", file=out, flush=True)
                    fleet.submit(index, params_ref, loop.updates)
                    continue
                worker_restarts += result.worker_restarts
                ok, lag = admit(lag, loop.updates, result.version, max_lag)
                if not ok:
                    fleet.submit(index, params_ref, loop.updates)
                    continue
                window_lag = admit(window_lag, loop.updates, result.version, max_lag)[1]
                rng, learn_key = jax.random.split(rng)
                state, metrics = agent.learn(state, result.trajectory, learn_key)
                loop = loop._replace(env_steps=loop.env_steps + steps_per_rollout,
                                     updates=loop.updates + 1,
                                     episodes=loop.episodes + len(result.episodes))
                params_ref = ray.put(jax.device_get(agent.params(state)))
                fleet.submit(index, params_ref, loop.updates)
                logged = recorder.record(state, loop, rng, result.episodes, metrics, {
                    "worker_restarts": worker_restarts,
                    "actor_restarts": fleet.restarts,
                    "dropped_stale": lag.dropped,
                    "policy_lag": window_lag.mean_lag,
                })
                if logged:
                    window_lag = LagStats()
                if on_update is not None:
                    on_update(loop.updates, list(fleet.handles))
        finally:
            if recorder is not None:
                recorder.close(state, loop, rng)
            fleet.close()
            if recorder is not None:
                recorder.close_sinks()
            if started:
                ray.shutdown()
        recorder.finish(loop)
        return loop

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

MuZero learns in rounds instead (:func:`_learn_in_rounds`): its replay keeps each env's steps
as one stream, so the learner waits for one rollout from every actor (all acted with the same
params), concatenates them along the env axis (:func:`concat_rollouts`: actor ``k``'s env
``i`` is always replay stream ``k * N + i``), starts the next round with its newest params and
then learns on the round (lag 1, or 0 without overlap when ``max_policy_lag`` is 0). With
``distributed.num_reanalyze_workers`` > 0, :class:`ReanalyzeWorker` Ray actors search stored
observations with the newest params, and the learner writes their targets back to the replay
for the steps still in it.

Failures: when an actor dies or its rollout raises, the driver logs one line, kills it, starts
a replacement with fresh env seeds and keeps training (``actor_restarts``); after
``distributed.max_actor_restarts`` replacements (reanalyze workers included) the run stops
with an error. A MuZero round waits for the replacement's rollout, and the replay's streams of
the replaced actor are cut first (``ReplayBuffer.end_streams``): its envs play new games.
Checkpoints, ``metrics.csv``, resume and Ctrl-C are those of the local loop
(:class:`RunRecorder`).
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
from omega.agents.registry import agent_spec
from omega.config import ExperimentConfig
from omega.envs import EnvFactory
from omega.envs.vector import EpisodeStats, VectorEnv
from omega.errors import OmegaError
from omega.training.actor import Actor
from omega.training.checkpoint import LoopState
from omega.training.device import resolve_device
from omega.training.experiment import load_experiment
from omega.training.loop import (
    RunRecorder,
    exclusive_run,
    jnp_key,
    prepare_run,
    recording_factory,
)

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


def concat_rollouts(trajectories: Sequence[Trajectory]) -> Trajectory:
    """One trajectory [T, N_0 + N_1 + ...] of rollouts [T, N_k] of the same length, their
    envs side by side in the order given: every field along the env axis (axis 1 of obs,
    first, action, reward, terminated, truncated, truncation_value and each extra, the
    recurrent memory ``extras["memory"]`` included), the pytree ``initial_carry`` along its
    leading env axis (None when every rollout's is None)."""
    if not trajectories:
        raise ValueError("no trajectories to concatenate")
    lengths = {int(np.shape(t.action)[0]) for t in trajectories}
    if len(lengths) != 1:
        raise ValueError(f"rollouts of different lengths {sorted(lengths)} cannot be "
                         "concatenated")

    def along(axis: int):
        return lambda *xs: np.concatenate([np.asarray(x) for x in xs], axis=axis)

    steps = jax.tree_util.tree_map(along(1), *(t._replace(initial_carry=None)
                                               for t in trajectories))
    carry = jax.tree_util.tree_map(along(0), *(t.initial_carry for t in trajectories))
    return steps._replace(initial_carry=carry)


class ReanalyzeWorker:
    """Body of a Ray actor that reanalyzes replay steps (MuZero's noise-free search,
    :meth:`~omega.agents.muzero.agent.MuZeroAgent.search_targets`) on observations the
    driver sends, with the params it sends: the agent's ``reanalyze.search`` hook."""

    def __init__(self, cfg: ExperimentConfig, num_actions: int):
        jax.config.update("jax_platforms", "cpu")
        self.agent, _ = build_agent(cfg, num_actions)
        self.hooks = agent_spec(cfg.agent_type).reanalyze

    def pid(self) -> int:
        return os.getpid()

    def reanalyze(self, params: Params, batch: Any) -> tuple[np.ndarray, np.ndarray]:
        """(search_policy [M, A], root_value [M]) of a ``ReanalyzeBatch`` with the actor
        params ``params`` (their network params; exploration is off anyway)."""
        return self.hooks.search(self.agent, params, batch)


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

    def submit_all(self, params_ref: Any, version: int) -> None:
        """A rollout of every actor, in actor order."""
        for i in range(len(self.handles)):
            self.submit(i, params_ref, version)

    def count_restart(self, name: str, error: BaseException) -> None:
        """Counts one replacement of the Ray actor ``name`` (an actor or a reanalyze worker:
        both count toward ``distributed.max_actor_restarts``) and logs it; raises past it."""
        limit = self.run.cfg.distributed.max_actor_restarts
        if self.restarts >= limit:
            raise OmegaError(f"Ray {name} failed ({_one_line(error)}) after {limit} "
                             "actor restarts (distributed.max_actor_restarts); fix the cause "
                             "or raise the limit")
        self.restarts += 1
        print(f"omega: {name} died ({_one_line(error)}); restarting it",
              file=self.out, flush=True)

    def replace(self, index: int, error: BaseException, env_steps: int) -> None:
        self.count_restart(f"actor {index}", error)
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


class _ReanalyzePool:
    """The reanalyze workers: each always has one batch in flight once the replay holds
    steps; its targets are written back when it returns, and it gets a fresh batch with the
    newest params."""

    def __init__(self, ray: Any, run: Any, fleet: _Fleet, num_workers: int, out):
        self.ray, self.run, self.fleet, self.out = ray, run, fleet, out
        self.hooks = agent_spec(run.cfg.agent_type).reanalyze
        self.remote_cls = ray.remote(num_cpus=1, max_restarts=0)(ReanalyzeWorker)
        self.handles: list[Any] = [None] * num_workers
        # in-flight ref -> (worker index, the ReanalyzeBatch sent, or None for a
        # replacement's pid call)
        self.pending: dict[Any, tuple[int, Any]] = {}
        self.idle: set[int] = set()
        self.written = self.skipped = 0  # steps since the last metrics row

    def _start(self, index: int) -> None:
        self.handles[index] = self.remote_cls.remote(self.run.cfg, self.run.num_actions)

    def start_all(self) -> None:
        for i in range(len(self.handles)):
            self._start(i)
        for i, h in enumerate(self.handles):
            try:
                pid = self.ray.get(h.pid.remote())
            except self.ray.exceptions.RayError as e:
                raise OmegaError(f"Ray reanalyze worker {i} could not start "
                                 f"({_one_line(e)})") from None
            print(f"omega: reanalyze worker {i} ready (pid {pid})", file=self.out, flush=True)
        self.idle = set(range(len(self.handles)))

    def fill(self, agent: Any, params_ref: Any) -> None:
        """Gives every idle worker a batch (once the replay holds steps)."""
        for i in sorted(self.idle):
            batch = self.hooks.sample(agent)
            if batch is None:  # the replay is still empty
                return
            self.pending[self.handles[i].reanalyze.remote(params_ref, batch)] = (i, batch)
        self.idle.clear()

    def collect(self, ref: Any, agent: Any, params_ref: Any) -> None:
        """Handles a finished call: writes the targets back or replaces a dead worker."""
        index, batch = self.pending.pop(ref)
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            self.fleet.count_restart(f"reanalyze worker {index}", e)
            self.ray.kill(self.handles[index], no_restart=True)
            self._start(index)
            self.pending[self.handles[index].pid.remote()] = (index, None)
            return
        if batch is None:
            print(f"omega: reanalyze worker {index} is back (pid {result})", file=self.out,
                  flush=True)
        else:
            written, skipped = self.hooks.write(agent, batch, result)
            self.written += written
            self.skipped += skipped
        self.idle.add(index)
        self.fill(agent, params_ref)

    def columns(self) -> dict[str, int]:
        return {"reanalyzed_steps": self.written, "reanalyze_skipped": self.skipped}

    def close(self) -> None:
        for h in self.handles:
            if h is not None:
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


@dataclasses.dataclass
class _Learner:
    """What the learner has learned so far (read by the ``finally`` that checkpoints)."""

    state: Any
    loop: LoopState
    rng: jax.Array


def train_distributed(exp_dir: str | Path, device: str | None = None,
                      total_env_steps: int | None = None, use_wandb: bool = False, out=None,
                      address: str | None = None, num_actors: int | None = None,
                      on_update: Callable[[int, Sequence[Any]], None] | None = None,
                      ) -> LoopState:
    """Trains with ``num_actors`` Ray actors (default ``distributed.num_actors``).

    ``on_update(updates, handles)`` runs after every learner update with the actor handles
    followed by the reanalyze workers' (a hook for tests that kill actors).
    """
    out = out if out is not None else sys.stdout
    ray = import_ray()
    exp_dir = Path(exp_dir)
    cfg = load_experiment(exp_dir)
    spec = agent_spec(cfg.agent_type)
    n_actors = int(num_actors or cfg.distributed.num_actors)
    if n_actors < 1:
        raise OmegaError(f"--num-actors must be >= 1, got {n_actors}")
    # An agent whose replay keeps each env's steps as one stream learns from rounds of one
    # rollout per actor, concatenated along the env axis (``_learn_in_rounds``).
    rounds = spec.keeps_replay
    n_reanalyze = cfg.distributed.num_reanalyze_workers if spec.reanalyze is not None else 0
    max_lag = cfg.distributed.max_policy_lag
    dev = resolve_device(device)
    if address is not None and not ray.is_initialized():
        check_reachable(address)

    describe = (f"{n_actors} Ray actors x {cfg.env.num_envs} envs over {cfg.env.num_workers} "
                "workers")
    if rounds:
        describe += f", learning from rounds of {n_actors * cfg.env.num_envs} envs"
    if n_reanalyze:
        describe += f", {n_reanalyze} reanalyze workers"
    with exclusive_run(exp_dir, out), jax.default_device(dev):
        run = prepare_run(exp_dir, total_env_steps, dev, out, describe_envs=describe,
                          replay_streams=n_actors * cfg.env.num_envs if rounds else None)
        if run.loop.env_steps >= run.total:
            return run.loop
        if not rounds and max_lag < n_actors - 1:
            print(f"omega: note: distributed.max_policy_lag ({max_lag}) < actors - 1 "
                  f"({n_actors - 1}); most trajectories will be dropped as stale", file=out)
        started = _init_ray(ray, address, n_actors + n_reanalyze)
        learner = _Learner(run.state, run.loop, jnp_key(run.loop.rng))
        fleet = _Fleet(ray, run, n_actors, out)
        pool = _ReanalyzePool(ray, run, fleet, n_reanalyze, out) if n_reanalyze else None
        recorder = None
        try:
            fleet.start_all(learner.loop.env_steps)
            if pool is not None:
                pool.start_all()
                spec.reanalyze.stop_in_learn(run.agent)  # the workers reanalyze instead
            recorder = RunRecorder(run, use_wandb, out)
            body = _learn_in_rounds if rounds else _learn_as_they_come
            body(ray, run, fleet, pool, recorder, learner, on_update)
        finally:
            if recorder is not None:
                recorder.close(learner.state, learner.loop, learner.rng)
            if pool is not None:
                pool.close()
            fleet.close()
            if recorder is not None:
                recorder.close_sinks()
            if started:
                ray.shutdown()
        recorder.finish(learner.loop)
        return learner.loop


def _learn_as_they_come(ray: Any, run: Any, fleet: _Fleet, pool: None, recorder: RunRecorder,
                        learner: _Learner, on_update: Callable | None) -> None:
    """PPO and the random agent: one update per trajectory, in the order they arrive."""
    del pool
    agent, cfg = run.agent, run.cfg
    max_lag = cfg.distributed.max_policy_lag
    steps_per_rollout = run.rollout_length * cfg.env.num_envs
    lag, window_lag = LagStats(), LagStats()
    worker_restarts = 0
    params_ref = ray.put(jax.device_get(agent.params(learner.state)))
    for i in range(len(fleet.handles)):
        fleet.submit(i, params_ref, learner.loop.updates)
    while learner.loop.env_steps < run.total and recorder.stop_signal is None:
        ready, _ = ray.wait(list(fleet.pending), num_returns=1, timeout=_WAIT_S)
        if not ready:
            continue
        loop = learner.loop
        index, is_replacement = fleet.pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except ray.exceptions.RayError as e:  # died, or its rollout raised
            fleet.replace(index, e, loop.env_steps)
            continue
        if is_replacement:
            print(f"omega: actor {index} is back (pid {result})", file=recorder.out, flush=True)
            fleet.submit(index, params_ref, loop.updates)
            continue
        worker_restarts += result.worker_restarts
        ok, lag = admit(lag, loop.updates, result.version, max_lag)
        if not ok:
            fleet.submit(index, params_ref, loop.updates)
            continue
        window_lag = admit(window_lag, loop.updates, result.version, max_lag)[1]
        learner.rng, learn_key = jax.random.split(learner.rng)
        learner.state, metrics = agent.learn(learner.state, result.trajectory, learn_key)
        learner.loop = loop = loop._replace(env_steps=loop.env_steps + steps_per_rollout,
                                            updates=loop.updates + 1,
                                            episodes=loop.episodes + len(result.episodes))
        params_ref = ray.put(jax.device_get(agent.params(learner.state)))
        fleet.submit(index, params_ref, loop.updates)
        logged = recorder.record(learner.state, loop, learner.rng, result.episodes, metrics, {
            "worker_restarts": worker_restarts,
            "actor_restarts": fleet.restarts,
            "dropped_stale": lag.dropped,
            "policy_lag": window_lag.mean_lag,
        })
        if logged:
            window_lag = LagStats()
        if on_update is not None:
            on_update(loop.updates, list(fleet.handles))


def _end_streams(run: Any, replaced: set[int], n_envs: int) -> None:
    """Ends the replay streams of the ``replaced`` actors' envs (their envs continue no
    stream of the replay) and empties the set."""
    end_streams = agent_spec(run.cfg.agent_type).end_streams
    for i in sorted(replaced):
        end_streams(run.agent, np.arange(i * n_envs, (i + 1) * n_envs))
    replaced.clear()


def _learn_in_rounds(ray: Any, run: Any, fleet: _Fleet, pool: _ReanalyzePool | None,
                     recorder: RunRecorder, learner: _Learner,
                     on_update: Callable | None) -> None:
    """MuZero: one update per round of one rollout from every actor, all acted with the same
    params and learned as one trajectory [T, actors x N] (actor ``k``'s envs are the
    replay's env streams ``k N .. k N + N - 1``, the same in every round).

    With ``max_policy_lag`` >= 1 the actors start the next round (with the params of the
    round just gathered) before the learner updates, so acting overlaps learning and every
    round after the first has lag 1; with 0 they wait for the update (lag 0).
    """
    agent, cfg = run.agent, run.cfg
    n_actors, n_envs = len(fleet.handles), cfg.env.num_envs
    max_lag = cfg.distributed.max_policy_lag
    overlap = max_lag >= 1
    steps_per_round = run.rollout_length * n_actors * n_envs
    lag, window_lag = LagStats(), LagStats()
    worker_restarts = 0
    params_ref = ray.put(jax.device_get(agent.params(learner.state)))
    round_ref, round_version = params_ref, learner.loop.updates  # what this round acts with
    fleet.submit_all(round_ref, round_version)
    gathered: dict[int, Rollout] = {}
    replaced: set[int] = set()  # actors whose envs are new since the last round learned
    while learner.loop.env_steps < run.total and recorder.stop_signal is None:
        # Reanalyze results first: written back at once, before the round they finished in.
        waiting = (list(pool.pending) if pool is not None else []) + list(fleet.pending)
        ready, _ = ray.wait(waiting, num_returns=1, timeout=_WAIT_S)
        if not ready:
            continue
        loop = learner.loop
        if pool is not None and ready[0] in pool.pending:
            pool.collect(ready[0], agent, params_ref)
            continue
        index, is_replacement = fleet.pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except ray.exceptions.RayError as e:  # died, or its rollout raised
            fleet.replace(index, e, loop.env_steps)
            replaced.add(index)
            continue
        if is_replacement:  # its rollout joins the round in hand, with the round's params
            print(f"omega: actor {index} is back (pid {result})", file=recorder.out, flush=True)
            fleet.submit(index, round_ref, round_version)
            continue
        worker_restarts += result.worker_restarts
        gathered[index] = result
        if len(gathered) < n_actors:
            continue

        rollouts = [gathered.pop(i) for i in range(n_actors)]
        trajectory = concat_rollouts([r.trajectory for r in rollouts])
        episodes = [e for r in rollouts for e in r.episodes]
        if overlap:
            round_ref, round_version = params_ref, loop.updates
            fleet.submit_all(round_ref, round_version)
        _end_streams(run, replaced, n_envs)
        ok, lag = admit(lag, loop.updates, rollouts[0].version, max_lag)
        assert ok, "a round is never older than max_policy_lag"
        window_lag = admit(window_lag, loop.updates, rollouts[0].version, max_lag)[1]
        learner.rng, learn_key = jax.random.split(learner.rng)
        learner.state, metrics = agent.learn(learner.state, trajectory, learn_key)
        learner.loop = loop = loop._replace(env_steps=loop.env_steps + steps_per_round,
                                            updates=loop.updates + 1,
                                            episodes=loop.episodes + len(episodes))
        params_ref = ray.put(jax.device_get(agent.params(learner.state)))
        if not overlap:
            round_ref, round_version = params_ref, loop.updates
            fleet.submit_all(round_ref, round_version)
        columns = {"worker_restarts": worker_restarts, "actor_restarts": fleet.restarts,
                   "dropped_stale": lag.dropped, "policy_lag": window_lag.mean_lag}
        if pool is not None:
            pool.fill(agent, params_ref)
            columns.update(pool.columns())
        if recorder.record(learner.state, loop, learner.rng, episodes, metrics, columns):
            window_lag = LagStats()
            if pool is not None:
                pool.written = pool.skipped = 0
        if on_update is not None:
            on_update(loop.updates, list(fleet.handles) + (pool.handles if pool else []))

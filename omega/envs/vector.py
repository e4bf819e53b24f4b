"""Vectorised environments: ``num_envs`` envs spread over ``num_workers`` processes.

Each worker process owns a contiguous slice of the envs and steps all of them per
command. Observations are written by the workers straight into shared memory (one
buffer per observation key, shape ``[num_envs, ...]``, plus a second set for the
final observations of finished episodes); only actions, rewards, flags and episode
statistics travel over the pipes.

Episodes auto-reset inside the workers: when env ``i`` finishes an episode during
:meth:`VectorEnv.step`, ``obs[i]`` is already the first observation of its next
episode and ``info["final_obs"]`` holds the last observation of the finished one.

Robustness:

* a worker that dies (killed, ``os._exit``, segfault) or whose env raises is
  restarted: its envs are rebuilt and reset with fresh seeds, the episodes that
  were running on it are reported as truncated, a warning is logged on the
  ``omega.envs`` logger and ``info["worker_restarts"]`` counts it. After
  ``max_restarts`` restarts of the same worker :class:`EnvWorkerError` is raised.
* a worker that does not answer within ``step_timeout_s`` is treated as hung: all
  workers are killed and :class:`EnvWorkerError` is raised.
* errors raised by ``env_fn`` (e.g. an unknown env id) come back as
  :class:`EnvWorkerError` carrying the original message.
* workers exit when the parent goes away (pipe EOF, or a watchdog noticing that
  their parent process changed) and are daemon processes.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing import shared_memory
from typing import Any

import gymnasium
import numpy as np

from omega.errors import OmegaError

__all__ = ["EnvWorkerError", "EpisodeStats", "VectorEnv"]

logger = logging.getLogger("omega.envs")


class EnvWorkerError(OmegaError, RuntimeError):
    """A worker died too often, could not (re)start, or a step hung (the CLI prints one line)."""


@dataclasses.dataclass(frozen=True)
class EpisodeStats:
    env_index: int
    episode_return: float
    length: int
    success: bool  # from info["success"] if the env provides it, else False
    truncated: bool  # ended by time limit (or by a worker restart)


def _default_context() -> str:
    # "fork" is unsafe once JAX (multithreaded) is imported in the parent; forkserver
    # is safe and starts workers faster than spawn (the server process is reused).
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe_exception(exc: BaseException) -> str:
    msg = _one_line(str(exc))
    name = type(exc).__name__
    return f"{name}: {msg}" if msg else name


def _env_range(start: int, stop: int) -> str:
    return f"env {start}" if stop - start == 1 else f"envs {start}-{stop - 1}"


def _exit_cause(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering (pipe closed)"
    if exitcode < 0:
        try:
            return f"was killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


# --------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------


def _parent_watchdog(parent_pid: int) -> None:
    """Exit the worker when its parent goes away, even if the main thread is stuck.

    ``parent_process().sentinel`` becomes ready when the process that started this
    worker exits (for forkserver workers, ``getppid()`` is the fork server, which
    outlives the parent while workers exist, so the sentinel is what matters).
    """
    parent = mp.parent_process()
    sentinel = parent.sentinel if parent is not None else None
    while True:
        if sentinel is not None:
            if mp_connection.wait([sentinel], timeout=1.0):
                os._exit(1)
        else:
            time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(1)


_STEP = b"S"  # parent -> worker: step (actions are in shared memory)
_OK = b"K"  # worker -> parent: done, nothing else to report
# Every other message is a pickled (kind, payload) tuple (pickles never equal these).

_Spec = Sequence[tuple[str, str, tuple[int, ...], str]]  # (key, shm name, shape, dtype)


def _attach_arrays(shms: list, specs: _Spec) -> dict[str, np.ndarray]:
    by_name = {shm.name: shm for shm in shms}
    return {
        key: np.ndarray(shape, dtype=np.dtype(dtype), buffer=by_name[name].buf)
        for key, name, shape, dtype in specs
    }


def _write(bufs: dict[str, np.ndarray], row: int, obs: dict[str, Any]) -> None:
    for key, buf in bufs.items():
        buf[row] = obs[key]


def _build_envs(
    env_fn: Callable[[int], gymnasium.Env], start: int, stop: int,
    conn: mp_connection.Connection,
) -> list[gymnasium.Env] | None:
    """Builds envs ``start..stop-1`` and sends ``ready`` with their spaces; on an error
    sends ``init_error`` naming the env being built and returns None."""
    envs: list[gymnasium.Env] = []
    current = start
    try:
        for current in range(start, stop):
            envs.append(env_fn(current))
        obs_space, act_space = envs[0].observation_space, envs[0].action_space
        for j, env in enumerate(envs[1:], start=start + 1):
            if env.observation_space != obs_space or env.action_space != act_space:
                raise ValueError(
                    f"env {j} has different spaces than env {start}: "
                    f"{env.observation_space} / {env.action_space} vs {obs_space} / {act_space}"
                )
        conn.send(("ready", (obs_space, act_space)))
    except BaseException as exc:  # noqa: BLE001 - report everything to the parent
        try:
            conn.send(("init_error", (current, _describe_exception(exc), traceback.format_exc())))
        except Exception:
            pass
        return None
    return envs


class _WorkerEnvs:
    """A worker's envs ``start..stop-1``, its views of the shared buffers and the
    returns/lengths of their running episodes.

    ``current`` is the env being stepped, reset or written: an error names it.
    """

    def __init__(self, envs: list[gymnasium.Env], start: int, stop: int,
                 conn: mp_connection.Connection):
        self.envs = envs
        self.start = start
        self.stop = stop
        self.conn = conn
        self.shms: list = []
        self.obs_bufs: dict[str, np.ndarray] = {}
        self.final_bufs: dict[str, np.ndarray] = {}
        self.ctl: dict[str, np.ndarray] = {}
        n = stop - start
        self.ep_return = np.zeros(n, dtype=np.float64)
        self.ep_length = np.zeros(n, dtype=np.int64)
        self.current = start

    def attach(self, specs) -> None:
        for group in specs:
            self.shms.extend(shared_memory.SharedMemory(name=name) for _, name, _, _ in group)
        self.obs_bufs = _attach_arrays(self.shms, specs[0])
        self.final_bufs = _attach_arrays(self.shms, specs[1])
        self.ctl = {
            k: v[self.start:self.stop] for k, v in _attach_arrays(self.shms, specs[2]).items()
        }

    def step(self) -> None:
        """Hot path: actions in, rewards/flags out through shared memory; only finished
        episodes (rare) are pickled."""
        actions, rewards = self.ctl["actions"], self.ctl["rewards"]
        terminated, truncated = self.ctl["terminated"], self.ctl["truncated"]
        ep_return, ep_length = self.ep_return, self.ep_length
        episodes = []
        new_obs = []
        for j, env in enumerate(self.envs):
            self.current = self.start + j
            obs, reward, term, trunc, info = env.step(int(actions[j]))
            reward = float(reward)
            term, trunc = bool(term), bool(trunc)
            rewards[j], terminated[j], truncated[j] = reward, term, trunc
            ep_return[j] += reward
            ep_length[j] += 1
            if term or trunc:
                # Write now: the env may reuse its obs buffers on reset.
                _write(self.final_bufs, self.current, obs)
                success = bool(info.get("success", False)) if info else False
                episodes.append(
                    (
                        self.current,
                        float(ep_return[j]),
                        int(ep_length[j]),
                        success,
                        trunc and not term,
                    )
                )
                ep_return[j] = 0.0
                ep_length[j] = 0
                obs, _ = env.reset()
            new_obs.append(obs)
        self._publish(new_obs)
        if episodes:
            self.conn.send(("ok", episodes))
        else:
            self.conn.send_bytes(_OK)

    def _publish(self, new_obs: list) -> None:
        # Observations are published only once every env of this worker has stepped
        # (or reset), so a crash midway leaves the previous observations intact.
        for j, obs in enumerate(new_obs):
            self.current = self.start + j
            _write(self.obs_bufs, self.current, obs)

    def handle_reset(self, seeds) -> bool:
        new_obs = []
        for j, env in enumerate(self.envs):
            self.current = self.start + j
            obs, _ = env.reset(seed=seeds[j])
            new_obs.append(obs)
        self._publish(new_obs)
        self.ep_return[:] = 0.0
        self.ep_length[:] = 0
        self.conn.send_bytes(_OK)
        return True

    def handle_attach(self, specs) -> bool:
        self.attach(specs)
        self.conn.send_bytes(_OK)
        return True

    def handle_close(self, _payload) -> bool:
        return False

    def close(self) -> None:
        """Closes the shared memory views and the envs, ignoring errors."""
        self.obs_bufs = self.final_bufs = self.ctl = {}
        for shm in self.shms:
            try:
                shm.close()
            except Exception:
                pass
        for env in self.envs:
            try:
                env.close()
            except Exception:
                pass


# Pickled commands (parent -> worker) and their handlers; a handler answers the parent
# and returns whether the worker keeps serving.
_HANDLERS: dict[str, Callable[[_WorkerEnvs, Any], bool]] = {
    "reset": _WorkerEnvs.handle_reset,
    "attach": _WorkerEnvs.handle_attach,
    "close": _WorkerEnvs.handle_close,
}


def _serve(worker: _WorkerEnvs, conn: mp_connection.Connection) -> None:
    """Answers the parent's commands until it sends ``close`` or goes away."""
    while True:
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            return  # parent gone
        if msg == _STEP:
            worker.step()
            continue
        cmd, payload = pickle.loads(msg)
        handler = _HANDLERS.get(cmd)
        if handler is None:
            raise ValueError(f"unknown command {cmd!r}")
        if not handler(worker, payload):
            return


def _worker_main(
    worker_id: int,
    env_fn: Callable[[int], gymnasium.Env],
    start: int,
    stop: int,
    conn: mp_connection.Connection,
    shm_specs: tuple | None,
) -> None:
    # Ctrl-C goes to the whole process group; the parent decides what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_parent_watchdog, args=(os.getppid(),), daemon=True).start()

    envs = _build_envs(env_fn, start, stop, conn)
    if envs is None:
        return
    worker = _WorkerEnvs(envs, start, stop, conn)
    if shm_specs is not None:
        worker.attach(shm_specs)
    try:
        _serve(worker, conn)
    except BaseException as exc:  # noqa: BLE001 - report everything to the parent
        try:
            conn.send(("error", (worker.current, _describe_exception(exc),
                                 traceback.format_exc())))
        except Exception:
            pass
        # Do not try to close possibly broken envs; the parent restarts this worker.
        os._exit(1)
    worker.close()
    try:
        conn.close()
    except Exception:
        pass


# --------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------


class _Worker:
    def __init__(self, index: int, start: int, stop: int):
        self.index = index
        self.start = start
        self.stop = stop
        self.process: Any = None
        self.conn: mp_connection.Connection | None = None
        self.restarts = 0

    @property
    def label(self) -> str:
        return f"env worker {self.index} ({_env_range(self.start, self.stop)})"


class _Dead(Exception):
    """Internal: a worker died; ``cause`` says why."""

    def __init__(self, cause: str, fatal: bool = False, traceback_text: str = ""):
        super().__init__(cause)
        self.cause = cause
        self.fatal = fatal  # an env constructor error: restarting will not help
        self.traceback_text = traceback_text  # the worker's traceback, when it sent one


def _worker_error(message: str, dead: _Dead) -> EnvWorkerError:
    """One-line error; the worker's traceback (if any) is attached as a note."""
    err = EnvWorkerError(message)
    if dead.traceback_text and hasattr(err, "add_note"):
        err.add_note("worker traceback:\n" + dead.traceback_text.rstrip())
    return err


class VectorEnv:
    """``num_envs`` gymnasium envs stepped in ``num_workers`` processes.

    ``env_fn(env_index)`` builds env ``env_index`` inside a worker; it must be
    picklable (a module-level function or a :func:`functools.partial` of one).
    Observation spaces must be :class:`gymnasium.spaces.Dict` of ``Box`` spaces and
    the action space :class:`gymnasium.spaces.Discrete`.

    Returned observation arrays are copies (safe to keep); they are not overwritten
    by later calls.
    """

    def __init__(
        self,
        env_fn: Callable[[int], gymnasium.Env],
        num_envs: int,
        num_workers: int,
        seed: int = 0,
        step_timeout_s: float = 120.0,
        max_restarts: int = 3,
        context: str | None = None,
        start_timeout_s: float | None = None,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if step_timeout_s <= 0:
            raise ValueError(f"step_timeout_s must be > 0, got {step_timeout_s}")
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
        self._closed = True  # until fully started; makes close() safe from __del__
        self._workers: list[_Worker] = []
        self._shms: list[shared_memory.SharedMemory] = []
        self._obs_buf: dict[str, np.ndarray] = {}
        self._final_buf: dict[str, np.ndarray] = {}
        self._ctl_buf: dict[str, np.ndarray] = {}

        self.env_fn = env_fn
        self.num_envs = int(num_envs)
        self.num_workers = min(int(num_workers), self.num_envs)
        self.seed = int(seed)
        self.step_timeout_s = float(step_timeout_s)
        # Starting a process, importing the env's modules and building envs can take
        # much longer than one step, especially on a loaded machine.
        self.start_timeout_s = (
            float(start_timeout_s)
            if start_timeout_s is not None
            else max(self.step_timeout_s, 60.0)
        )
        self.max_restarts = int(max_restarts)
        self.context = context or _default_context()
        self._ctx = mp.get_context(self.context)
        self.total_restarts = 0
        self._needs_reset = True
        self._seeded = False
        # worker index -> None (step sent) or _Dead (the send failed), until step_wait
        self._pending: dict[int, _Dead | None] = {}

        bounds = np.linspace(0, self.num_envs, self.num_workers + 1).round().astype(int)
        self._workers = [
            _Worker(w, int(bounds[w]), int(bounds[w + 1])) for w in range(self.num_workers)
        ]

        self._ep_return = np.zeros(self.num_envs, dtype=np.float64)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self._shm_specs: tuple | None = None
        self._closed = False
        try:
            self._start_all()
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- startup

    def _spawn(self, w: _Worker) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(w.index, self.env_fn, w.start, w.stop, child_conn, self._shm_specs),
            name=f"omega-env-worker-{w.index}",
            daemon=True,
        )
        try:
            process.start()
        except Exception as exc:
            parent_conn.close()
            child_conn.close()
            hint = ""
            if "pickle" in str(exc).lower() or isinstance(exc, AttributeError):
                hint = " (env_fn must be picklable: a module-level function or functools.partial)"
            raise EnvWorkerError(
                f"{w.label} could not be started: {_describe_exception(exc)}{hint}"
            ) from exc
        child_conn.close()
        w.process, w.conn = process, parent_conn

    def _await_ready(self, w: _Worker, deadline: float) -> tuple[Any, Any]:
        kind, payload = self._recv(w, deadline, what="starting up")
        if kind == "ready":
            return payload
        raise AssertionError(f"unexpected message {kind!r} from {w.label}")

    def _start_all(self) -> None:
        for w in self._workers:
            self._spawn(w)
        deadline = time.monotonic() + self.start_timeout_s
        spaces = []
        for w in self._workers:
            try:
                spaces.append(self._await_ready(w, deadline))
            except _Dead as dead:
                raise _worker_error(self._startup_message(w, dead), dead) from None
        obs_space, act_space = spaces[0]
        for w, (o, a) in zip(self._workers[1:], spaces[1:], strict=True):
            if o != obs_space or a != act_space:
                raise ValueError(
                    f"{w.label} has different spaces than env 0: {o} / {a} vs {obs_space} / {act_space}"
                )
        if not isinstance(obs_space, gymnasium.spaces.Dict) or not all(
            isinstance(s, gymnasium.spaces.Box) for s in obs_space.spaces.values()
        ):
            raise TypeError(
                f"VectorEnv needs a Dict observation space of Box spaces, got {obs_space}"
            )
        if not isinstance(act_space, gymnasium.spaces.Discrete):
            raise TypeError(f"VectorEnv needs a Discrete action space, got {act_space}")
        self.single_observation_space: gymnasium.spaces.Dict = obs_space
        self.single_action_space: gymnasium.spaces.Discrete = act_space
        self._allocate(obs_space)
        for w in self._workers:
            self._send(w, ("attach", self._shm_specs))
        deadline = time.monotonic() + self.start_timeout_s
        for w in self._workers:
            try:
                self._recv(w, deadline, what="attaching shared memory")
            except _Dead as dead:
                raise _worker_error(self._startup_message(w, dead), dead) from None

    def _startup_message(self, w: _Worker, dead: _Dead) -> str:
        if dead.fatal:
            return f"{w.label} failed to build its envs: {dead.cause}"
        return f"{w.label} failed during startup: {dead.cause}"

    def _allocate(self, obs_space: gymnasium.spaces.Dict) -> None:
        """Shared buffers: observations, final observations, and actions/rewards/flags."""
        obs_layout = {
            k: (tuple(sp.shape), np.dtype(sp.dtype)) for k, sp in obs_space.spaces.items()
        }
        ctl_layout = {
            "actions": ((), np.dtype(np.int64)),
            "rewards": ((), np.dtype(np.float64)),
            "terminated": ((), np.dtype(bool)),
            "truncated": ((), np.dtype(bool)),
        }
        groups = []
        for layout, bufs in (
            (obs_layout, self._obs_buf),
            (obs_layout, self._final_buf),
            (ctl_layout, self._ctl_buf),
        ):
            specs = []
            for key, (space_shape, dtype) in layout.items():
                shape = (self.num_envs, *space_shape)
                nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
                shm = shared_memory.SharedMemory(create=True, size=nbytes)
                self._shms.append(shm)
                arr = np.ndarray(shape, dtype=dtype, buffer=shm.buf)
                arr.fill(0)
                bufs[key] = arr
                specs.append((key, shm.name, shape, dtype.str))
            groups.append(tuple(specs))
        self._shm_specs = tuple(groups)

    # ---------------------------------------------------------------- messaging

    def _send(self, w: _Worker, msg: tuple | bytes) -> None:
        try:
            assert w.conn is not None
            if isinstance(msg, bytes):
                w.conn.send_bytes(msg)
            else:
                w.conn.send(msg)
        except (OSError, ValueError, AssertionError) as exc:  # BrokenPipe, closed handle
            code = None
            if w.process is not None:
                # The pipe can break before the dead process is reaped: wait for its exit
                # status, so the report names the cause (e.g. SIGKILL).
                w.process.join(timeout=1.0)
                code = w.process.exitcode
            raise _Dead(f"{_exit_cause(code)} (send failed: {_describe_exception(exc)})") from None

    def _recv_now(self, w: _Worker) -> tuple[str, Any]:
        """Read one message that is known to be available (or EOF)."""
        try:
            data = w.conn.recv_bytes()
        except (EOFError, OSError):
            w.process.join(timeout=1.0)
            raise _Dead(_exit_cause(w.process.exitcode)) from None
        if data == _OK:
            return "ok", None
        kind, payload = pickle.loads(data)
        if kind == "error":
            env_index, desc, tb = payload
            raise _Dead(f"env {env_index} raised {desc}", traceback_text=tb)
        if kind == "init_error":
            env_index, desc, tb = payload
            raise _Dead(f"env_fn({env_index}) raised {desc}", fatal=True, traceback_text=tb)
        return kind, payload

    def _recv(self, w: _Worker, deadline: float, what: str) -> tuple[str, Any]:
        results = self._gather([w], deadline, what)
        result = results[w.index]
        if isinstance(result, _Dead):
            raise result
        return result

    def _gather(self, workers: Sequence[_Worker], deadline: float, what: str) -> dict:
        """Wait for one message from each worker; returns index -> message or _Dead."""
        results: dict[int, Any] = {}
        pending = {w.index: w for w in workers}
        while pending:
            remaining = deadline - time.monotonic()
            waitables: dict[Any, _Worker] = {}
            for w in pending.values():
                waitables[w.conn] = w
                waitables[w.process.sentinel] = w
            ready = mp_connection.wait(list(waitables), timeout=max(0.0, remaining))
            if not ready:
                if time.monotonic() < deadline:
                    continue
                hung = list(pending.values())
                self._kill_all()
                self.close()
                first = hung[0]
                starting = what in ("starting up", "attaching shared memory")
                timeout = self.start_timeout_s if starting else self.step_timeout_s
                others = (
                    f" (also workers {', '.join(str(h.index) for h in hung[1:])})"
                    if hung[1:]
                    else ""
                )
                # The start-up limit is max(step_timeout_s, 60 s) unless set apart.
                option = "env.step_timeout_s" if not starting or timeout == max(
                    self.step_timeout_s, 60.0) else "VectorEnv's start_timeout_s"
                raise EnvWorkerError(
                    f"{first.label}{others} did not answer within {timeout:g} s while {what}; "
                    f"raise {option} or check the env"
                )
            seen = set()
            for obj in ready:
                w = waitables[obj]
                if w.index in seen or w.index not in pending:
                    continue
                seen.add(w.index)
                # A dying worker may have sent a message (its error) before exiting.
                if obj is w.conn or w.conn.poll():
                    try:
                        results[w.index] = self._recv_now(w)
                    except _Dead as dead:
                        results[w.index] = dead
                else:
                    w.process.join(timeout=1.0)
                    results[w.index] = _Dead(_exit_cause(w.process.exitcode))
                del pending[w.index]
        return results

    # ---------------------------------------------------------------- restarts

    def _restart_seeds(self, w: _Worker) -> list[int]:
        return [
            int(np.random.SeedSequence([self.seed, i, w.restarts]).generate_state(1)[0])
            for i in range(w.start, w.stop)
        ]

    def _stop_worker(self, w: _Worker) -> None:
        if w.conn is not None:
            try:
                w.conn.close()
            except Exception:
                pass
        if w.process is not None:
            if w.process.is_alive():
                w.process.kill()
            w.process.join(timeout=5.0)
            try:
                w.process.close()
            except Exception:
                pass
        w.process, w.conn = None, None

    def _restart(self, w: _Worker, cause: _Dead) -> None:
        """Replace a dead worker with a fresh one whose envs are reset; raises when it can't."""
        while True:
            pid = w.process.pid if w.process is not None else None
            self._stop_worker(w)
            if cause.fatal:
                self.close()
                raise _worker_error(
                    f"{w.label} could not be restarted: {cause.cause}; fix env_fn / the env config",
                    cause,
                )
            if w.restarts >= self.max_restarts:
                self.close()
                raise _worker_error(
                    f"{w.label} failed {w.restarts + 1} times, last: {cause.cause}; it is "
                    f"restarted at most {self.max_restarts} times (VectorEnv's max_restarts, "
                    "not a config key) - fix the env (its error is in the log above)",
                    cause,
                )
            w.restarts += 1
            self.total_restarts += 1
            logger.warning(
                "%s (pid %s) %s; restarting it (restart %d of at most %d), its running "
                "episodes are reported as truncated%s",
                w.label,
                pid,
                cause.cause,
                w.restarts,
                self.max_restarts,
                f"\nworker traceback:\n{cause.traceback_text.rstrip()}"
                if cause.traceback_text
                else "",
            )
            try:
                self._spawn(w)
                self._await_ready(w, time.monotonic() + self.start_timeout_s)
                self._send(w, ("reset", self._restart_seeds(w)))
                self._recv(w, time.monotonic() + self.step_timeout_s, what="resetting")
                return
            except _Dead as again:
                cause = again

    # ---------------------------------------------------------------- API

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("VectorEnv is closed")

    def _copy_obs(self, bufs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in bufs.items()}

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Reset all envs; returns observations with leading dimension ``num_envs``.

        The first call resets env ``i`` with ``seed=self.seed + i`` (or ``seed + i``
        when ``seed`` is given); later calls without ``seed`` pass ``seed=None`` so each
        env continues its own RNG.
        """
        self._check_open()
        if self._pending:
            raise RuntimeError("call step_wait() for the pending step_async() before reset()")
        if seed is None and not self._seeded:
            seed = self.seed
        self._seeded = True
        dead: dict[int, _Dead] = {}
        for w in self._workers:
            seeds = [None if seed is None else int(seed) + i for i in range(w.start, w.stop)]
            try:
                self._send(w, ("reset", seeds))
            except _Dead as d:
                dead[w.index] = d
        live = [w for w in self._workers if w.index not in dead]
        deadline = time.monotonic() + self.step_timeout_s
        for idx, result in self._gather(live, deadline, "resetting").items():
            if isinstance(result, _Dead):
                dead[idx] = result
        for idx in sorted(dead):
            self._restart(self._workers[idx], dead[idx])
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._needs_reset = False
        return self._copy_obs(self._obs_buf)

    @property
    def groups(self) -> list[slice]:
        """The env slices of the workers: ``step_async(..., group=g)`` steps ``groups[g]``."""
        return [slice(w.start, w.stop) for w in self._workers]

    def step(self, actions: np.ndarray):
        """Step every env once; see the module docstring for auto-reset semantics."""
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray, group: int | None = None) -> None:
        """Start stepping the envs of ``group`` (one worker; all when ``None``).

        ``actions`` has one entry per env of the group. While the workers step, the caller is
        free to compute the next actions of another group; :meth:`step_wait` collects.
        """
        self._check_open()
        if self._needs_reset:
            raise RuntimeError("call VectorEnv.reset() before step()")
        workers = self._workers if group is None else [self._group_worker(group)]
        if any(w.index in self._pending for w in workers):
            raise RuntimeError("step_async called twice for the same envs without step_wait")
        sl = slice(workers[0].start, workers[-1].stop)
        n = sl.stop - sl.start
        actions = np.asarray(actions)
        if actions.shape != (n,):
            raise ValueError(f"actions must have shape ({n},), got {actions.shape}")
        n_actions = int(self.single_action_space.n)
        if actions.min() < 0 or actions.max() >= n_actions:
            raise ValueError(f"actions must be in [0, {n_actions}), got {actions}")
        self._ctl_buf["actions"][sl] = actions
        for w in workers:
            try:
                self._send(w, _STEP)
                self._pending[w.index] = None
            except _Dead as d:
                self._pending[w.index] = d

    def step_wait(self, group: int | None = None):
        """Finish the step started by :meth:`step_async` for the same ``group``.

        Returns ``(obs, rewards, terminated, truncated, info)`` for the envs of the group
        (``info["episodes"]`` carries global env indices).
        """
        self._check_open()
        workers = self._workers if group is None else [self._group_worker(group)]
        if any(w.index not in self._pending for w in workers):
            raise RuntimeError("step_wait called without a matching step_async")
        dead: dict[int, _Dead] = {}
        live = []
        for w in workers:
            sent = self._pending.pop(w.index)
            if sent is None:
                live.append(w)
            else:
                dead[w.index] = sent
        deadline = time.monotonic() + self.step_timeout_s
        results = self._gather(live, deadline, "stepping")
        sl = slice(workers[0].start, workers[-1].stop)

        rewards_f64 = self._ctl_buf["rewards"][sl].copy()
        rewards = rewards_f64.astype(np.float32)
        terminated = self._ctl_buf["terminated"][sl].copy()
        truncated = self._ctl_buf["truncated"][sl].copy()
        episodes: list[EpisodeStats] = []
        for w in live:
            result = results[w.index]
            if isinstance(result, _Dead):
                dead[w.index] = result
                continue
            eps = result[1] or ()
            ws = slice(w.start, w.stop)
            self._ep_return[ws] += self._ctl_buf["rewards"][ws]
            self._ep_length[ws] += 1
            for env_index, ret, length, success, trunc in eps:
                episodes.append(EpisodeStats(env_index, ret, length, success, trunc))
                self._ep_return[env_index] = 0.0
                self._ep_length[env_index] = 0

        restarts_before = self.total_restarts
        for idx in sorted(dead):
            w = self._workers[idx]
            ws = slice(w.start, w.stop)
            local = slice(w.start - sl.start, w.stop - sl.start)
            # Last observation that was fully delivered for the interrupted episodes.
            for key, buf in self._obs_buf.items():
                self._final_buf[key][ws] = buf[ws]
            self._restart(w, dead[idx])
            for i in range(w.start, w.stop):
                episodes.append(
                    EpisodeStats(i, float(self._ep_return[i]), int(self._ep_length[i]), False, True)
                )
            truncated[local] = True
            terminated[local] = False
            rewards[local] = 0.0
            self._ep_return[ws] = 0.0
            self._ep_length[ws] = 0

        episodes.sort(key=lambda e: e.env_index)
        info = {
            "final_obs": {k: v[sl].copy() for k, v in self._final_buf.items()},
            "episodes": episodes,
            "worker_restarts": self.total_restarts - restarts_before,
        }
        obs = {k: v[sl].copy() for k, v in self._obs_buf.items()}
        return obs, rewards, terminated, truncated, info

    def _group_worker(self, group: int) -> _Worker:
        if not 0 <= group < len(self._workers):
            raise ValueError(f"group must be in [0, {len(self._workers)}), got {group}")
        return self._workers[group]

    # ---------------------------------------------------------------- shutdown

    def _kill_all(self) -> None:
        for w in self._workers:
            if w.process is not None and w.process.is_alive():
                w.process.kill()

    def close(self) -> None:
        """Stop the workers (terminating those that do not exit) and free shared memory."""
        if getattr(self, "_closed", True) and not getattr(self, "_workers", None):
            return
        self._closed = True
        workers, self._workers = list(getattr(self, "_workers", [])), []
        for w in workers:
            if w.conn is not None and w.process is not None and w.process.is_alive():
                try:
                    w.conn.send(("close", None))
                except Exception:
                    pass
        deadline = time.monotonic() + 2.0
        for w in workers:
            if w.process is not None:
                w.process.join(timeout=max(0.0, deadline - time.monotonic()))
        for w in workers:
            if w.process is not None and w.process.is_alive():
                w.process.terminate()
                w.process.join(timeout=1.0)
            self._stop_worker(w)
        self._obs_buf, self._final_buf, self._ctl_buf = {}, {}, {}
        for shm in getattr(self, "_shms", []):
            try:
                shm.close()
            except Exception:
                pass
            try:
                shm.unlink()
            except Exception:
                pass
        self._shms = []

    def __enter__(self) -> VectorEnv:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (
            f"VectorEnv(num_envs={self.num_envs}, num_workers={self.num_workers}, "
            f"context={self.context!r})"
        )

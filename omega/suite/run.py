"""Running a suite: every (config, seed) run trained, its checkpoints evaluated, a results file.

Output layout (``suite.output_dir``)::

    configs/<name>/seed<k>.yaml    the run's resolved config, as 'omega make' was given it
    runs/<name>/seed<k>/           the run's experiment dir (omega make / run)
      suite_evals/ckpt_*.json      one evaluation per kept checkpoint (the eval cache)
      suite_timing.json            wall time of its training and evaluation segments
    results/<name>/seed<k>.json    written last: the run is finished (status, curve, times)
    baselines/<env id>.json        a uniformly random policy on the task's eval episodes
    logs/<name>__seed<k>.log       everything the run printed, across resumes
    gifs/<name>/seed<k>.gif        one eval episode of a solved run's last checkpoint
                                   ('omega eval --record', then 'omega play --gif'; the
                                   recordings stay in the run dir, suite_gif_episodes/)
    summary.json, summary.md       one row per entry, and plots/<env id>.png

A run is finished when its results file exists with its config's hash: a rerun skips it. A
run that was killed resumes from its newest checkpoint ('omega run' machinery), and
evaluations already cached are not redone. Each run is a process of its own (spawned, so no
JAX state is shared); with the Ray backend each is a Ray task that starts that process.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import fnmatch
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omega.errors import ConfigError, OmegaError
from omega.suite.spec import BaselineSpec, RunSpec, Suite

SOLVED = 0.9  # eval success that counts a run as solved (a GIF is made; steps-to-0.9)
EVAL_DIR = "suite_evals"
TIMING_FILE = "suite_timing.json"
GIF_RECORDINGS = "suite_gif_episodes"  # in the run dir: the recorded episodes of its GIF
GIF_EPISODES = 10
_POLL_S = 2.0


# ---------------------------------------------------------------------------------------------
# Paths


def run_dir(out: Path, run: RunSpec) -> Path:
    return out / "runs" / run.name / f"seed{run.seed}"


def result_path(out: Path, run: RunSpec) -> Path:
    return out / "results" / run.name / f"seed{run.seed}.json"


def config_path(out: Path, run: RunSpec) -> Path:
    return out / "configs" / run.name / f"seed{run.seed}.yaml"


def gif_path(out: Path, run: RunSpec) -> Path:
    return out / "gifs" / run.name / f"seed{run.seed}.gif"


def baseline_path(out: Path, base: BaselineSpec) -> Path:
    return out / "baselines" / f"{base.env_id}.json"


def log_path(out: Path, job: RunSpec | BaselineSpec) -> Path:
    return out / "logs" / (job.run_id.replace("/", "__") + ".log")


def _done_path(out: Path, job: RunSpec | BaselineSpec) -> Path:
    return result_path(out, job) if isinstance(job, RunSpec) else baseline_path(out, job)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise OmegaError(f"cannot read '{path}' ({e}); delete it and run the suite again "
                         "(that run is then redone)") from None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from omega.training.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def is_done(out: Path, job: RunSpec | BaselineSpec) -> bool:
    data = _read_json(_done_path(out, job))
    return data is not None and data.get("spec_hash") == job.spec_hash


def check_outputs(suite: Suite) -> None:
    """Refuses a suite whose output dir holds results or run dirs of other configs (the
    suite file or a config changed since): training on would mix two experiments."""
    from omega.config import config_to_dict, load_config
    from omega.suite.spec import spec_hash

    out = suite.output_dir
    for job in (*suite.runs, *suite.baselines):
        done = _done_path(out, job)
        data = _read_json(done)
        if data is not None and data.get("spec_hash") != job.spec_hash:
            raise ConfigError(
                f"'{done}' holds the result of {job.run_id} with another config (the suite "
                "or a config file changed since it ran); move it (or the whole "
                f"'{out}') away to run it again, or give the suite another output_dir")
        if isinstance(job, RunSpec):
            exp = run_dir(out, job)
            if (exp / "config.yaml").is_file():
                try:
                    old = spec_hash(config_to_dict(load_config(exp / "config.yaml")))
                except OmegaError:
                    old = None
                if old != job.spec_hash:
                    raise ConfigError(
                        f"run dir '{exp}' was made from another config than {job.run_id} has "
                        "now (the suite or a config file changed since); move it away to "
                        "start that run afresh, or give the suite another output_dir")
            elif exp.exists():
                raise ConfigError(f"'{exp}' exists but is no experiment dir (no config.yaml); "
                                  "move it away")


def job_state(out: Path, job: RunSpec | BaselineSpec) -> str:
    """'done', 'partial' (a run dir with checkpoints) or 'new'."""
    if is_done(out, job):
        return "done"
    if isinstance(job, RunSpec) and any((run_dir(out, job) / "checkpoints").glob("ckpt_*")):
        return "partial"
    return "new"


# ---------------------------------------------------------------------------------------------
# One job, in its own process


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGTERM this process when its parent dies (a SIGKILLed suite must not leave
    its runs training on, holding their experiment locks). The run then saves a checkpoint
    and exits like 'omega run' does on SIGTERM."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _redirect_output(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def job_main(job: RunSpec | BaselineSpec, out: str, device: str, parent_pid: int,
             context: dict[str, Any]) -> None:
    """Entry point of a job's process: output goes to its log; exits with omega's codes."""
    out_dir = Path(out)
    _die_with_parent(parent_pid)
    _redirect_output(log_path(out_dir, job))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(f"=== omega suite: {job.run_id}, pid {os.getpid()} on {socket.gethostname()}, "
          f"{_now()}", flush=True)
    from omega.errors import EXIT_IO, describe_os_error

    try:
        if isinstance(job, RunSpec):
            run_one(job, out_dir, device, context)
        else:
            run_baseline(job, out_dir, context)
    except KeyboardInterrupt as e:
        code = 128 + getattr(e, "signum", signal.SIGINT)
        print(f"omega: suite: {job.run_id} stopped by a signal; a rerun resumes it", flush=True)
        sys.exit(code)
    except OmegaError as e:
        print(f"omega: error: {e}", flush=True)
        sys.exit(e.exit_code)
    except OSError as e:
        print(f"omega: error: {describe_os_error(e)}", flush=True)
        sys.exit(EXIT_IO)
    sys.exit(0)


def _host(context: dict[str, Any]) -> dict[str, Any]:
    return {"host": socket.gethostname(), "cpus": os.cpu_count(),
            "load_avg": [round(x, 2) for x in os.getloadavg()], **context}


class _Timing:
    """Wall seconds of a run's training and evaluation, summed over the segments it took
    (a killed suite and its rerun). A segment killed without a chance to write its end
    (SIGKILL) is counted up to its newest checkpoint: the work after it is redone."""

    def __init__(self, exp: Path):
        self.path = exp / TIMING_FILE
        self.data = _read_json(self.path) or {"train_s": 0.0, "eval_s": 0.0, "segments": [],
                                              "killed_segments": 0, "open": None}

    def settle(self, newest_ckpt: Path | None) -> None:
        """Counts a segment that never wrote its end (its process was killed)."""
        stale = self.data.get("open")
        if not stale:
            return
        credit = 0.0
        if stale["kind"] == "train" and newest_ckpt is not None:
            credit = max(0.0, newest_ckpt.stat().st_mtime - stale["start"])
        self.data[f"{stale['kind']}_s"] += credit
        self.data["killed_segments"] += 1
        self.data["segments"].append({**stale, "seconds": round(credit, 1), "killed": True})
        self.data["open"] = None
        _write_json(self.path, self.data)

    def open(self, kind: str, context: dict[str, Any], newest_ckpt: Path | None) -> None:
        self.settle(newest_ckpt)
        self.data["open"] = {"kind": kind, "start": time.time(), "started": _now(),
                             **_host(context)}
        _write_json(self.path, self.data)

    def close(self, stopped: bool = False) -> None:
        seg = self.data.pop("open")
        self.data["open"] = None
        seconds = time.time() - seg["start"]
        self.data[f"{seg['kind']}_s"] += seconds
        seg.update(seconds=round(seconds, 1), end_load_avg=[round(x, 2) for x in
                                                           os.getloadavg()])
        if stopped:
            seg["stopped"] = True
        self.data["segments"].append(seg)
        _write_json(self.path, self.data)


def run_one(run: RunSpec, out: Path, device: str, context: dict[str, Any]) -> dict[str, Any]:
    """Trains the run to its budget (resuming), evaluates every kept checkpoint and writes
    its results file."""
    from omega.config import config_to_yaml
    from omega.errors import DivergedError
    from omega.training.checkpoint import checkpoint_steps, latest_checkpoint
    from omega.training.experiment import CHECKPOINT_DIR, load_experiment, make_experiment
    from omega.training.loop import train

    exp = run_dir(out, run)
    if not exp.exists():
        cfg_file = config_path(out, run)
        from omega.config import config_from_dict
        from omega.training.checkpoint import atomic_write_bytes

        atomic_write_bytes(cfg_file, config_to_yaml(config_from_dict(run.config)).encode())
        make_experiment(cfg_file, exp)
    cfg = load_experiment(exp)
    timing = _Timing(exp)
    status, error = "done", None
    newest = latest_checkpoint(exp / CHECKPOINT_DIR)
    timing.settle(newest)
    if newest is None or checkpoint_steps(newest) < cfg.train.total_env_steps:
        timing.open("train", context, newest)
        stopped = True
        try:
            train(exp, device=device, out=sys.stdout)
            stopped = False
        except DivergedError as e:
            status, error, stopped = "diverged", str(e), False
            print(f"omega: error: {e}", flush=True)
        finally:
            timing.close(stopped=stopped)

    timing.open("eval", context, None)
    stopped = True
    try:
        curve = evaluate_checkpoints(exp, cfg, device)
        stopped = False
    finally:
        timing.close(stopped=stopped)
    curve = [c for c in curve if c is not None]
    final = curve[-1] if curve else None
    reached = next((c["env_steps"] for c in curve if c["success_rate"] >= SOLVED), None)
    gif = None
    if final is not None and final["success_rate"] >= SOLVED and status == "done":
        gif = make_gif(exp, gif_path(out, run))
    result = {
        "suite_run": run.run_id, "name": run.name, "seed": run.seed,
        "config": run.config_file, "agent_type": run.agent_type, "env_id": run.env_id,
        "budget": run.budget, "spec_hash": run.spec_hash, "status": status, "error": error,
        "env_steps": final["env_steps"] if final else 0,
        "eval": {"episodes": cfg.eval.episodes, "seed": cfg.eval.seed,
                 "greedy": cfg.eval.greedy},
        "curve": [{k: c[k] for k in ("env_steps", "success_rate", "success_rate_ci95",
                                     "mean_return", "mean_length")} for c in curve],
        "final": final,
        "steps_to_success_0.9": reached,
        "train_wall_s": round(timing.data["train_s"], 1),
        "eval_wall_s": round(timing.data["eval_s"], 1),
        "segments": len(timing.data["segments"]),
        "killed_segments": timing.data["killed_segments"],
        "host": _host(context),
        "gif": str(gif.relative_to(out)) if gif else None,
        "finished": _now(),
    }
    _write_json(result_path(out, run), result)
    print(f"omega: suite: {run.run_id} finished: eval success "
          f"{final['success_rate'] if final else float('nan'):.2f} at "
          f"{result['env_steps']:,} env steps", flush=True)
    return result


def evaluate_checkpoints(exp: Path, cfg: Any, device: str) -> list[dict[str, Any] | None]:
    """Evaluates the kept checkpoints on the config's eval episodes (cached per checkpoint
    in ``suite_evals/``); a checkpoint with NaN parameters gives None. Checkpoints written
    off the run's cadence (a run stopped by a signal and resumed) are left out, the newest
    excepted: every run's curve has the same grid, so the env steps at which it first
    reaches a success rate compare across runs."""
    import jax

    from omega.errors import DivergedError
    from omega.training.checkpoint import checkpoint_steps, list_checkpoints, off_cadence
    from omega.training.device import resolve_device
    from omega.training.evaluate import evaluate
    from omega.training.experiment import CHECKPOINT_DIR, agent_template, load_trained_agent

    ckpts = list_checkpoints(exp / CHECKPOINT_DIR)
    off = off_cadence([checkpoint_steps(c) for c in ckpts[:-1]],
                      cfg.train.checkpoint_every_steps)
    ckpts = [c for c in ckpts if checkpoint_steps(c) not in off]
    cache = exp / EVAL_DIR
    out: list[dict[str, Any] | None] = []
    todo = [c for c in ckpts if not (cache / (c.stem + ".json")).is_file()]
    built = None
    done = 0
    with jax.default_device(resolve_device(device)):
        for ckpt in ckpts:
            cached = cache / (ckpt.stem + ".json")
            if cached.is_file():
                out.append(_read_json(cached) or None)
                continue
            if built is None:
                built = agent_template(cfg)
            trained = load_trained_agent(exp, ckpt, cfg=cfg, built=built)
            agent, loop = trained.agent, trained.loop
            try:
                params = trained.eval_params()
            except DivergedError:
                out.append(None)
                continue
            t0 = time.perf_counter()
            result = evaluate(agent, params, cfg, cfg.eval.episodes, cfg.eval.seed,
                              greedy=cfg.eval.greedy)
            data = {**result.to_json(), "env_steps": loop.env_steps,
                    "eval_wall_s": round(time.perf_counter() - t0, 1)}
            _write_json(cached, data)
            done += 1
            print(f"omega: suite: evaluated {ckpt.name} ({done} of {len(todo)}): success "
                  f"{data['success_rate']:.2f}, return {data['mean_return']:.3f}", flush=True)
            out.append(data)
    return out


def make_gif(exp: Path, path: Path) -> Path | None:
    """One episode of the trained agent: its last checkpoint plays the first
    ``GIF_EPISODES`` eval seeds, recorded ('omega eval --record'), and the first one it
    solves (else the first) is drawn by 'omega play --gif'."""
    from omega.cli.main import main as omega
    from omega.training.evaluate import recording_path

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp.gif")
    rec = exp / GIF_RECORDINGS
    shutil.rmtree(rec, ignore_errors=True)
    code = omega(["eval", "--dir", str(exp), "--episodes", str(GIF_EPISODES), "--record",
                  str(rec), "--json", str(rec / "eval.json")])
    data = _read_json(rec / "eval.json") if code == 0 else None
    if data is not None:
        solved = [s for s, ok in zip(data["seeds"], data["successes"], strict=True) if ok]
        seed = (solved or data["seeds"])[0]
        code = omega(["play", "--file", str(recording_path(rec, seed)), "--gif", str(tmp)])
    if data is None or code != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        print(f"omega: suite: no GIF for {exp} ('omega eval --record' / 'omega play' exit "
              f"{code})", flush=True)
        return None
    os.replace(tmp, path)
    print(f"omega: suite: GIF of eval seed {seed} ({'solved' if solved else 'not solved'}) "
          f"in {path}", flush=True)
    return path


def run_baseline(base: BaselineSpec, out: Path, context: dict[str, Any]) -> dict[str, Any]:
    """A uniformly random policy on the task's eval episodes."""
    import jax

    from omega.agents import build_agent
    from omega.config import config_from_dict
    from omega.training.evaluate import evaluate
    from omega.training.loop import probe_env

    cfg = config_from_dict(base.config)
    t0 = time.perf_counter()
    with jax.default_device(jax.devices("cpu")[0]):
        _, num_actions = probe_env(cfg)
        agent, _ = build_agent(cfg, num_actions)
        result = evaluate(agent, {}, cfg, cfg.eval.episodes, cfg.eval.seed, greedy=False)
    data = {"suite_run": base.run_id, "agent_type": "random", "env_id": base.env_id,
            "spec_hash": base.spec_hash, "eval_wall_s": round(time.perf_counter() - t0, 1),
            "host": _host(context), "finished": _now(), "eval": result.to_json()}
    _write_json(baseline_path(out, base), data)
    print(f"omega: suite: random policy on {base.env_id}: success "
          f"{result.success_rate:.2f}, return {result.mean_return:.3f}", flush=True)
    return data


# ---------------------------------------------------------------------------------------------
# Scheduling


def _pace_keys(run: RunSpec) -> tuple[tuple, ...]:
    """The groups whose finished runs' pace estimates ``run``'s, closest first."""
    recurrent = bool((run.config.get("model") or {}).get("recurrent"))
    return (("entry", run.name), ("memory", run.agent_type, recurrent),
            ("agent", run.agent_type))


class Tracker:
    """Which jobs are done, running and left; prints the progress line when it changes."""

    def __init__(self, suite: Suite, jobs: list[RunSpec | BaselineSpec], out_stream,
                 parallel: int | None = 1):
        self.suite, self.out = suite, out_stream
        self.total = len(jobs)
        self.runs = [j for j in jobs if isinstance(j, RunSpec)]
        self.parallel = parallel  # runs at a time; None: unknown, no estimate
        self.done = sum(is_done(suite.output_dir, j) for j in jobs)
        self.running: set[str] = set()
        self.failed: list[str] = []
        self.codes: list[int | None] = []  # exit codes of the failed jobs
        # Runs stopped by a signal sent to them alone (not to the suite): they saved a
        # checkpoint, so a rerun resumes them; neither finished nor failed.
        self.stopped: list[str] = []
        self.stop_codes: list[int] = []
        self.elsewhere: list[str] = []  # runs another process was training: left to it
        self._last = ""
        self._estimate: tuple[tuple[int, ...], float | None] | None = None  # (counts, s)

    def line(self) -> str:
        left = (self.total - self.done - len(self.running) - len(self.failed)
                - len(self.stopped) - len(self.elsewhere))
        text = (f"omega: suite {self.suite.name}: {self.done}/{self.total} done, "
                f"{len(self.running)} running, {left} left")
        text += f", {len(self.elsewhere)} in another process" if self.elsewhere else ""
        text += f", {len(self.stopped)} stopped" if self.stopped else ""
        text += f", {len(self.failed)} failed" if self.failed else ""
        seconds = self.seconds_left() if (left or self.running) and self.parallel else None
        if seconds is not None:
            text += (f"; about {fmt_duration(seconds)} to go at the finished runs' pace, "
                     f"{self.parallel} at a time")
        return text

    def seconds_left(self) -> float | None:
        """Wall seconds until the unfinished runs are done: each one's budget at the wall
        seconds per env step (training and eval, as they ran, beside whatever else did) of
        the closest finished runs: its own entry's other seeds, else runs of its agent type
        with the same memory (``model.recurrent``: recurrent runs are several times slower
        per env step), else runs of its agent type; ``parallel`` at a time. Running runs
        count in full. None until every agent type left has a finished run."""
        counts = (self.done, len(self.failed), len(self.stopped))  # what it depends on
        if self._estimate is not None and self._estimate[0] == counts:
            return self._estimate[1]
        out = self.suite.output_dir
        wall: dict[tuple, float] = {}
        steps: dict[tuple, int] = {}
        left: list[RunSpec] = []
        for run in self.runs:
            data = _read_json(result_path(out, run))
            if data is None or data.get("spec_hash") != run.spec_hash:
                # A failed or stopped run waits for the next command, another process's
                # for that one.
                if run.run_id not in (*self.failed, *self.stopped, *self.elsewhere):
                    left.append(run)
            elif data.get("env_steps"):
                for key in _pace_keys(run):
                    wall[key] = wall.get(key, 0.0) + float(
                        data.get("train_wall_s") or 0) + float(data.get("eval_wall_s") or 0)
                    steps[key] = steps.get(key, 0) + int(data["env_steps"])
        seconds: float | None = None
        paces = [next((wall[k] / steps[k] for k in _pace_keys(r) if k in steps), None)
                 for r in left]
        if left and None not in paces:
            seconds = sum(r.budget * pace for r, pace in zip(left, paces, strict=True)
                          ) / self.parallel
        self._estimate = (counts, seconds)
        return seconds

    def record(self, job: RunSpec | BaselineSpec, code: int | None) -> str:
        """Counts a job that ended with exit ``code`` as done, stopped or failed; returns
        the line that says which."""
        ok, note = _finished_note(self.suite.output_dir, job, code)
        if ok:
            self.done += 1
        elif code in STOPPED_CODES:
            self.stopped.append(job.run_id)
            self.stop_codes.append(code)
            note = (f"{job.run_id} stopped by a signal (exit {code}) after saving a "
                    "checkpoint; the same command resumes it")
        else:
            self.failed.append(job.run_id)
            self.codes.append(code)
        return note

    def show(self, note: str | None = None) -> None:
        if note:
            print(f"omega: suite: {note}", file=self.out, flush=True)
        text = self.line()
        if text != self._last:
            print(text, file=self.out, flush=True)
            self._last = text


def fmt_duration(seconds: float) -> str:
    """``42 min``, ``5.3 h``, ``under a minute``."""
    if seconds < 60:
        return "under a minute"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _last_line(path: Path) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    errors = [x for x in lines if x.startswith("omega: error:")]
    return (errors or lines or [""])[-1][:300]


# 'omega run' and a job's process exit with 128 + the signal after saving a checkpoint.
STOPPED_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)


def _finished_note(out: Path, job: RunSpec | BaselineSpec, code: int | None) -> tuple[bool, str]:
    if code == 0 and is_done(out, job):
        data = _read_json(_done_path(out, job)) or {}
        if isinstance(job, RunSpec):
            final = data.get("final") or {}
            return True, (f"{job.run_id} done: eval success {final.get('success_rate', 0):.2f} "
                          f"at {data.get('env_steps', 0):,} env steps, training "
                          f"{data.get('train_wall_s', 0) / 60:.1f} min"
                          + (" (diverged)" if data.get("status") == "diverged" else ""))
        return True, (f"{job.run_id} done: success "
                      f"{data.get('eval', {}).get('success_rate', 0):.2f}")
    why = _last_line(log_path(out, job))
    return False, (f"{job.run_id} failed (exit {code}): {why}; log: {log_path(out, job)}")


class _Stop:
    """SIGINT / SIGTERM to the suite: start nothing more, pass SIGTERM on to the runs (they
    save a checkpoint and exit) and wait for them."""

    def __init__(self):
        self.signum: int | None = None
        self.forwarded = False
        self._old = {s: signal.signal(s, self._on) for s in (signal.SIGINT, signal.SIGTERM)}

    def _on(self, signum, _frame) -> None:
        self.signum = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def run_local(suite: Suite, jobs: list[RunSpec | BaselineSpec], parallel: int, device: str,
              tracker: Tracker, context: dict[str, Any]) -> int | None:
    """Runs ``jobs`` in spawned processes, ``parallel`` at a time. Returns the signal that
    stopped the suite, if any."""
    ctx = mp.get_context("spawn")
    queue = deque(jobs)
    running: dict[int, tuple[Any, RunSpec | BaselineSpec]] = {}
    stop = _Stop()
    out = suite.output_dir
    try:
        while queue or running:
            while queue and len(running) < parallel and stop.signum is None:
                job = queue.popleft()
                holder = _held_elsewhere(out, job)
                if holder is not None:
                    tracker.elsewhere.append(job.run_id)
                    tracker.show(f"{job.run_id} is training in another process, {holder}; "
                                 "left to it")
                    continue
                proc = ctx.Process(target=job_main, name=f"omega-suite-{job.run_id}",
                                   args=(job, str(out.resolve()), device, os.getpid(), context))
                proc.start()
                running[proc.sentinel] = (proc, job)
                tracker.running.add(job.run_id)
                tracker.show(f"started {job.run_id} (log: {log_path(out, job)})")
            if stop.signum is not None and not stop.forwarded:
                for proc, _ in running.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGTERM)
                stop.forwarded = True
                if not running:
                    break
            ready = mp.connection.wait(list(running), timeout=_POLL_S)
            for sentinel in ready:
                proc, job = running.pop(sentinel)
                proc.join()
                tracker.running.discard(job.run_id)
                if stop.signum is None:
                    note = tracker.record(job, proc.exitcode)
                else:  # the suite was stopped, and the runs with it
                    ok, note = _finished_note(out, job, proc.exitcode)
                    tracker.done += ok
                    note = note if ok else f"{job.run_id} stopped; a rerun resumes it"
                tracker.show(note)
            if stop.signum is not None and not running:
                break
    finally:
        stop.restore()
    return stop.signum


def _held_elsewhere(out: Path, job: RunSpec | BaselineSpec) -> str | None:
    """Who trains the run now if another process does (another suite on the same output
    dir, or an 'omega run' on its run dir), else None."""
    from omega.training.experiment import lock_holder

    return lock_holder(run_dir(out, job)) if isinstance(job, RunSpec) else None


def _ray_job(job: RunSpec | BaselineSpec, out: str, device: str,
             context: dict[str, Any]) -> int:
    """A Ray task: runs the job in a spawned process of the worker (its own JAX, its output
    in the job's log) and returns the exit code."""
    proc = mp.get_context("spawn").Process(target=job_main,
                                           args=(job, out, device, os.getpid(), context))
    proc.start()
    try:
        proc.join()
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(60)
    return int(proc.exitcode if proc.exitcode is not None else 1)


def run_ray(suite: Suite, jobs: list[RunSpec | BaselineSpec], parallel: int | None,
            device: str, tracker: Tracker, context: dict[str, Any], address: str | None,
            cpus_per_run: float) -> int | None:
    """Each job is a Ray task (``num_cpus=cpus_per_run``); Ray places them on the cluster.
    The output dir must be on a file system every node shares. ``parallel`` caps the tasks
    in flight (None: all at once, Ray queues them)."""
    from omega.training.distributed import _init_ray, import_ray

    ray = import_ray()
    started = _init_ray(ray, address, 1)
    remote = ray.remote(num_cpus=cpus_per_run, max_retries=2)(_ray_job)
    out = suite.output_dir.resolve()
    queue = deque(jobs)
    refs: dict[Any, RunSpec | BaselineSpec] = {}
    t0 = time.time()
    stop = _Stop()
    try:
        while queue or refs:
            while queue and (parallel is None or len(refs) < parallel) and stop.signum is None:
                job = queue.popleft()
                refs[remote.remote(job, str(out), device, context)] = job
            if stop.signum is not None:
                for ref in refs:
                    ray.cancel(ref)
                break
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=_POLL_S)
            for ref in ready:
                job = refs.pop(ref)
                tracker.running.discard(job.run_id)
                try:
                    code = ray.get(ref)
                except Exception as e:  # the task's worker died or the task was lost
                    code = None
                    print(f"omega: suite: Ray lost {job.run_id}: {str(e).splitlines()[0]}",
                          file=tracker.out, flush=True)
                tracker.show(tracker.record(job, code))
            # A task is running once its log was opened by this invocation.
            for job in refs.values():
                log = log_path(out, job)
                if job.run_id not in tracker.running and log.is_file() \
                        and log.stat().st_mtime >= t0:
                    tracker.running.add(job.run_id)
            tracker.show()
    finally:
        stop.restore()
        if started:
            ray.shutdown()
    return stop.signum


def select_runs(suite: Suite, only: tuple[str, ...] = ()) -> list[RunSpec]:
    """The runs whose name or run id matches one of the glob patterns (all without any),
    e.g. 'ppo/*' or '*/corridor_battle/seed0', seed by seed: every entry's first seed
    before any entry's second, so a suite stopped early has measured every task once. A
    pattern that matches no run is an error."""
    def matches(run: RunSpec, pattern: str) -> bool:
        return fnmatch.fnmatchcase(run.name, pattern) or fnmatch.fnmatchcase(run.run_id, pattern)

    for pattern in only:
        if not any(matches(r, pattern) for r in suite.runs):
            names = ", ".join(suite.entries())
            raise ConfigError(f"--only '{pattern}' matches no run of suite {suite.name} "
                              f"(its entries: {names}; a run id is ENTRY/seedK)")
    runs = [r for r in suite.runs if not only or any(matches(r, p) for p in only)]
    seeds = {name: sorted({r.seed for r in runs if r.name == name}) for name in suite.entries()}
    return sorted(runs, key=lambda r: seeds[r.name].index(r.seed))  # stable: suite order


def run_suite(suite: Suite, parallel: int | None = 1, device: str = "cpu",
              backend: str = "local", address: str | None = None,
              baselines_only: bool = False, cpus_per_run: float = 1.0,
              out_stream=None, on_start: Callable[[], None] | None = None,
              only: tuple[str, ...] = ()) -> int:
    """Runs what is not finished, then writes the summary (of every entry). Returns the exit
    code: 0 when every job is finished or left to another process that trains it (the
    local backend does not start a run whose dir another process has locked), 1 when some
    failed, 130 / 143 when the suite, or one of its runs alone, was stopped by a signal
    (a run stopped alone does not stop the others). ``only``: glob patterns (see
    :func:`select_runs`); the baselines always run."""
    from omega.suite.report import write_summary

    stream = out_stream if out_stream is not None else sys.stdout
    out = suite.output_dir
    jobs: list[RunSpec | BaselineSpec] = list(suite.baselines)
    if not baselines_only:
        jobs += select_runs(suite, only)
    todo = [j for j in jobs if not is_done(out, j)]
    partial = sum(job_state(out, j) == "partial" for j in todo)
    # Ray without --jobs runs as many at once as its CPUs allow: no estimate then.
    tracker = Tracker(suite, jobs, stream, parallel or (1 if backend == "local" else None))
    n_runs = len(jobs) - len(suite.baselines)
    print(f"omega: suite {suite.name}: {n_runs} runs ({len(suite.entries())} entries) and "
          f"{len(suite.baselines)} random-policy baselines in {out}; {len(jobs) - len(todo)} "
          f"finished before, {partial} to resume, {len(todo) - partial} to start"
          + (f", {parallel} at a time" if parallel else ""), file=stream, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    context = {"backend": backend, "jobs": parallel}
    tracker.show()
    if on_start is not None:
        on_start()
    signum = None
    if todo:
        if backend == "ray":
            signum = run_ray(suite, todo, parallel, device, tracker, context, address,
                             cpus_per_run)
        else:
            signum = run_local(suite, todo, parallel or 1, device, tracker, context)
    paths = write_summary(suite)
    print(f"omega: suite {suite.name}: wrote {paths['markdown']}, {paths['json']} and "
          f"{paths['plots']} plot(s) in {paths['plot_dir']}", file=stream, flush=True)
    if signum is not None:
        print(f"omega: suite {suite.name}: stopped by signal {signum}; runs saved their "
              "checkpoints, and the same command resumes them", file=stream, flush=True)
        return 128 + signum
    if tracker.elsewhere:
        print(f"omega: suite {suite.name}: {len(tracker.elsewhere)} run(s) were training in "
              f"another process and were left to it ({', '.join(tracker.elsewhere)}); the "
              "summary lists them once they finish (the same command writes it again)",
              file=stream, flush=True)
    if tracker.stopped and not tracker.failed:
        print(f"omega: suite {suite.name}: {len(tracker.stopped)} run(s) were stopped by a "
              f"signal sent to them ({', '.join(tracker.stopped)}); they saved their "
              "checkpoints, and the same command resumes them", file=stream, flush=True)
        return tracker.stop_codes[0]
    if tracker.failed:
        raise SuiteFailed(f"suite {suite.name}: {len(tracker.failed)} job(s) failed ("
                          + ", ".join(tracker.failed) + "); the lines above and their logs "
                          "say why, and the same command retries them",
                          next((c for c in tracker.codes if c in (2, 3, 4)), 1))
    return 0


class SuiteFailed(OmegaError):
    """Some jobs of a suite failed; the exit code is the first failed job's (2, 3 or 4),
    or 1 when one crashed."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

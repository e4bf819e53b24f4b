"""The Ray backend against the local loop, and an actor killed from outside mid-run.

Usage (from the repository root, with ray installed: pip install -e ".[distributed]"):

    python benchmarks/ray_backend.py --out benchmarks/results/ray_backend.json
    python benchmarks/ray_backend.py --agent muzero --reanalyze-workers 1 \
        --out benchmarks/results/ray_backend_muzero.json

``--agent ppo`` (default): three runs of ``configs/ppo/room_5x5.yaml`` (PPO,
MiniHack-Room-5x5-v0), one after another:

1. ``omega run --backend ray --num-actors 2`` for the config's 50k env steps, then
   ``omega eval --episodes 100 --seed 1000000`` of its last checkpoint;
2. the same config on the local backend, right after (the throughput baseline);
3. ``--backend ray --num-actors 2`` for ``--kill-steps`` env steps, where this script sends
   SIGKILL to actor 1's process (its pid is in the run's "actor 1 ready" line) once the run
   has logged ``--kill-at`` env steps; the log lines about actor 1 are kept.

``--agent muzero``: ``configs/muzero/room_5x5.yaml`` (MuZero, rounds of one rollout per
actor) on Ray with 2 actors and on the local backend, each evaluated the same way (greedy or
sampled as the config's ``eval.greedy`` says; the JSON records which); with
``--reanalyze-workers W`` also a Ray run with ``muzero.reanalyze_fraction``
(``--reanalyze-fraction``) and W reanalyze workers. The kill run is off unless
``--kill-steps`` is given.

Throughput is the median ``env_steps_per_s`` of ``metrics.csv`` rows after the first (which
holds start-up and compilation) plus the wall time of the whole command.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from omega.training.checkpoint import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {"ppo": ROOT / "configs" / "ppo" / "room_5x5.yaml",
           "muzero": ROOT / "configs" / "muzero" / "room_5x5.yaml"}
OMEGA = [sys.executable, "-m", "omega"]
PROGRESS = re.compile(r"^\[\s*([\d,]+)/")
READY = re.compile(r"omega: actor 1 ready \(pid (\d+)\)")


def make(exp: Path, config: Path) -> None:
    if exp.exists():
        shutil.rmtree(exp)
    subprocess.run(OMEGA + ["make", "--config", str(config), "--output-dir", str(exp)],
                   cwd=ROOT, check=True, capture_output=True)


def evaluate(exp: Path, out: Path) -> dict:
    run(["eval", "--dir", str(exp), "--episodes", "100", "--seed", "1000000",
         "--json", str(out)])
    data = json.loads(out.read_text())
    return {k: data[k] for k in ("success_rate", "success_rate_ci95", "mean_return",
                                 "episodes", "greedy")}


def with_reanalyze(config: Path, out: Path, workers: int, fraction: float) -> Path:
    """A copy of ``config`` with reanalyze on and ``workers`` reanalyze workers."""
    import yaml

    data = yaml.safe_load(config.read_text())
    data.setdefault("muzero", {})["reanalyze_fraction"] = fraction
    data.setdefault("distributed", {})["num_reanalyze_workers"] = workers
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def run(cmd: list[str], kill_at: int | None = None) -> tuple[float, list[str]]:
    """Runs an omega command; with ``kill_at``, SIGKILLs Ray actor 1 once that many steps
    are logged. Returns the wall time and the output lines."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(OMEGA + cmd, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines, pid = [], None
    for line in proc.stdout:
        line = line.rstrip("\n")
        print(line, flush=True)
        lines.append(line)
        if kill_at is None:
            continue
        if m := READY.search(line):
            pid = int(m.group(1))
        if (m := PROGRESS.match(line)) and pid is not None \
                and int(m.group(1).replace(",", "")) >= kill_at:
            os.kill(pid, signal.SIGKILL)
            lines.append(f"(benchmark: sent SIGKILL to actor 1, pid {pid})")
            print(lines[-1], flush=True)
            pid, kill_at = None, None
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return time.perf_counter() - t0, lines


def throughput(exp: Path) -> dict:
    with (exp / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    rates = [float(r["env_steps_per_s"]) for r in rows[1:]]
    last = rows[-1]
    result = {"env_steps": int(last["env_steps"]),
              "median_env_steps_per_s": statistics.median(rates),
              "final_train_success_rate": float(last["success_rate"]),
              **{k: int(last[k]) for k in ("actor_restarts", "dropped_stale", "worker_restarts")
                 if k in last}}
    if "policy_lag" in last:
        lags = [float(r["policy_lag"]) for r in rows if r["policy_lag"] not in ("", "nan")]
        result["mean_policy_lag"] = statistics.mean(lags) if lags else None
    if "reanalyzed_steps" in last:  # per row with reanalyze workers
        result["reanalyzed_steps"] = sum(int(float(r["reanalyzed_steps"])) for r in rows)
        result["reanalyze_skipped"] = sum(int(float(r["reanalyze_skipped"])) for r in rows)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", choices=sorted(CONFIGS), default="ppo")
    parser.add_argument("--out", default=None,
                        help="default: benchmarks/results/ray_backend.json (ppo), "
                             "ray_backend_muzero.json (muzero)")
    parser.add_argument("--work", default=None)
    parser.add_argument("--kill-steps", type=int, default=None,
                        help="env steps of the kill run; 0: no kill run (default: 20480 for "
                             "ppo, 0 for muzero)")
    parser.add_argument("--kill-at", type=int, default=8_192)
    parser.add_argument("--reanalyze-workers", type=int, default=0,
                        help="muzero: also a Ray run with this many reanalyze workers")
    parser.add_argument("--reanalyze-fraction", type=float, default=0.25)
    args = parser.parse_args()
    muzero = args.agent == "muzero"
    config = CONFIGS[args.agent]
    suffix = "_muzero" if muzero else ""
    out = ROOT / (args.out or f"benchmarks/results/ray_backend{suffix}.json")
    work = ROOT / (args.work or f"experiments/ray_backend{suffix}")
    kill_steps = args.kill_steps if args.kill_steps is not None else (0 if muzero else 20_480)
    result: dict = {"config": str(config.relative_to(ROOT)), "machine": platform.platform(),
                    "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}

    ray_dir = work / "ray"
    make(ray_dir, config)
    wall, _ = run(["run", "--dir", str(ray_dir), "--backend", "ray", "--num-actors", "2"])
    result["ray"] = {"wall_s": wall, **throughput(ray_dir),
                     "eval": evaluate(ray_dir, work / "ray_eval.json")}

    local_dir = work / "local"
    make(local_dir, config)
    wall, _ = run(["run", "--dir", str(local_dir)])
    result["local"] = {"wall_s": wall, **throughput(local_dir)}
    if muzero:
        result["local"]["eval"] = evaluate(local_dir, work / "local_eval.json")

    if muzero and args.reanalyze_workers:
        re_config = with_reanalyze(config, work / "reanalyze.yaml", args.reanalyze_workers,
                                   args.reanalyze_fraction)
        re_dir = work / "ray_reanalyze"
        make(re_dir, re_config)
        wall, _ = run(["run", "--dir", str(re_dir), "--backend", "ray", "--num-actors", "2"])
        result["ray_reanalyze"] = {
            "reanalyze_workers": args.reanalyze_workers,
            "reanalyze_fraction": args.reanalyze_fraction, "wall_s": wall,
            **throughput(re_dir), "eval": evaluate(re_dir, work / "ray_reanalyze_eval.json")}

    if kill_steps:
        kill_dir = work / "kill"
        make(kill_dir, config)
        wall, lines = run(["run", "--dir", str(kill_dir), "--backend", "ray", "--num-actors",
                           "2", "--steps", str(kill_steps)], kill_at=args.kill_at)
        result["kill"] = {"wall_s": wall, **throughput(kill_dir),
                          "log": [ln for ln in lines if "actor 1" in ln or "done," in ln]}

    result["load_average_at_end"] = os.getloadavg()
    atomic_write_bytes(out, (json.dumps(result, indent=2) + "\n").encode())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

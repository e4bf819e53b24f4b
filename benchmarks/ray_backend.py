"""The Ray backend against the local loop, and an actor killed from outside mid-run.

Usage (from the repository root, with ray installed: pip install -e ".[distributed]"):

    python benchmarks/ray_backend.py --out benchmarks/results/ray_backend.json

Three runs of ``configs/ppo/room_5x5.yaml`` (PPO, MiniHack-Room-5x5-v0), one after another:

1. ``omega run --backend ray --num-actors 2`` for the config's 50k env steps, then
   ``omega eval --episodes 100 --seed 1000000`` of its last checkpoint;
2. the same config on the local backend, right after (the throughput baseline);
3. ``--backend ray --num-actors 2`` for ``--kill-steps`` env steps, where this script sends
   SIGKILL to actor 1's process (its pid is in the run's "actor 1 ready" line) once the run
   has logged ``--kill-at`` env steps; the log lines about actor 1 are kept.

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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from omega.training.checkpoint import atomic_write_bytes  # noqa: E402

CONFIG = ROOT / "configs" / "ppo" / "room_5x5.yaml"
OMEGA = [sys.executable, "-m", "omega"]
PROGRESS = re.compile(r"^\[\s*([\d,]+)/")
READY = re.compile(r"omega: actor 1 ready \(pid (\d+)\)")


def make(exp: Path) -> None:
    if exp.exists():
        shutil.rmtree(exp)
    subprocess.run(OMEGA + ["make", "--config", str(CONFIG), "--output-dir", str(exp)],
                   cwd=ROOT, check=True, capture_output=True)


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
    return {"env_steps": int(last["env_steps"]),
            "median_env_steps_per_s": statistics.median(rates),
            "final_train_success_rate": float(last["success_rate"]),
            **{k: int(last[k]) for k in ("actor_restarts", "dropped_stale", "worker_restarts")
               if k in last}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/ray_backend.json")
    parser.add_argument("--work", default="experiments/ray_backend")
    parser.add_argument("--kill-steps", type=int, default=20_480)
    parser.add_argument("--kill-at", type=int, default=8_192)
    args = parser.parse_args()
    work = ROOT / args.work
    result: dict = {"config": str(CONFIG.relative_to(ROOT)), "machine": platform.platform(),
                    "cpus": os.cpu_count()}

    ray_dir = work / "ray"
    make(ray_dir)
    wall, _ = run(["run", "--dir", str(ray_dir), "--backend", "ray", "--num-actors", "2"])
    result["ray"] = {"wall_s": wall, **throughput(ray_dir)}
    eval_json = work / "ray_eval.json"
    run(["eval", "--dir", str(ray_dir), "--episodes", "100", "--seed", "1000000",
         "--json", str(eval_json)])
    data = json.loads(eval_json.read_text())
    result["ray"]["eval"] = {k: data[k] for k in ("success_rate", "success_rate_ci95",
                                                  "mean_return", "episodes", "greedy")}

    local_dir = work / "local"
    make(local_dir)
    wall, _ = run(["run", "--dir", str(local_dir)])
    result["local"] = {"wall_s": wall, **throughput(local_dir)}

    kill_dir = work / "kill"
    make(kill_dir)
    wall, lines = run(["run", "--dir", str(kill_dir), "--backend", "ray", "--num-actors", "2",
                       "--steps", str(args.kill_steps)], kill_at=args.kill_at)
    result["kill"] = {"wall_s": wall, **throughput(kill_dir),
                      "log": [ln for ln in lines if "actor 1" in ln or "done," in ln]}

    out = ROOT / args.out
    atomic_write_bytes(out, (json.dumps(result, indent=2) + "\n").encode())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

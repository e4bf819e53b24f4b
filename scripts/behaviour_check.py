"""Record, or compare against a recording, the first rows of metrics.csv of two short seeded runs.

A refactor that keeps behaviour identical keeps these rows identical: PPO and MuZero on
MiniHack-Room-5x5 (the shipped configs, seed 0, logging every rollout), timing columns dropped.

    python scripts/behaviour_check.py --record ref/          # on the code before the change
    python scripts/behaviour_check.py --compare ref/         # after it: exit 1 on any difference

Runs `omega make` and `omega run` in a temporary folder (about 2 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = 20
# Wall-clock columns differ between any two runs.
TIMING = {"env_steps_per_s", "acting_s", "learning_s"}
# (name, shipped config, log interval = one rollout of 16 envs, env steps for ROWS rows)
RUNS = [
    ("ppo_room_5x5", "configs/ppo/room_5x5.yaml", 1024, 1024 * ROWS),
    ("muzero_room_5x5", "configs/muzero/room_5x5.yaml", 256, 256 * ROWS),
]


def first_rows(name: str, config: str, log_every: int, steps: int, work: Path) -> list[dict]:
    cfg = work / f"{name}.yaml"
    cfg.write_text(f"base: {ROOT / config}\nseed: 0\ntrain:\n  log_every_steps: {log_every}\n")
    exp = work / name
    omega = [sys.executable, "-m", "omega.cli.main"]
    subprocess.run([*omega, "make", "--config", str(cfg), "--output-dir", str(exp)], check=True)
    subprocess.run([*omega, "run", "--dir", str(exp), "--steps", str(steps)], check=True,
                   stdout=subprocess.DEVNULL)
    with open(exp / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:ROWS]
    if len(rows) < ROWS:
        raise SystemExit(f"{name}: only {len(rows)} metrics rows, expected {ROWS}")
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", type=Path, help="folder to write the reference rows to")
    mode.add_argument("--compare", type=Path, help="folder of reference rows to compare with")
    args = parser.parse_args()
    if args.compare:
        missing = [n for n, *_ in RUNS if not (args.compare / f"{n}.csv").is_file()]
        if missing:
            parser.error(f"{args.compare} has no {missing[0]}.csv: record it first with "
                         f"--record {args.compare} on the code before the change")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name, config, log_every, steps in RUNS:
            rows = first_rows(name, config, log_every, steps, Path(tmp))
            if args.record:
                args.record.mkdir(parents=True, exist_ok=True)
                write_rows(args.record / f"{name}.csv", rows)
                print(f"{name}: {len(rows)} rows recorded in {args.record / (name + '.csv')}")
                continue
            ref_path = args.compare / f"{name}.csv"
            with open(ref_path, newline="") as f:
                ref = list(csv.DictReader(f))
            diffs = [(i, k, r.get(k), row.get(k)) for i, (r, row) in enumerate(zip(ref, rows, strict=False))
                     for k in set(r) | set(row) if r.get(k) != row.get(k)]
            if diffs or len(ref) != len(rows):
                failed = True
                print(f"{name}: DIFFERENT from {ref_path}: {len(diffs)} values, first: {diffs[:3]}")
            else:
                print(f"{name}: the first {len(rows)} rows ({len(rows[0])} columns) are identical")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.exit(main())

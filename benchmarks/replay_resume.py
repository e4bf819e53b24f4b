"""MuZero killed mid-run and resumed (its replay restored) against the same run unkilled.

Usage (from the repository root):

    python benchmarks/replay_resume.py --seeds 0 --runs killed unkilled \\
        --work experiments/replay_resume
    python benchmarks/replay_resume.py --seeds 0 1 2 --collect \\
        --work experiments/replay_resume --out benchmarks/results/replay_resume.json

For each seed, ``--config`` (default ``configs/muzero/room_random_15x15_150k.yaml``, its
150k env-step budget) with ``seed`` set and ``train.checkpoint_every_steps`` set to
``--checkpoint-every`` (default 24,576, three metrics rows of 8,192, so a checkpoint falls on
a metrics row; the train section does not change what is learned):

- ``unkilled``: ``omega make``, ``omega run --dir D``, ``omega eval --dir D --json D/eval.json``
  (the config's eval: 100 episodes, seeds 1000000-1000099, sampled from the noise-free search
  policy);
- ``killed``: ``omega run --dir D`` in its own process group, sent SIGKILL (the trainer and
  its env workers) ``--kill-delay`` seconds after the checkpoint at ``--kill-after`` env steps
  (default 73,728) and the replay file next to it are on disk; then ``omega run --dir D``
  again (it resumes from that checkpoint and its replay) to the budget, and the same eval.

A run whose ``eval.json`` exists is not run again; ``--collect`` reads the finished runs (and
any further ``D/eval_<first seed>.json`` of ``omega eval --seed S``) and
writes the JSON: per seed the eval success of both runs, the replay size at the checkpoint
(``replay_size`` of its metrics row) and what the resumed run restored (its "restored the
replay" line), the replay file's size, and the train steps of the first metrics row after the
resume against the two possibilities: training at once (``replay_ratio`` x env steps /
``batch_size``) or only after ``warmup_steps`` new env steps (an empty replay).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "muzero" / "room_random_15x15_150k.yaml"
OMEGA = [sys.executable, "-m", "omega"]
RESUMED = re.compile(r"resuming from ckpt_\d+\.msgpack at ([\d,]+) env steps")
RESTORED = re.compile(r"restored the replay from (replay_\d+\.msgpack): ([\d,]+) env steps")


def omega(args: list[str], log: Path) -> float:
    """Runs an omega command (output appended to ``log``); returns its wall time."""
    t0 = time.perf_counter()
    with log.open("a") as f:
        f.write(f"$ omega {' '.join(args)}\n")
        f.flush()
        subprocess.run(OMEGA + args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t0


def make(config: Path, seed: int, every: int, exp: Path) -> None:
    data = yaml.safe_load(config.read_text())
    data["seed"] = seed
    data["train"]["checkpoint_every_steps"] = every
    cfg_path = exp.parent / f"{exp.name}.yaml"
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))
    omega(["make", "--config", str(cfg_path), "--output-dir", str(exp)], exp.parent / "make.log")


def run_killed(exp: Path, kill_after: int, delay: float) -> dict:
    """``omega run`` until the checkpoint at ``kill_after`` and its replay are written, then
    SIGKILL to its process group ``delay`` seconds later; returns what was on disk then."""
    log = exp / "run_killed.log"
    ckpt = exp / "checkpoints" / f"ckpt_{kill_after:012d}.msgpack"
    replay = exp / "checkpoints" / f"replay_{kill_after:012d}.msgpack"
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(OMEGA + ["run", "--dir", str(exp)], cwd=ROOT, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
        while not ckpt.exists():  # the replay is written first
            if proc.poll() is not None:
                raise SystemExit(f"{exp}: the run ended before {ckpt.name} was written")
            time.sleep(0.2)
        replay_bytes = replay.stat().st_size
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return {"killed_after_s": time.perf_counter() - t0, "rc": proc.returncode,
            "checkpoints_at_kill": sorted(p.name for p in (exp / "checkpoints").iterdir()),
            "replay_file_bytes": replay_bytes}


def one_run(config: Path, seed: int, kind: str, args) -> None:
    exp = args.work / f"{kind}_seed{seed}"
    if (exp / "eval.json").exists():
        return
    info: dict = {"seed": seed, "kind": kind}
    if not exp.exists():
        make(config, seed, args.checkpoint_every, exp)
    if kind == "killed":
        if not (exp / "kill.json").exists():
            (exp / "kill.json").write_text(json.dumps(
                run_killed(exp, args.kill_after, args.kill_delay), indent=2) + "\n")
        info["resume_wall_s"] = omega(["run", "--dir", str(exp)], exp / "run_resumed.log")
    else:
        info["train_wall_s"] = omega(["run", "--dir", str(exp)], exp / "run.log")
    omega(["eval", "--dir", str(exp), "--json", str(exp / "eval.json")], exp / "eval.log")
    (exp / "run.json").write_text(json.dumps(info, indent=2) + "\n")


def rows_of(exp: Path) -> list[dict]:
    with (exp / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def collect(config: Path, seeds: list[int], args) -> dict:
    cfg = yaml.safe_load(config.read_text())["muzero"]
    per_update = cfg["replay_ratio"] / cfg["batch_size"]  # train steps per env step
    shown = config.relative_to(ROOT) if config.is_relative_to(ROOT) else config
    out = {"config": str(shown), "checkpoint_every_steps": args.checkpoint_every,
           "kill_after_checkpoint": args.kill_after, "seeds": []}
    for seed in seeds:
        killed, unkilled = args.work / f"killed_seed{seed}", args.work / f"unkilled_seed{seed}"
        rows = {int(r["env_steps"]): r for r in rows_of(killed)}
        resumed_log = (killed / "run_resumed.log").read_text()
        ckpt_steps = int(RESUMED.search(resumed_log).group(1).replace(",", ""))
        at_ckpt = rows[ckpt_steps]
        after = min(s for s in rows if s > ckpt_steps)
        m = RESTORED.search(resumed_log)
        new_steps = after - ckpt_steps
        trained = float(rows[after]["train_steps"]) - float(at_ckpt["train_steps"])
        kill = json.loads((killed / "kill.json").read_text())
        ev = {k: json.loads((d / "eval.json").read_text()) for k, d in
              (("killed", killed), ("unkilled", unkilled))}
        out["seeds"].append({
            "seed": seed,
            "resumed_from_env_steps": ckpt_steps,
            "replay_size_at_checkpoint_row": int(float(at_ckpt["replay_size"])),
            "replay_restored_file": m.group(1) if m else None,
            "replay_restored_env_steps": int(m.group(2).replace(",", "")) if m else None,
            "replay_file_bytes": kill["replay_file_bytes"],
            "killed_after_s": round(kill["killed_after_s"], 1),
            "checkpoints_at_kill": kill["checkpoints_at_kill"],
            "first_row_after_resume": {
                "env_steps": after, "replay_size": int(float(rows[after]["replay_size"])),
                "train_steps_since_checkpoint": trained,
                "if_training_at_once": new_steps * per_update,
                "if_refilling_warmup": max(0, new_steps - cfg["warmup_steps"]) * per_update},
            "eval_success": {k: v["success_rate"] for k, v in ev.items()},
            # Further evals on other episode seeds (omega eval --seed S --json
            # D/eval_S.json), where they were run.
            "eval_success_other_seeds": {
                k: {p.stem.split("_")[1]: json.loads(p.read_text())["success_rate"]
                    for p in sorted(d.glob("eval_*.json"))}
                for k, d in (("killed", killed), ("unkilled", unkilled))},
            "eval_success_ci95": {k: v["success_rate_ci95"] for k, v in ev.items()},
            "eval_env_steps": {k: v["env_steps"] for k, v in ev.items()},
            "wall_s": {"killed_then_resumed": json.loads((killed / "run.json").read_text()),
                       "unkilled": json.loads((unkilled / "run.json").read_text())},
        })
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", nargs="+", choices=("killed", "unkilled"), default=[])
    p.add_argument("--work", type=Path, default=ROOT / "experiments" / "replay_resume")
    p.add_argument("--checkpoint-every", type=int, default=24_576)
    p.add_argument("--kill-after", type=int, default=73_728)
    p.add_argument("--kill-delay", type=float, default=20.0)
    p.add_argument("--collect", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    config = args.config.resolve()
    for seed in args.seeds:
        for kind in args.runs:
            one_run(config, seed, kind, args)
    if args.collect:
        result = collect(config, args.seeds, args)
        text = json.dumps(result, indent=2) + "\n"
        print(text)
        if args.out:
            args.out.write_text(text)


if __name__ == "__main__":
    main()

"""Training a config on one seed and evaluating it through the omega commands, as the
benchmark scripts do (``benchmarks/learning.py`` and the ablations built on it).

``run_seed`` writes the config with its seed next to the run, ``omega make`` + ``omega run``
it in ``work/<config>_seed<seed>`` (a finished run is reused) and ``omega eval`` it on 100
episodes; the row it returns is what those scripts' JSON files hold per seed.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import yaml

from omega.cli.main import main as omega
from omega.training.files import atomic_write_bytes


def steps_to(rows: list[dict], threshold: float, run: int = 2) -> int | None:
    """Env steps of the first metrics row that starts ``run`` consecutive rows with a training
    success rate >= threshold (one row alone can be a handful of lucky episodes)."""
    ok = [bool(r["success_rate"]) and float(r["success_rate"]) >= threshold for r in rows]
    for i in range(len(rows) - run + 1):
        if all(ok[i:i + run]):
            return int(rows[i]["env_steps"])
    return None


def make_and_train(cfg_path: Path, exp: Path, steps: int | None) -> float:
    """``omega make`` (unless ``exp`` exists) + ``omega run``; returns the training wall time.
    A finished run keeps its wall time in ``exp/train_wall_s.json`` and is not trained again."""
    if not exp.exists():
        assert omega(["make", "--config", str(cfg_path), "--output-dir", str(exp)]) == 0
    wall_file = exp / "train_wall_s.json"
    if wall_file.exists():
        return float(json.loads(wall_file.read_text())["train_wall_s"])
    t0 = time.perf_counter()
    assert omega(["run", "--dir", str(exp)] + (["--steps", str(steps)] if steps else [])) == 0
    wall = time.perf_counter() - t0
    wall_file.write_text(json.dumps({"train_wall_s": wall}) + "\n")
    return wall


def run_seed(config: Path, seed: int, work: Path, steps: int | None, eval_seed: int) -> dict:
    data = yaml.safe_load(config.read_text())
    data["seed"] = seed
    cfg_path = work / f"{config.stem}_seed{seed}.yaml"
    atomic_write_bytes(cfg_path, yaml.safe_dump(data, sort_keys=False).encode())
    exp = work / f"{config.stem}_seed{seed}"
    wall = make_and_train(cfg_path, exp, steps)
    eval_json = exp / "eval.json"
    mode = "--greedy" if data.get("eval", {}).get("greedy", True) else "--sample"
    assert omega(["eval", "--dir", str(exp), "--episodes", "100", "--seed", str(eval_seed),
                  mode, "--json", str(eval_json)]) == 0
    with (exp / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    ev = json.loads(eval_json.read_text())
    return {
        "seed": seed,
        "train_wall_s": wall,
        "env_steps": int(rows[-1]["env_steps"]),
        "steps_to_train_success_0.95": steps_to(rows, 0.95),
        "eval": {k: ev[k] for k in ("greedy", "success_rate", "success_rate_ci95", "mean_return",
                                    "mean_return_ci95", "mean_length", "mean_length_ci95",
                                    "env_steps")},
        "eval_seeds": [ev["seeds"][0], ev["seeds"][-1]],
        "curve": [(int(r["env_steps"]), float(r["success_rate"]) if r["success_rate"] else None,
                   float(r["episode_return"]) if r["episode_return"] else None) for r in rows],
        "mean_env_steps_per_s": float(rows[-1]["env_steps"]) / wall,
    }

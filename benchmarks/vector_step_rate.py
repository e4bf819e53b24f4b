"""Random-action step rate: one raw in-process env vs. omega's VectorEnv.

Usage (from the repository root):

    python benchmarks/vector_step_rate.py --steps 4000 \\
        --env MiniHack-Room-5x5-v0 NetHackScore-v0 --num-envs 8 16 --num-workers 1 2

For every env id it measures a single raw env (``gymnasium.make(id,
observation_keys=...)`` stepped in this process, reset when an episode ends) and
``VectorEnv`` for every (num_envs, num_workers) pair, all in the same run, then
prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

import gymnasium
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "vector_step_rate.json"


def make_env(env_id: str, observation_keys: tuple[str, ...], env_index: int = 0):
    """Module-level (picklable) env builder used both in-process and by the workers."""
    import minihack  # noqa: F401  (registers MiniHack ids)
    import nle  # noqa: F401  (registers NetHack ids)

    return gymnasium.make(env_id, observation_keys=observation_keys)


def bench_raw(env_id: str, keys: tuple[str, ...], steps: int, seed: int) -> dict:
    env = make_env(env_id, keys)
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, env.action_space.n, size=steps)
    env.reset(seed=seed)
    for a in actions[: min(100, steps)]:  # warm-up
        _, _, term, trunc, _ = env.step(int(a))
        if term or trunc:
            env.reset()
    episodes = 0
    t0 = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(int(a))
        if term or trunc:
            env.reset()
            episodes += 1
    elapsed = time.perf_counter() - t0
    env.close()
    return {"env_steps": steps, "seconds": elapsed, "episodes": episodes}


def bench_vector(
    env_id: str,
    keys: tuple[str, ...],
    steps: int,
    num_envs: int,
    num_workers: int,
    seed: int,
    context: str | None,
) -> dict:
    from omega.envs.vector import VectorEnv

    fn = functools.partial(make_env, env_id, keys)
    iters = max(1, steps // num_envs)
    t_start = time.perf_counter()
    with VectorEnv(fn, num_envs, num_workers, seed=seed, context=context) as vec:
        startup = time.perf_counter() - t_start
        rng = np.random.default_rng(seed)
        n = vec.single_action_space.n
        actions = rng.integers(0, n, size=(iters + 10, num_envs))
        vec.reset()
        for a in actions[:10]:  # warm-up
            vec.step(a)
        episodes = restarts = 0
        t0 = time.perf_counter()
        for a in actions[10:]:
            _, _, _, _, info = vec.step(a)
            episodes += len(info["episodes"])
            restarts += info["worker_restarts"]
        elapsed = time.perf_counter() - t0
    return {
        "env_steps": iters * num_envs,
        "seconds": elapsed,
        "episodes": episodes,
        "worker_restarts": restarts,
        "startup_seconds": startup,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", nargs="+", default=["MiniHack-Room-5x5-v0", "NetHackScore-v0"])
    parser.add_argument(
        "--steps",
        type=int,
        default=4000,
        help="env steps per measurement (vector: steps // num_envs iterations)",
    )
    parser.add_argument("--num-envs", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--num-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--observation-keys", nargs="+", default=["glyphs", "blstats"])
    parser.add_argument(
        "--context", default=None, help="multiprocessing start method (default: VectorEnv's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    keys = tuple(args.observation_keys)

    rows = []
    for env_id in args.env:
        raw = bench_raw(env_id, keys, args.steps, args.seed)
        raw_rate = raw["env_steps"] / raw["seconds"]
        rows.append(
            {
                "env": env_id,
                "mode": "raw",
                "num_envs": 1,
                "num_workers": 0,
                **raw,
                "steps_per_s": raw_rate,
                "vs_raw": 1.0,
            }
        )
        print(f"{env_id} raw: {raw_rate:,.0f} steps/s", flush=True)
        for num_envs in args.num_envs:
            for num_workers in args.num_workers:
                res = bench_vector(
                    env_id, keys, args.steps, num_envs, num_workers, args.seed, args.context
                )
                rate = res["env_steps"] / res["seconds"]
                rows.append(
                    {
                        "env": env_id,
                        "mode": "vector",
                        "num_envs": num_envs,
                        "num_workers": num_workers,
                        **res,
                        "steps_per_s": rate,
                        "vs_raw": rate / raw_rate,
                    }
                )
                print(f"{env_id} N={num_envs} W={num_workers}: {rate:,.0f} steps/s", flush=True)

    header = f"{'env':<24} {'mode':<7} {'N':>3} {'W':>3} {'steps':>7} {'steps/s':>9} {'vs raw':>7}"
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['env']:<24} {r['mode']:<7} {r['num_envs']:>3} {r['num_workers']:>3} "
            f"{r['env_steps']:>7} {r['steps_per_s']:>9,.0f} {r['vs_raw']:>6.2f}x"
        )

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "vector_step_rate",
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "observation_keys": list(keys),
        "results": rows,
    }
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(out)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

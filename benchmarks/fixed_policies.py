"""Fixed (state-blind) policies on the eval seeds: what a task gives away without learning.

Usage (from the repository root):

    python benchmarks/fixed_policies.py --env MiniHack-River-Narrow-v0 \\
        --policy random --policy E --policy E:0.5,NE:0.25,SE:0.25 \\
        --out benchmarks/results/fixed_policies_river_narrow.json

A policy is ``random`` (uniform over the env's actions) or a list of ``ACTION:weight`` pairs
over the env's compass actions (``N``, ``E``, ``S``, ``W``, ``NE``, ``SE``, ``SW``, ``NW``; a
bare ``E`` means ``E:1``); actions are drawn independently at every step. Each policy plays
episodes with seeds ``--seed``, ``--seed + 1``, ... (the seeds ``omega eval`` uses), through
the same env wrappers as training, and is scored like ``omega eval`` (success rate with its
Wilson 95% interval, mean return, mean length). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from omega.envs import make
from omega.training.evaluate import EvalResult

ROOT = Path(__file__).resolve().parents[1]


def action_probs(spec: str, actions: list[str]) -> np.ndarray:
    """``random`` or ``NAME[:w],...`` -> a distribution over the env's actions [A]."""
    if spec == "random":
        return np.full(len(actions), 1.0 / len(actions))
    probs = np.zeros(len(actions))
    for part in spec.split(","):
        name, _, weight = part.partition(":")
        if name not in actions:
            raise SystemExit(f"fixed_policies.py: unknown action {name!r} in {spec!r}; this "
                             f"env's actions are {', '.join(actions)}")
        probs[actions.index(name)] += float(weight or 1.0)
    if probs.sum() <= 0:
        raise SystemExit(f"fixed_policies.py: policy {spec!r} has no positive weight")
    return probs / probs.sum()


def play(env, probs: np.ndarray, episodes: int, seed: int, rng: np.random.Generator
         ) -> EvalResult:
    returns, lengths, successes = [], [], []
    for i in range(episodes):
        env.reset(seed=seed + i)
        ret, length, done, info = 0.0, 0, False, {}
        while not done:
            _, r, terminated, truncated, info = env.step(int(rng.choice(len(probs), p=probs)))
            ret, length, done = ret + float(r), length + 1, terminated or truncated
        returns.append(ret)
        lengths.append(length)
        successes.append(bool(info.get("success", False)))
    return EvalResult(env_id=env.spec.id if env.spec else "", episodes=episodes,
                      seeds=[seed + i for i in range(episodes)], returns=returns,
                      lengths=lengths, successes=successes, greedy=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", required=True)
    p.add_argument("--policy", action="append", required=True,
                   help="'random' or ACTION[:weight],... (repeatable)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=1_000_000)
    p.add_argument("--rng-seed", type=int, default=0, help="seeds the action draws")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    env = make(args.env)
    try:
        actions = [a.name for a in env.unwrapped.actions]
        policies = [(spec, action_probs(spec, actions)) for spec in args.policy]
        rows = []
        for spec, probs in policies:
            result = play(env, probs, args.episodes, args.seed,
                          np.random.default_rng(args.rng_seed)).to_json()
            rows.append({"policy": spec, **{k: result[k] for k in (
                "success_rate", "success_rate_ci95", "mean_return", "mean_return_ci95",
                "mean_length", "mean_length_ci95")}})
    finally:
        env.close()
    print(f"{args.env}: {args.episodes} episodes, seeds {args.seed}..{args.seed + args.episodes - 1}")
    print(f"{'policy':<28} {'success [95% CI]':>20} {'mean return':>12} {'mean length':>12}")
    for r in rows:
        lo, hi = r["success_rate_ci95"]
        print(f"{r['policy']:<28} {r['success_rate']:>6.2f} [{lo:.2f}, {hi:.2f}] "
              f"{r['mean_return']:>12.3f} {r['mean_length']:>12.1f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"env_id": args.env, "episodes": args.episodes,
                                        "seed": args.seed, "rng_seed": args.rng_seed,
                                        "policies": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

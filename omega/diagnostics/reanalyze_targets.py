"""Are a trained MuZero agent's reanalyze targets what its acting search would produce?

Usage (from the repository root; DIR is a trained MuZero experiment, non-recurrent):

    python -m omega.diagnostics.reanalyze_targets --dir experiments/muzero_ablation/rr15_base_seed0 \\
        --json benchmarks/results/reanalyze_targets_rr15_base_seed0.json

Plays ``--steps`` env steps in one env with the training search (exploration noise on),
searching every observation three ways with the checkpoint's params: the training search,
the noise-free evaluation search, and :meth:`MuZeroAgent.search_targets` (what reanalyze
writes back, batched as reanalyze batches it). Prints the mean total-variation distance
between their policy targets, their entropies, how often the argmaxes agree, and the
correlation of the root values; writes them as JSON. Reanalyze targets that equal the
noise-free search's say the reanalyze path (batching, padding, the search) adds nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from omega.agents.muzero.agent import ReanalyzeBatch
from omega.diagnostics._common import write_json
from omega.envs import EnvFactory
from omega.training.checkpoint import latest_checkpoint
from omega.training.experiment import CHECKPOINT_DIR, load_experiment, load_trained_agent


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(p - q).sum(-1).mean())


def entropy(p: np.ndarray) -> float:
    return float(-(p * np.log(p + 1e-12)).sum(-1).mean())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m omega.diagnostics.reanalyze_targets",
                                description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, type=Path, help="a trained MuZero experiment")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=5, help="episode seed of the first game")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    cfg = load_experiment(args.dir)
    if cfg.agent_type != "muzero" or cfg.model.recurrent:
        raise SystemExit(f"{args.dir}: needs a non-recurrent MuZero experiment")
    if latest_checkpoint(args.dir / CHECKPOINT_DIR) is None:
        raise SystemExit(f"{args.dir} has no checkpoint; train it first")
    trained = load_trained_agent(args.dir, cfg=cfg)
    agent, state, ckpt = trained.agent, trained.state, trained.checkpoint
    train_params, eval_params = agent.params(state), agent.eval_params(state)

    env = EnvFactory.from_config(cfg.env)(0)  # the training env, options and all
    obs, _ = env.reset(seed=args.seed)
    key = jax.random.PRNGKey(args.seed)
    seen, train_pi, eval_pi, train_v = [], [], [], []
    first = np.ones(1, bool)  # unused by a stateless encoder
    for _ in range(args.steps):
        key, k_train, k_eval = jax.random.split(key, 3)
        batch = {k: v[None] for k, v in obs.items()}
        out = agent.act(train_params, batch, first, None, k_train)
        noise_free = agent.act(eval_params, batch, first, None, k_eval)
        seen.append(agent._filter(batch))
        train_pi.append(np.asarray(out.extras["search_policy"][0]))
        eval_pi.append(np.asarray(noise_free.extras["search_policy"][0]))
        train_v.append(float(out.extras["root_value"][0]))
        obs, _, terminated, truncated, _ = env.step(int(out.action[0]))
        if terminated or truncated:
            obs, _ = env.reset()

    # The observations as the replay would hand them to reanalyze: batches of
    # reanalyze_batch_size, the last padded by repeating its last row.
    stacked = {k: np.concatenate([o[k] for o in seen]) for k in seen[0]}
    size = agent.cfg.reanalyze_batch_size
    rean_pi, rean_v = [], []
    for lo in range(0, args.steps, size):
        part = {k: v[lo:lo + size] for k, v in stacked.items()}
        m = len(next(iter(part.values())))
        padded = {k: np.pad(v, [(0, size - m)] + [(0, 0)] * (v.ndim - 1), mode="edge")
                  for k, v in part.items()}
        pi, v = agent.search_targets(state.params, ReanalyzeBatch(
            env=np.zeros(m, np.int64), time=np.arange(m), obs=padded))
        rean_pi.append(pi)
        rean_v.append(v)
    train = np.asarray(train_pi)
    noise_free = np.asarray(eval_pi)
    rean = np.concatenate(rean_pi)
    result = {
        "dir": str(args.dir), "checkpoint": ckpt.name, "steps": args.steps,
        "tv_reanalyze_vs_noise_free": total_variation(rean, noise_free),
        "tv_reanalyze_vs_training": total_variation(rean, train),
        "tv_noise_free_vs_training": total_variation(noise_free, train),
        "entropy_training": entropy(train), "entropy_noise_free": entropy(noise_free),
        "entropy_reanalyze": entropy(rean),
        "argmax_agreement_reanalyze_vs_training": float(
            (rean.argmax(-1) == train.argmax(-1)).mean()),
        "root_value_mean_training": float(np.mean(train_v)),
        "root_value_mean_reanalyze": float(np.mean(np.concatenate(rean_v))),
        "root_value_correlation": float(np.corrcoef(train_v, np.concatenate(rean_v))[0, 1]),
    }
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v:.6g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()

"""Does a trained MuZero model see the task's small rewards? Its heads over played episodes.

Usage (from the repository root):

    python -m omega.diagnostics.shaped_rewards --runs experiments/mz/mazewalk_seed0 \\
        --policy agent --policy random --episodes 20 --json probe.json

For a task whose shaping pays small rewards (an episodic bonus for each new cell, for a
kill), a search can only prefer the paying moves if the model predicts them. This plays the
run's eval episodes (its config's seeds, from ``eval.seed``) with the agent as evaluation acts
(``--policy agent``) or with uniformly random actions (``--policy random``: the same states a
random walk reaches, for a model-quality check free of the agent's choices) and, at each step,
reads the network on the observation:

- the reward head's prediction for the taken action, grouped by the reward that came
  (``0``, a small shaped reward below ``--small``, or larger), and the AUC with which the
  prediction separates small-reward steps from zero-reward ones (0.5: blind to them);
- the spread over actions of the predicted one-step reward (max - min), what the search's
  first level can tell apart;
- the value head against the discounted return that followed (the config's gamma, to the
  episode's end; a time limit's unrolled tail is cut, not bootstrapped): correlation and the
  mean error;
- the prior's and the search policy's entropy over log(A) (1: uniform), and the fraction of
  steps whose action left the hero where it stood (a wall bump or a no-op).

Prints each run's numbers per policy; writes them as JSON.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import jax
import numpy as np
from nle import nethack

from omega.agents.muzero.networks import logits_to_scalar
from omega.diagnostics._common import load_blstats_muzero, one_step, write_json
from omega.envs import EnvFactory
from omega.errors import OmegaError


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive's score > a negative's) + half the ties (Mann-Whitney); NaN if a side is
    empty."""
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    scores = np.concatenate([positive, negative])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks over ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def entropy_ratio(logits: np.ndarray) -> np.ndarray:
    """Entropy of softmax(logits) [..., A] over log(A)."""
    logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    return -(np.exp(logp) * logp).sum(-1) / math.log(logits.shape[-1])


def discounted_returns(rewards: list[float], gamma: float) -> np.ndarray:
    out, g = np.zeros(len(rewards)), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def make_heads(agent):
    """One jitted function: obs -> (prior logits [1, A], value [1], reward per action [A])."""
    support = agent.cfg.support

    @jax.jit
    def heads(net, obs):
        out = one_step(agent.network, net, obs, support, agent.cfg.gamma)
        return out.logits, logits_to_scalar(out.value_logits, support), out.reward
    return heads


def probe(trained, policy: str, episodes: int, small: float, rng_seed: int = 0) -> dict:
    cfg, agent = trained.cfg, trained.agent
    params = trained.eval_params(average=True)
    heads = make_heads(agent)
    factory = EnvFactory.from_config(cfg.env)
    env = factory(0)
    rng = jax.random.PRNGKey(rng_seed)
    np_rng = np.random.default_rng(rng_seed)
    steps: dict[str, list] = {k: [] for k in ("reward", "predicted", "spread", "value", "target",
                                                "prior_entropy", "search_entropy", "stood")}
    successes = []
    try:
        for e in range(episodes):
            obs, _ = env.reset(seed=cfg.eval.seed + e)
            first, carry = np.ones(1, bool), agent.initial_carry(1)
            rewards: list[float] = []
            while True:
                batch = {k: v[None] for k, v in obs.items()}
                logits, value, reward_per_action = jax.device_get(
                    heads(params.net, agent._filter(batch)))
                rng, key = jax.random.split(rng)
                out = agent.act(params, batch, first, carry, key, greedy=cfg.eval.greedy)
                carry, first = out.carry, np.zeros(1, bool)
                search = np.asarray(out.extras["search_policy"])[0]
                action = (int(out.action[0]) if policy == "agent"
                          else int(np_rng.integers(agent.num_actions)))
                where = (obs["blstats"][nethack.NLE_BL_X], obs["blstats"][nethack.NLE_BL_Y])
                obs, r, terminated, truncated, info = env.step(action)
                moved = (obs["blstats"][nethack.NLE_BL_X], obs["blstats"][nethack.NLE_BL_Y])
                rewards.append(float(r))
                steps["reward"].append(float(r))
                steps["predicted"].append(float(reward_per_action[action]))
                steps["spread"].append(float(np.ptp(reward_per_action)))
                steps["value"].append(float(value[0]))
                steps["prior_entropy"].append(float(entropy_ratio(np.asarray(logits[0]))))
                steps["search_entropy"].append(
                    float(-(search * np.log(np.maximum(search, 1e-12))).sum()
                          / math.log(len(search))))
                steps["stood"].append(where == moved)
                if terminated or truncated:
                    successes.append(bool(info.get("success", False)))
                    steps["target"].extend(discounted_returns(rewards, cfg.muzero.gamma))
                    break
    finally:
        env.close()
    s = {k: np.asarray(v, float) for k, v in steps.items()}
    zero = np.abs(s["reward"]) < 1e-9
    small_pos = (s["reward"] > 1e-9) & (s["reward"] < small)
    large = s["reward"] >= small
    return {
        "policy": policy, "episodes": episodes, "steps": len(s["reward"]),
        "success_rate": float(np.mean(successes)),
        "small_reward_rate": float(small_pos.mean()),
        "stood_still_rate": float(s["stood"].mean()),
        "predicted_reward_at_zero": float(s["predicted"][zero].mean()) if zero.any() else None,
        "predicted_reward_at_small": (float(s["predicted"][small_pos].mean())
                                      if small_pos.any() else None),
        "predicted_reward_at_large": (float(s["predicted"][large].mean())
                                      if large.any() else None),
        "small_vs_zero_auc": auc(s["predicted"][small_pos], s["predicted"][zero]),
        "reward_spread_over_actions": float(s["spread"].mean()),
        "value_return_corr": float(np.corrcoef(s["value"], s["target"])[0, 1]),
        "value_mean_error": float(np.mean(s["value"] - s["target"])),
        "mean_value": float(s["value"].mean()), "mean_return_target": float(s["target"].mean()),
        "prior_entropy": float(s["prior_entropy"].mean()),
        "search_entropy": float(s["search_entropy"].mean()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m omega.diagnostics.shaped_rewards",
                                description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, type=Path, metavar="DIR",
                   help="trained MuZero experiment dirs")
    p.add_argument("--policy", action="append", choices=("agent", "random"), default=None,
                   help="who picks the actions (repeatable; default: agent)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--small", type=float, default=0.5,
                   help="rewards above 0 and below this count as small (shaping)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file name in each run (default: the newest)")
    p.add_argument("--json", type=Path, default=None, help="JSON path")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error(f"--episodes must be >= 1, got {args.episodes}")
    if args.small <= 0:
        p.error(f"--small must be > 0, got {args.small}")
    rows = []
    cols = ("success_rate", "small_reward_rate", "stood_still_rate", "predicted_reward_at_zero",
            "predicted_reward_at_small", "small_vs_zero_auc", "reward_spread_over_actions",
            "value_return_corr", "prior_entropy", "search_entropy")
    try:
        for run in args.runs:
            ckpt, trained = load_blstats_muzero(run, args.checkpoint, "shaped_rewards")
            for policy in args.policy or ["agent"]:
                row = {"run": str(run), "checkpoint": ckpt.name,
                       "env_steps": trained.loop.env_steps,
                       **probe(trained, policy, args.episodes, args.small)}
                rows.append(row)
                print(f"{str(run)[-30:]} {ckpt.name} {policy}", flush=True)
                for c in cols:
                    v = row[c]
                    print(f"  {c:28s} {'-' if v is None else f'{v:.4f}'}")
    except OmegaError as e:
        print(f"shaped_rewards: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        write_json(args.json, {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

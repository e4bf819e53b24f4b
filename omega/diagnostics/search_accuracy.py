"""How often MuZero's prior, one-step model Q and search policy point towards the goal.

Usage (from the repository root):

    python -m omega.diagnostics.search_accuracy --dir experiments/mz/rr15_seed0 --all-checkpoints \\
        --episodes 20 --json search_accuracy.json

In an open room (MiniHack-Room-Random-*, -Room-*: no obstacles inside the walls) a move is
right when it lowers the Chebyshev distance from the agent to the downstairs (8-directional
moves). For every kept checkpoint (``--all-checkpoints``; else the newest) this plays
``--episodes`` evaluation episodes (episode seeds from ``--seed``; actions as ``omega eval``
picks them: the config's eval mode, no exploration noise) and, at every step where the
stairs are in the agent's crop (so a memoryless agent can know where they are), reads:

- the share of steps where the argmax of the prior, of the model's one-step Q
  ``r̂ + γ (1 − p_end) v̂(s')`` and of the search policy is a right move;
- the probability mass the prior and the search policy put on right moves (a uniform policy
  puts 3/8 there when the goal lies diagonally off, 3/8 or 5/8 otherwise);
- the root's Q spread (max − min over actions of the one-step model Q) on these steps.

The Q argmax is what the Gumbel push follows; where it is right less often than the prior,
pushing harder towards it (a larger ``gumbel_value_scale``) moves the prior away from the
goal. Plain (not stochastic, not recurrent) MuZero only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from nle import nethack

from omega.diagnostics._common import hero_position, one_step_q
from omega.envs import EnvFactory
from omega.errors import OmegaError
from omega.training.checkpoint import atomic_write_bytes, list_checkpoints
from omega.training.evaluate import evaluation_params
from omega.training.experiment import CHECKPOINT_DIR, load_experiment, load_trained_agent

# NetHack 3.6's S_dnstair in NLE's symbol table: the glyph of the downstairs (the goal).
DOWNSTAIRS_GLYPH = nethack.GLYPH_CMAP_OFF + 24
# NetHack's movement keys and the (dx, dy) each moves by (y grows downwards).
MOVES = {ord("k"): (0, -1), ord("l"): (1, 0), ord("j"): (0, 1), ord("h"): (-1, 0),
         ord("u"): (1, -1), ord("n"): (1, 1), ord("b"): (-1, 1), ord("y"): (-1, -1)}


def right_moves(action_moves: list[tuple[int, int] | None], agent: tuple[int, int],
                goal: tuple[int, int]) -> np.ndarray:
    """[A] bool: the actions whose move lowers the Chebyshev distance to ``goal``."""
    d = max(abs(goal[0] - agent[0]), abs(goal[1] - agent[1]))
    out = []
    for move in action_moves:
        if move is None:
            out.append(False)
            continue
        x, y = agent[0] + move[0], agent[1] + move[1]
        out.append(max(abs(goal[0] - x), abs(goal[1] - y)) < d)
    return np.asarray(out)


def evaluate_checkpoint(exp: Path, ckpt: Path, episodes: int, seed: int) -> dict:
    trained = load_trained_agent(exp, ckpt)
    cfg, agent, state = trained.cfg, trained.agent, trained.state
    actor = evaluation_params(agent, state)
    net, support, gamma = agent.network, cfg.muzero.support, cfg.muzero.gamma
    params = actor.net

    @jax.jit
    def one_step(obs):  # -> Q(s, a) for every a [A], prior [A]
        _, logits, _, q = one_step_q(net, params, obs, support, gamma)
        return q, jax.nn.softmax(logits[0])

    factory = EnvFactory.from_config(cfg.env)
    extra = tuple(k for k in ("glyphs",) if k not in factory.observation_keys)
    env = dataclasses.replace(factory, observation_keys=factory.observation_keys + extra)(0)
    half = cfg.env.observation.crop_size // 2
    rows, successes = [], []
    rng = jax.random.PRNGKey(0)
    try:
        action_moves = [MOVES.get(int(a)) for a in env.unwrapped.actions]
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            done, first, success = False, np.ones(1, bool), False
            while not done:
                batch = {k: jnp.asarray(v[None]) for k, v in agent._filter(obs).items()}
                rng, key = jax.random.split(rng)
                out = agent.act(actor, batch, first, None, key, greedy=cfg.eval.greedy)
                first = np.zeros(1, bool)
                ys, xs = np.nonzero(obs["glyphs"] == DOWNSTAIRS_GLYPH)
                me = hero_position(env)
                if len(xs):
                    goal = (int(xs[0]), int(ys[0]))
                    if max(abs(goal[0] - me[0]), abs(goal[1] - me[1])) <= half:
                        right = right_moves(action_moves, me, goal)
                        q, prior = (np.asarray(x) for x in one_step(batch))
                        search = np.asarray(out.extras["search_policy"])[0]
                        rows.append((right[prior.argmax()], right[q.argmax()],
                                     right[search.argmax()], prior[right].sum(),
                                     search[right].sum(), q.max() - q.min()))
                obs, _, terminated, truncated, info = env.step(int(np.asarray(out.action)[0]))
                done = terminated or truncated
                success = bool(done and info.get("success", False))
            successes.append(success)
    finally:
        env.close()
    x = np.asarray(rows, np.float64).reshape(-1, 6)
    names = ("prior_argmax_right", "q_argmax_right", "search_argmax_right",
             "prior_mass_right", "search_mass_right", "q_spread")
    return {"checkpoint": str(ckpt), "env_steps": int(ckpt.stem.split("_")[-1]),
            "success_rate": float(np.mean(successes)), "goal_in_view_steps": len(x),
            **{n: float(x[:, i].mean()) if len(x) else None for i, n in enumerate(names)}}



def run(exp: Path, all_checkpoints: bool, episodes: int, seed: int) -> dict:
    cfg = load_experiment(exp)
    if cfg.agent_type != "muzero" or cfg.muzero.stochastic or cfg.model.recurrent:
        raise OmegaError(f"'{exp}' is not a plain MuZero experiment (agent_type muzero, "
                         "stochastic: false, model.recurrent: false)")
    if "Room" not in cfg.env.id:
        raise OmegaError(f"'{exp}' trains on {cfg.env.id}; search_accuracy reads the open "
                         "MiniHack rooms only (MiniHack-Room-*)")
    ckpts = list_checkpoints(exp / CHECKPOINT_DIR)
    if not ckpts:
        raise OmegaError(f"'{exp}' has no checkpoint yet; train it with 'omega run --dir {exp}'")
    chosen = ckpts if all_checkpoints else ckpts[-1:]
    return {"dir": str(exp), "env_id": cfg.env.id, "seeds": [seed, seed + episodes - 1],
            "checkpoints": [evaluate_checkpoint(exp, c, episodes, seed) for c in chosen]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m omega.diagnostics.search_accuracy",
                                description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, type=Path, nargs="+",
                   help="MuZero experiment dirs (open MiniHack rooms)")
    p.add_argument("--all-checkpoints", action="store_true",
                   help="every kept checkpoint (default: the newest)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=1_000_000, help="the first episode seed")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    try:
        data = [run(d, args.all_checkpoints, args.episodes, args.seed) for d in args.dir]
    except OmegaError as e:
        print(f"search_accuracy: error: {e}", file=sys.stderr)
        return 2
    print(f"{'run':>48} {'env steps':>9} {'success':>7} {'steps':>5} {'prior':>6} {'Q':>6} "
          f"{'search':>6} {'prior m':>7} {'search m':>8} {'Q spread':>8}")
    for run_data in data:
        for c in run_data["checkpoints"]:
            if not c["goal_in_view_steps"]:
                continue
            print(f"{Path(run_data['dir']).name[-48:]:>48} {c['env_steps']:>9} "
                  f"{c['success_rate']:>7.2f} {c['goal_in_view_steps']:>5} "
                  f"{c['prior_argmax_right']:>6.2f} {c['q_argmax_right']:>6.2f} "
                  f"{c['search_argmax_right']:>6.2f} {c['prior_mass_right']:>7.2f} "
                  f"{c['search_mass_right']:>8.2f} {c['q_spread']:>8.3f}")
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(data, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

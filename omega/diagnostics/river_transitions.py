"""What a trained MuZero agent does on the River tasks, and where its model is wrong.

Usage (from the repository root):

    python -m omega.diagnostics.river_transitions --dir experiments/rnx/river_narrow_seed0 \\
        --episodes 16 --json river_transitions.json

Plays ``--episodes`` evaluation episodes (episode seeds from ``--seed``, as ``omega eval``
seeds them; actions as the config's eval mode picks them, without exploration noise) and
sorts every transition by what it did, read off the game's message and the map:

- ``goal``: the step that reached the goal;
- ``fill``: a boulder pushed into the river filled a water square ("Now you can cross it!");
- ``push``: a boulder moved;
- ``water``: the agent stepped into the water and crawled out again;
- ``onto_crossing``: the agent stepped, dry, onto a square that was water (one a boulder
  filled): the move that crosses the river;
- ``far_bank``: any other step from east of the river;
- ``other``: the rest.

For each kind it reports how often it happened, the model's one-step Q of the action taken,
``r̂ + γ (1 − p_end) v̂(s')``, against the real one-step target ``r + γ v(s_next)`` (``r``
alone at an episode end), their mean absolute difference, and the prior and search policy
of the action taken; per episode, whether it succeeded, whether a boulder filled the
river, where the agent started, the easternmost column it reached and the river's westernmost
column (a failed episode that never came near the river failed far from it, not at the
crossing). Where the model's Q of a kind is far below the real target, the search cannot
see that move. Plain (not stochastic, not recurrent) MuZero only.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from nle import nethack

from omega.agents.muzero.networks import logits_to_scalar
from omega.diagnostics._common import hero_position, one_step_q, write_json
from omega.envs import EnvFactory
from omega.errors import OmegaError
from omega.training.evaluate import evaluation_params
from omega.training.experiment import load_experiment, load_trained_agent

KINDS = ("goal", "fill", "push", "water", "onto_crossing", "far_bank", "other")
# NetHack 3.6's S_pool in NLE's symbol table: the glyph of a water square.
WATER_GLYPH = nethack.GLYPH_CMAP_OFF + 41


def kind_of(message: str, pos: tuple[int, int], before: tuple[int, int],
            water: set[tuple[int, int]], success: bool) -> str:
    """The kind of one transition (see the module docstring). ``pos``/``before`` are the
    agent's (x, y) after and before it; ``water`` every square seen as water so far."""
    if success:
        return "goal"
    if "Now you can cross it" in message or "fills" in message:
        return "fill"
    if "boulder" in message and "in vain" not in message:
        return "push"
    if "crawl" in message or "Pheew" in message or "into the water" in message:
        return "water"
    if pos in water and pos != before:
        return "onto_crossing"
    if water and before[0] > max(x for x, _ in water):
        return "far_bank"
    return "other"


def run(exp: Path, episodes: int, seed: int) -> dict:
    cfg = load_experiment(exp)
    if cfg.agent_type != "muzero" or cfg.muzero.stochastic or cfg.model.recurrent:
        raise OmegaError(f"'{exp}' is not a plain MuZero experiment (agent_type muzero, "
                         "stochastic: false, model.recurrent: false); river_transitions "
                         "reads only those")
    if "River" not in cfg.env.id:
        raise OmegaError(f"'{exp}' trains on {cfg.env.id}; river_transitions reads the "
                         "MiniHack River tasks only")
    trained = load_trained_agent(exp, cfg=cfg)
    agent, state, ckpt = trained.agent, trained.state, trained.checkpoint
    actor = evaluation_params(agent, state)
    net, support, gamma = agent.network, cfg.muzero.support, cfg.muzero.gamma

    @jax.jit
    def one_step(obs):  # -> v(s), Q(s, a) for every a, prior [A]
        _, logits, value_logits, q = one_step_q(net, state.params, obs, support, gamma)
        return logits_to_scalar(value_logits, support)[0], q, jax.nn.softmax(logits[0])

    factory = EnvFactory.from_config(cfg.env)
    extra = tuple(k for k in ("glyphs", "message") if k not in factory.observation_keys)
    env = dataclasses.replace(factory, observation_keys=factory.observation_keys + extra)(0)
    rows: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in KINDS}
    per_episode = []
    rng = jax.random.PRNGKey(0)
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            water: set[tuple[int, int]] = set()
            start = hero_position(env)
            east = start[0]
            counts = dict.fromkeys(KINDS, 0)
            done, success, length, first = False, False, 0, np.ones(1, bool)
            while not done:
                ys, xs = np.nonzero(obs["glyphs"] == WATER_GLYPH)
                water.update(zip(xs.tolist(), ys.tolist(), strict=True))
                batch = {k: jnp.asarray(v[None]) for k, v in agent._filter(obs).items()}
                _, q, prior = one_step(batch)
                rng, key = jax.random.split(rng)
                out = agent.act(actor, batch, first, None, key, greedy=cfg.eval.greedy)
                first = np.zeros(1, bool)
                a = int(np.asarray(out.action)[0])
                before = hero_position(env)
                obs, reward, terminated, truncated, info = env.step(a)
                done, length = terminated or truncated, length + 1
                success = bool(done and info.get("success", False))
                next_value, _, _ = one_step(
                    {k: jnp.asarray(v[None]) for k, v in agent._filter(obs).items()})
                target = float(reward) + (0.0 if terminated else gamma * float(next_value))
                message = bytes(obs["message"]).rstrip(b"\0").decode(errors="replace")
                kind = kind_of(message, hero_position(env), before, water, success)
                counts[kind] += 1
                if not done:
                    east = max(east, hero_position(env)[0])
                rows[kind].append((float(q[a]), target, float(prior[a]),
                                   float(np.asarray(out.extras["search_policy"])[0, a])))
            per_episode.append({"seed": seed + ep, "success": success, "length": length,
                                "filled": counts["fill"] > 0, "counts": counts,
                                "start": list(start), "east_x": east,
                                "river_x": min((x for x, _ in water), default=None)})
    finally:
        env.close()
    kinds = _summarize_kinds(rows)
    successes = np.asarray([e["success"] for e in per_episode])
    filled = np.asarray([e["filled"] for e in per_episode])
    return {"dir": str(exp), "checkpoint": str(ckpt), "env_id": cfg.env.id,
            "env_steps": int(ckpt.stem.split("_")[-1]), "seeds": [seed, seed + episodes - 1],
            "success_rate": float(successes.mean()), "filled_rate": float(filled.mean()),
            "kinds": {k: {n: float(v) if n != "count" else v for n, v in d.items()}
                      for k, d in kinds.items()},
            "episodes": per_episode}


def _summarize_kinds(rows: dict[str, list[tuple[float, float, float, float]]]) -> dict:
    """Per kind: its count and, if any, the means of the (model Q, real target, prior, search
    policy) rows and the mean absolute difference of the first two."""
    kinds = {}
    for k, xs in rows.items():
        x = np.asarray(xs, np.float64).reshape(-1, 4)
        kinds[k] = {"count": len(x),
                    **({"model_q": x[:, 0].mean(), "real_target": x[:, 1].mean(),
                        "abs_error": np.abs(x[:, 0] - x[:, 1]).mean(),
                        "prior_taken": x[:, 2].mean(), "search_policy_taken": x[:, 3].mean()}
                       if len(x) else {})}
    return kinds



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m omega.diagnostics.river_transitions",
                                description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, type=Path, help="a MuZero experiment dir (River)")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--seed", type=int, default=1_000_000, help="the first episode seed")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    try:
        data = run(args.dir, args.episodes, args.seed)
    except OmegaError as e:
        print(f"river_transitions: error: {e}", file=sys.stderr)
        return 2
    print(f"{data['env_id']}, {data['checkpoint']}: {args.episodes} episodes from seed "
          f"{args.seed}, success {data['success_rate']:.2f}, a boulder filled the river in "
          f"{data['filled_rate']:.2f}")
    print(f"{'kind':>14} {'count':>6} {'model Q':>8} {'real':>6} {'|error|':>8} "
          f"{'prior':>6} {'search':>7}")
    for k, d in data["kinds"].items():
        if d["count"]:
            print(f"{k:>14} {d['count']:>6} {d['model_q']:>8.3f} {d['real_target']:>6.3f} "
                  f"{d['abs_error']:>8.3f} {d['prior_taken']:>6.2f} "
                  f"{d['search_policy_taken']:>7.2f}")
        else:
            print(f"{k:>14} {0:>6}")
    if args.json:
        write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())

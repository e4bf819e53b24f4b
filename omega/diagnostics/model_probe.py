"""What a trained MuZero model predicts along a scripted episode, against what happens.

Usage (from the repository root):

    python -m omega.diagnostics.model_probe --dir experiments/rn/base/river_narrow_seed0 \\
        --seed 1000000 --actions E,E,E,E,E,S,E,E,E,E --json probe.json

Plays episode seed ``--seed`` (as ``omega eval`` seeds its episodes) with the given actions
(the env's action names, e.g. ``N``, ``E``, ``NE``). At every step it prints, from the real
observation: the network's value v(s), its prior, and the model's one-step Q(s, a) =
r̂ + γ (1 − p_end) v̂(s') for every action; then, after the scripted action is taken, the
real one-step target r + γ v(s_next) (r alone at an episode end) and, unrolled from the
first observation along the actions so far, the model's value k steps deep. Where the
model's Q of the taken action is far from the real target, the search cannot see what that
action does. Writes the same numbers as JSON. Plain (not stochastic, not recurrent) MuZero
only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from omega.agents.muzero.networks import MuZeroNetwork, logits_to_scalar
from omega.diagnostics._common import one_step_q, write_json
from omega.envs import EnvFactory
from omega.errors import OmegaError
from omega.training.experiment import load_experiment, load_trained_agent


def probe(exp: Path, seed: int, actions: list[str], checkpoint: Path | None = None) -> dict:
    cfg = load_experiment(exp)
    if cfg.agent_type != "muzero" or cfg.muzero.stochastic or cfg.model.recurrent:
        raise OmegaError(f"'{exp}' is not a plain MuZero experiment (agent_type muzero, "
                         "stochastic: false, model.recurrent: false); model_probe reads "
                         "only those")
    trained = load_trained_agent(exp, checkpoint, cfg=cfg)
    agent, ckpt = trained.agent, trained.checkpoint
    params, net, support = trained.state.params, agent.network, cfg.muzero.support
    gamma = cfg.muzero.gamma
    env = EnvFactory.from_config(cfg.env)(0)
    try:
        names = [a.name for a in env.unwrapped.actions]
        unknown = [a for a in actions if a not in names]
        if unknown:
            raise OmegaError(f"unknown action(s) {', '.join(unknown)}; this env's actions are "
                             f"{', '.join(names)}")

        @jax.jit
        def evaluate(obs):  # one observation -> latent [1, D], prior [A], v, Q [A]
            latent, logits, value_logits, q = one_step_q(net, params, obs, support, gamma)
            return (latent, jax.nn.softmax(logits[0]),
                    logits_to_scalar(value_logits, support)[0], q)

        @jax.jit
        def unroll(latent, action):  # the model's next latent and its value
            next_latent, _, _, _, value_logits = net.apply(
                params, latent, action[None], method=MuZeroNetwork.recurrent_inference)
            return next_latent, logits_to_scalar(value_logits, support)[0]

        def batch(o):
            return {k: jnp.asarray(v[None]) for k, v in agent._filter(o).items()}

        obs, _ = env.reset(seed=seed)
        latent, prior, value, q = evaluate(batch(obs))
        model_latent = latent
        steps = []
        for t, name in enumerate(actions):
            a = names.index(name)
            obs, reward, terminated, truncated, _ = env.step(a)
            model_latent, model_value = unroll(model_latent, jnp.int32(a))
            next_latent, next_prior, next_value, next_q = evaluate(batch(obs))
            target = float(reward) + (0.0 if terminated else gamma * float(next_value))
            steps.append({"t": t, "action": name, "value": float(value),
                          "prior": np.asarray(prior).round(4).tolist(),
                          "model_q": dict(zip(names, np.asarray(q).round(4).tolist(), strict=True)),
                          "reward": float(reward), "real_target": target,
                          "model_value_unrolled": float(model_value),
                          "terminated": bool(terminated), "truncated": bool(truncated)})
            latent, prior, value, q = next_latent, next_prior, next_value, next_q
            if terminated or truncated:
                break
    finally:
        env.close()
    return {"dir": str(exp), "checkpoint": str(ckpt), "env_id": cfg.env.id, "seed": seed,
            "gamma": gamma, "actions": names, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m omega.diagnostics.model_probe",
                                description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, type=Path, help="a MuZero experiment dir")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the newest")
    p.add_argument("--seed", type=int, default=1_000_000, help="the episode seed")
    p.add_argument("--actions", required=True, help="comma-separated action names, e.g. E,E,NE")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    try:
        data = probe(args.dir, args.seed, args.actions.split(","), args.checkpoint)
    except OmegaError as e:
        print(f"model_probe: error: {e}", file=sys.stderr)
        return 2
    names = data["actions"]
    print(f"{data['env_id']}, episode seed {data['seed']}, {data['checkpoint']}")
    print(f"{'t':>3} {'action':>6} {'v(s)':>6}  model Q(s, a) " + " ".join(f"{n:>5}" for n in names)
          + f"  {'r+γv(s′)':>9} {'model v, unrolled':>18}")
    for s in data["steps"]:
        qs = " ".join(f"{s['model_q'][n]:>5.2f}" for n in names)
        print(f"{s['t']:>3} {s['action']:>6} {s['value']:>6.3f}                {qs}  "
              f"{s['real_target']:>9.3f} {s['model_value_unrolled']:>18.3f}")
    if args.json:
        write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())

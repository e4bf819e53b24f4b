"""Where recurrent MuZero's learning signal on the memory task gets lost (Omega-Memory-K6-v0).

The replay is filled once with scripted play that carries no memory: walk east down the
corridor (with random steps back or into the wall), then take a random exit. At the corridor's
end ("the junction") the exit that pays depends on the monster seen 6+ steps earlier, so a
reward model can only be right there if the encoder's memory holds the monster. Accuracy
is over the held-out batch's junction rows; a reward model that predicts one sign everywhere
scores the share of rows with that sign, so compare against the printed share, not only 0.5. Each variant
below trains fresh params on that same replay for a fixed number of updates and reports, on a
held-out batch, how often the model gets the junction right:

* ``label``: a linear probe on the MuZero latent at the junction (representation with burn-in
  and gradient through it) predicts the monster. Shows the memory path itself can learn.
* ``junction_reward_<head>``: only the dynamics' reward for the taken exit, trained on junction
  rows only. Accuracy = the predicted reward has the sign of the real one.
* ``all_rows_reward_per_action``: the same loss averaged over every sampled row, as MuZero
  does (most rows have reward 0): the junction rows are ~10% of the signal.
* ``muzero_<head>``: the agent's own train step (all its losses, K-step unroll).

Usage:
  python -m omega.diagnostics.memory_diagnosis --out benchmarks/results/memory_diagnosis.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml
from nle import nethack

import omega.envs as oe
from omega.agents import build_agent
from omega.agents.base import Trajectory
from omega.agents.muzero.networks import MuZeroNetwork, logits_to_scalar, scalar_to_two_hot
from omega.config import config_from_dict, config_to_dict, load_config
from omega.envs.tasks import ACTION_INDEX, MEMORY_MONSTERS
from omega.training.loop import probe_env

EAST, UP, DOWN, WEST = (ACTION_INDEX[d] for d in ((1, 0), (0, -1), (0, 1), (-1, 0)))


def monster_glyph(name: str) -> int:
    return nethack.GLYPH_MON_OFF + next(i for i in range(nethack.NUMMONS)
                                        if nethack.permonst(i).mname == name)


def fill_replay(agent, state, cfg, iterations: int, wander: float, seed: int) -> None:
    """Scripted, memory-free play into ``agent.replay`` (acting extras from ``agent.act``)."""
    n, t_len = cfg.env.num_envs, cfg.muzero.rollout_length
    envs = [oe.make(cfg.env.id, observation_keys=cfg.env.observation.keys,
                    crop_size=cfg.env.observation.crop_size) for _ in range(n)]
    k = envs[0].unwrapped.k  # corridor length: the junction is k steps east of the start
    keys = list(agent._filter({key: None for key in cfg.env.observation.keys}))
    rng = np.random.default_rng(seed)
    cur = [env.reset()[0] for env in envs]
    pos = np.zeros(n, int)
    first = np.ones(n, bool)
    carry = agent.initial_carry(n)

    def stack(obs_list):
        return {key: np.stack([o[key] for o in obs_list]) for key in keys}

    for it in range(iterations):
        obs_seq, first_seq, acts, rews, terms, extras, init = [stack(cur)], [first], [], [], [], [], carry
        for t in range(t_len):
            out = agent.act(agent.params(state), stack(cur), first, carry,
                            jax.random.PRNGKey(it * 1000 + t))
            carry = out.carry
            extras.append(jax.device_get(out.extras))
            action, reward = np.zeros(n, int), np.zeros(n, np.float32)
            done, next_first = np.zeros(n, bool), np.zeros(n, bool)
            for i, env in enumerate(envs):
                if pos[i] >= k:
                    action[i] = UP if rng.random() < 0.5 else DOWN
                elif rng.random() < wander:
                    action[i] = WEST if pos[i] > 0 and rng.random() < 0.5 else UP  # UP: a wall
                else:
                    action[i] = EAST
                obs, reward[i], term, trunc, _ = env.step(action[i])
                pos[i] += int(action[i] == EAST) - int(action[i] == WEST)
                if term or trunc:
                    done[i], next_first[i] = term, True
                    obs, _ = env.reset()
                    pos[i] = 0
                cur[i] = obs
            first = next_first
            acts.append(action)
            rews.append(reward)
            terms.append(done)
            obs_seq.append(stack(cur))
            first_seq.append(first)
        traj = Trajectory(
            obs={key: np.stack([o[key] for o in obs_seq]) for key in keys},
            first=np.stack(first_seq), action=np.stack(acts), reward=np.stack(rews),
            terminated=np.stack(terms), truncated=np.zeros((t_len, n), bool),
            truncation_value=np.zeros((t_len, n), np.float32),
            extras={key: np.stack([e[key] for e in extras]) for key in extras[0]},
            initial_carry=init)
        state, _ = agent.learn(state, traj, jax.random.PRNGKey(it))
    for env in envs:
        env.close()


def device_batch(agent, batch):
    if not agent.cfg.fresh_bootstrap:
        batch = batch._replace(bootstrap_obs={}, memory=batch.memory._replace(
            bootstrap_memory=None, bootstrap_first=None))
    return batch._replace(index=())


def junction_rows(batch, newt: int, lichen: int) -> tuple[np.ndarray, np.ndarray]:
    """(monster label [B]: 1 newt, 0 lichen; mask [B]: the start is the junction, its exit
    reward is known and the monster was seen within the burn-in)."""
    glyphs, live = batch.memory.burn_in_obs["glyphs_crop"], batch.memory.burn_in_mask > 0
    seen_newt = ((glyphs == newt).any((2, 3)) & live).any(1)
    seen_lichen = ((glyphs == lichen).any((2, 3)) & live).any(1)
    return seen_newt.astype(np.int32), (seen_newt ^ seen_lichen) & (batch.reward_target[:, 0] != 0)


def run_variant(name: str, agent, params0, steps: int, held, held_label, held_mask,
                newt: int, lichen: int, batch_size: int, eval_every: int) -> dict:
    """Trains fresh params with one variant's loss; junction accuracy on ``held`` over time."""
    s = agent.cfg.support
    probe = nn.Dense(2)
    params = {"net": params0,
              "probe": probe.init(jax.random.PRNGKey(0), jnp.zeros((1, agent.cfg.latent_dim)))}

    def start_latent(net, batch):
        memory = agent._start_memory(net, batch.memory)
        latent, _, _ = agent.network.apply(net, batch.obs, batch.memory.first, memory,
                                           method=MuZeroNetwork.initial_inference)
        return latent

    def junction_scores(p, batch, label):
        """[B] 1 where the junction prediction is right."""
        latent = start_latent(p["net"], batch)
        if name == "label":
            return (probe.apply(p["probe"], latent).argmax(-1) == label).astype(jnp.float32)
        reward_logits = agent.network.apply(p["net"], latent, batch.action[:, 0],
                                            method=MuZeroNetwork.recurrent_inference)[1]
        predicted = logits_to_scalar(reward_logits, s)
        return (jnp.sign(predicted) == jnp.sign(batch.reward_target[:, 0])).astype(jnp.float32)

    def loss_fn(p, batch, label, weight):
        latent = start_latent(p["net"], batch)
        if name == "label":
            ce = optax.softmax_cross_entropy_with_integer_labels(
                probe.apply(p["probe"], latent), label)
        else:
            reward_logits = agent.network.apply(p["net"], latent, batch.action[:, 0],
                                                method=MuZeroNetwork.recurrent_inference)[1]
            ce = optax.softmax_cross_entropy(
                reward_logits, scalar_to_two_hot(batch.reward_target[:, 0], s))
        return (ce * weight).sum() / jnp.maximum(weight.sum(), 1.0)

    optimizer = optax.adam(agent.cfg.learning_rate)
    opt_state = optimizer.init(params)

    @jax.jit
    def update(p, o, batch, label, weight):
        grads = jax.grad(loss_fn)(p, batch, label, weight)
        updates, o = optimizer.update(grads, o, p)
        return optax.apply_updates(p, updates), o

    score = jax.jit(junction_scores)
    net, net_opt = params0, agent.optimizer.init(params0)
    curve = []
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            p = params if not name.startswith("muzero") else {"net": net, "probe": None}
            scores = np.asarray(score(p, device_batch(agent, held), jnp.asarray(held_label)))
            curve.append([step, float(scores[held_mask].mean())])
        if step == steps:
            break
        batch = agent.replay.sample(batch_size)
        if name.startswith("muzero"):
            index = batch.index
            net, net_opt, _, priority = agent._train_step(net, net_opt, jnp.asarray(step),
                                                          device_batch(agent, batch))
            agent.replay.update_priorities(index, np.asarray(priority))
            continue
        label, mask = junction_rows(batch, newt, lichen)
        weight = np.ones(len(mask), np.float32) if name.startswith("all_rows") else mask
        params, opt_state = update(params, opt_state, device_batch(agent, batch),
                                   jnp.asarray(label), jnp.asarray(weight, jnp.float32))
    return {"variant": name, "updates": steps, "final_accuracy": curve[-1][1],
            "curve": curve}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m omega.diagnostics.memory_diagnosis",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/muzero/memory_k6.yaml")
    parser.add_argument("--burn-in", type=int, default=16)
    parser.add_argument("--fill-iterations", type=int, default=60,
                        help="rollouts of rollout_length x num_envs scripted steps")
    parser.add_argument("--wander", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=800, help="updates per probe variant")
    parser.add_argument("--muzero-steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=256, help="for the probe variants")
    parser.add_argument("--variants", nargs="*", default=[
        "label", "junction_reward_shared", "junction_reward_per_action",
        "all_rows_reward_per_action", "muzero_shared", "muzero_per_action"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="muzero config overrides for every variant, e.g. "
                             "reward_loss_weight=4 priority_reward_weight=2 (YAML values)")
    parser.add_argument("--out", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    args = parser.parse_args(argv)

    base = config_to_dict(load_config(args.config))
    base["muzero"].update(burn_in_steps=args.burn_in, burn_in_gradient=True, replay_ratio=0.0)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        base["muzero"][key] = yaml.safe_load(value)
    newt, lichen = monster_glyph(MEMORY_MONSTERS[0]), monster_glyph(MEMORY_MONSTERS[1])
    agents = {}
    for head in ("shared", "per_action"):
        cfg = config_from_dict({**base, "muzero": {**base["muzero"], "reward_head": head}})
        obs_example, num_actions = probe_env(cfg)
        agent, _ = build_agent(cfg, num_actions)
        state = agent.init(jax.random.PRNGKey(args.seed), obs_example, cfg.env.num_envs)
        agents[head] = (agent, state)
    filler, filler_state = agents["shared"]
    t0 = time.time()
    fill_replay(filler, filler_state, cfg, args.fill_iterations, args.wander, args.seed)
    replay = filler.replay
    priorities = replay.data["priority"].copy()
    held = replay.sample(512)
    held_label, held_mask = junction_rows(held, newt, lichen)
    positive_share = float((held.reward_target[held_mask, 0] > 0).mean())
    print(f"replay: {len(replay)} scripted steps in {time.time() - t0:.0f} s; held-out batch "
          f"of 512 has {int(held_mask.sum())} junction rows, {positive_share:.2f} of them paying "
          f"+1 (a reward model predicting one sign everywhere scores that or 1 minus it)",
          flush=True)

    results = []
    print(f"{'variant':<30} {'updates':>7} {'junction accuracy (0.5 = chance)':>34}")
    for name in args.variants:
        head = "per_action" if name.endswith("per_action") else "shared"
        agent, state = agents[head]
        agent.replay = replay
        is_muzero = name.startswith("muzero")
        if is_muzero:  # each run starts from the priorities the filled replay had
            replay.data["priority"][...] = priorities
        t0 = time.time()
        result = run_variant(name, agent, state.params,
                             args.muzero_steps if is_muzero else args.steps, held, held_label,
                             held_mask, newt, lichen,
                             agent.cfg.batch_size if is_muzero else args.batch_size,
                             eval_every=100)
        result["wall_s"] = round(time.time() - t0, 1)
        results.append(result)
        trace = " ".join(f"{a:.2f}" for _, a in result["curve"][::4])
        print(f"{name:<30} {result['updates']:>7} {result['final_accuracy']:>8.2f}   ({trace})",
              flush=True)
    if args.out:
        out = {"config": args.config, "burn_in_steps": args.burn_in,
               "muzero_overrides": args.set,
               "fill_iterations": args.fill_iterations, "wander": args.wander,
               "junction_rows_held": int(held_mask.sum()),
               "junction_rows_held_positive_share": positive_share, "results": results,
               "command": " ".join(["python", "-m", "omega.diagnostics.memory_diagnosis"] + argv)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

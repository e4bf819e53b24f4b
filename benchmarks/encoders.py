"""Encoder cost: PPO update and act throughput (observations per second) per encoder variant.

Usage (from the repository root):

    python benchmarks/encoders.py --out benchmarks/results/encoders.json

Each variant is the PPO agent of ``configs/ppo/room_random_15x15.yaml`` with only ``model:``
changed. Observations are real MiniHack observations (one rollout of random actions, reused),
so glyph statistics are realistic. "update obs/s" is rollout samples (T x N = 1024) per second
of one full PPO update (4 epochs x 4 minibatches), after compilation; "act obs/s" is envs per
second of one jitted ``act`` call for 16 envs. Same process, same machine state, one after
another, so the ratios between rows are what to read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import jax

from omega.agents import build_agent
from omega.config import load_config
from omega.envs import EnvFactory
from omega.envs.vector import VectorEnv
from omega.models.encoders import EncoderConfig
from omega.training.actor import Actor
from omega.training.loop import param_count, probe_env

ROOT = Path(__file__).resolve().parents[1]

PERCEIVER = dict(kind="perceiver", embed_dim=32, num_latents=8, latent_dim=32, num_heads=2,
                 num_self_attention_blocks=1, mlp_hidden=128, output_dim=128)
VARIANTS = {
    "plain MLP, 9x9 crop (shipped)": dict(kind="plain", map="crop", embed_dim=16,
                                          cnn_channels=(), mlp_hidden=256, output_dim=128),
    "plain CNN 16-16, 9x9 crop": dict(kind="plain", map="crop", embed_dim=16,
                                      cnn_channels=(16, 16), mlp_hidden=256, output_dim=128),
    "perceiver, 9x9 crop (shipped)": dict(PERCEIVER, map="crop"),
    "perceiver, full 21x79 map": dict(PERCEIVER, map="full"),
    "perceiver, crop + full map": dict(PERCEIVER, map="both"),
}


def measure(cfg, name: str, model: dict, trajectory, obs_example, num_actions, repeats: int):
    cfg = dataclasses.replace(cfg, model=EncoderConfig(**model))
    agent, _ = build_agent(cfg, num_actions)
    state = agent.init(jax.random.PRNGKey(0), obs_example, cfg.env.num_envs)
    key = jax.random.PRNGKey(1)
    new_state, _ = agent.learn(state, trajectory, key)
    jax.block_until_ready(new_state)
    t0 = time.perf_counter()
    for _ in range(repeats):
        new_state, _ = agent.learn(state, trajectory, key)
        jax.block_until_ready(new_state)
    update_s = (time.perf_counter() - t0) / repeats
    obs = {k: v[0] for k, v in trajectory.obs.items()}
    first = trajectory.first[0]
    carry = agent.initial_carry(cfg.env.num_envs)
    params = agent.params(state)
    jax.block_until_ready(agent.act(params, obs, first, carry, key).action)
    t0 = time.perf_counter()
    for _ in range(50):
        jax.block_until_ready(agent.act(params, obs, first, carry, key).action)
    act_s = (time.perf_counter() - t0) / 50
    samples = trajectory.action.size
    return {"variant": name, "model": model, "params": param_count(params),
            "update_s": update_s, "update_obs_per_s": samples / update_s,
            "act_ms_16_envs": act_s * 1e3, "act_obs_per_s": cfg.env.num_envs / act_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs/ppo/room_random_15x15.yaml")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    cfg = load_config(args.config)
    # Every view the variants read, so one rollout serves them all.
    cfg = dataclasses.replace(cfg, env=dataclasses.replace(
        cfg.env, observation=dataclasses.replace(
            cfg.env.observation, keys=("glyphs", "glyphs_crop", "blstats"))))
    obs_example, num_actions = probe_env(cfg)
    agent, length = build_agent(cfg, num_actions)
    state = agent.init(jax.random.PRNGKey(0), obs_example, cfg.env.num_envs)
    venv = VectorEnv(EnvFactory.from_config(cfg.env), cfg.env.num_envs, cfg.env.num_workers)
    actor = Actor(agent, venv, jax.random.PRNGKey(2))
    try:
        trajectory, _ = actor.rollout(agent.params(state), length)
    finally:
        actor.close()
    rows = []
    for name, model in VARIANTS.items():
        rows.append(measure(cfg, name, model, trajectory, obs_example, num_actions, args.repeats))
        r = rows[-1]
        print(f"{name:32s} params {r['params']:>9,}  update {r['update_obs_per_s']:>7,.0f} obs/s "
              f"({r['update_s']:.2f} s / {trajectory.action.size})  act {r['act_obs_per_s']:>7,.0f} "
              f"obs/s", flush=True)
    print("\n| encoder | parameters | PPO update obs/s | act obs/s (16 envs) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['params']:,} | {r['update_obs_per_s']:,.0f} "
              f"| {r['act_obs_per_s']:,.0f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "config": str(args.config), "rollout_samples": int(trajectory.action.size),
            "jax_backend": jax.default_backend(), "platform": platform.platform(),
            "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

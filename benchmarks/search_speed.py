"""Search speed: simulations per second of the MuZero agent's acting call against a bare mctx call.

Usage (from the repository root):

    python benchmarks/search_speed.py --out benchmarks/results/muzero_search_speed.json

For each search kind (pUCT ``mctx.muzero_policy``, Gumbel ``mctx.gumbel_muzero_policy``) and
simulation count (16, 32, 64), on the network of ``configs/muzero/room_5x5.yaml`` and a batch
of 16 real MiniHack observations:

- "agent" is ``agent.act`` as the actor calls it: numpy observations in, the jitted
  representation + search, actions / search policies / root values back on the host;
- "bare" is one jitted function of the same params and device-resident observations that
  runs the representation and calls the mctx policy directly, nothing converted.

Timings alternate the two call by call (median of ``--repeats`` calls each, after
compiling), so machine noise hits both alike. Simulations/s = batch x simulations / seconds per call.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import mctx
import numpy as np

from omega.agents import build_agent
from omega.agents.muzero.networks import MuZeroNetwork, logits_to_scalar
from omega.config import load_config
from omega.envs import EnvFactory

ROOT = Path(__file__).resolve().parents[1]


def observations(cfg, n: int) -> dict[str, np.ndarray]:
    env = EnvFactory.from_config(cfg.env)(0)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    out = []
    for _ in range(n):
        out.append(obs)
        obs, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        if term or trunc:
            obs, _ = env.reset()
    env.close()
    return {k: np.stack([o[k] for o in out]) for k in out[0]}, env.action_space.n


def act_on_host(agent, params, obs, first, key) -> None:
    out = agent.act(params, obs, first, None, key)
    jax.device_get((out.action, out.extras))


def call_bare(bare, params, obs, key) -> None:
    jax.block_until_ready(bare(params, obs, key))


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs/muzero/room_5x5.yaml")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--simulations", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    base = load_config(args.config)
    obs_np, num_actions = observations(base, args.batch)
    rows = []
    for search in ("muzero", "gumbel"):
        for sims in args.simulations:
            cfg = dataclasses.replace(base, muzero=dataclasses.replace(
                base.muzero, search=search, num_simulations=sims))
            agent, _ = build_agent(cfg, num_actions)
            state = agent.init(jax.random.PRNGKey(0), obs_np, args.batch)
            params = agent.params(state)
            filtered = agent._filter(obs_np)
            obs_dev = jax.device_put(filtered)
            mz = cfg.muzero

            @jax.jit
            def bare(params, obs, rng, mz=mz, agent=agent):
                latent, logits, value_logits = agent.network.apply(
                    params.net, obs, method=MuZeroNetwork.initial_inference)
                root = mctx.RootFnOutput(prior_logits=logits,
                                         value=logits_to_scalar(value_logits, mz.support),
                                         embedding=latent)
                if mz.search == "gumbel":
                    return mctx.gumbel_muzero_policy(
                        params.net, rng, root, agent._recurrent_fn, mz.num_simulations,
                        max_num_considered_actions=mz.max_considered_actions,
                        gumbel_scale=mz.gumbel_scale)
                return mctx.muzero_policy(
                    params.net, rng, root, agent._recurrent_fn, mz.num_simulations,
                    dirichlet_fraction=mz.dirichlet_fraction,
                    dirichlet_alpha=mz.dirichlet_alpha, pb_c_init=mz.pb_c_init,
                    pb_c_base=mz.pb_c_base, temperature=params.temperature)

            first = np.ones(args.batch, bool)
            key = jax.random.PRNGKey(1)

            run_agent = functools.partial(act_on_host, agent, params, obs_np, first, key)
            run_bare = functools.partial(call_bare, bare, params, obs_dev, key)

            run_agent(), run_bare()  # compile
            agent_t, bare_t = [], []
            for _ in range(args.repeats):  # call by call, so machine noise hits both alike
                agent_t.append(median_time(run_agent, 1))
                bare_t.append(median_time(run_bare, 1))
            a, b = statistics.median(agent_t), statistics.median(bare_t)
            rows.append({"search": search, "simulations": sims, "batch": args.batch,
                         "agent_sims_per_s": args.batch * sims / a,
                         "bare_sims_per_s": args.batch * sims / b, "ratio": b / a,
                         "agent_ms_per_call": 1e3 * a, "bare_ms_per_call": 1e3 * b})
            r = rows[-1]
            print(f"{search:>7} {sims:>4} sims: agent {r['agent_sims_per_s']:>9,.0f} sims/s "
                  f"({r['agent_ms_per_call']:.1f} ms)  bare {r['bare_sims_per_s']:>9,.0f} sims/s "
                  f"({r['bare_ms_per_call']:.1f} ms)  ratio {r['ratio']:.2f}", flush=True)

    print("\n| search | simulations | batch | agent sims/s | bare mctx sims/s | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['search']} | {r['simulations']} | {r['batch']} | {r['agent_sims_per_s']:,.0f} "
              f"| {r['bare_sims_per_s']:,.0f} | {r['ratio']:.2f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "config": str(args.config.relative_to(ROOT) if args.config.is_absolute() else
                          args.config),
            "jax_backend": jax.default_backend(), "machine": {"cpus": __import__("os").cpu_count(),
                                                           "platform": platform.platform()},
            "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

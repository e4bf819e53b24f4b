"""Run by tests/test_data_parallel.py in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=2 (JAX reads it at import): PPO and MuZero
learn steps split over 2 devices against the same steps on 1 device, where the data lives,
and the error for a batch the devices do not divide. Prints one JSON line."""

import json
import sys

import jax
import numpy as np

from omega.agents.base import Trajectory
from omega.agents.muzero import MuZeroConfig, make_muzero_agent
from omega.agents.parallel import DataParallel
from omega.agents.ppo import PPOConfig, make_ppo_agent
from omega.models.encoders import EncoderConfig

T, N, A = 4, 8, 5
ENC = EncoderConfig(kind="plain", map="crop", embed_dim=8, glyph_features=False,
                    cnn_channels=(), mlp_hidden=32, blstats_hidden=8, output_dim=16)
CFG = PPOConfig(rollout_length=T, num_epochs=2, num_minibatches=2)


def trajectory(rng: np.random.Generator) -> Trajectory:
    obs = {"glyphs_crop": rng.integers(2300, 2400, (T + 1, N, 5, 5)).astype(np.int16),
           "blstats": rng.normal(size=(T + 1, N, 27)).astype(np.float32)}
    first = rng.random((T + 1, N)) < 0.2
    return Trajectory(
        obs=obs, first=first, action=rng.integers(0, A, (T, N)).astype(np.int32),
        reward=rng.normal(size=(T, N)).astype(np.float32), terminated=first[1:],
        truncated=np.zeros((T, N), bool), truncation_value=np.zeros((T, N), np.float32),
        extras={"log_prob": np.full((T, N), -np.log(A), np.float32),
                "value": rng.normal(size=(T, N)).astype(np.float32)},
        initial_carry=None)


def ppo_step(devices):
    """Two learn steps (the second starts from the first's replicated output state)."""
    agent = make_ppo_agent(CFG, ENC, A, total_updates=10)
    if devices is not None:
        agent.use_data_parallel(DataParallel(devices))
    traj = trajectory(np.random.default_rng(0))
    init = agent.init(jax.random.PRNGKey(0), {k: v[0] for k, v in traj.obs.items()}, N)
    state, _ = agent.learn(init, traj, jax.random.PRNGKey(1))
    state, metrics = agent.learn(state, traj, jax.random.PRNGKey(2))
    return agent, traj, init, state, metrics


MZ = MuZeroConfig(latent_dim=8, dynamics_hidden=8, prediction_hidden=8, num_simulations=2,
                 rollout_length=T, warmup_steps=1, batch_size=8, replay_ratio=0.5,
                 unroll_steps=2, td_steps=2, support_size=5)


def muzero_step(devices):
    """One learn call: the trajectory goes to the replay, then 2 train steps on sampled
    batches (the same ones with and without devices: sampling follows the key)."""
    agent = make_muzero_agent(MZ, ENC, A, total_env_steps=1000)
    if devices is not None:
        agent.use_data_parallel(DataParallel(devices))
    rng = np.random.default_rng(1)
    traj = trajectory(rng)
    policy = rng.random((T, N, A)).astype(np.float32)
    traj = traj._replace(extras={"search_policy": policy / policy.sum(-1, keepdims=True),
                                 "root_value": np.zeros((T, N), np.float32)})
    init = agent.init(jax.random.PRNGKey(0), {k: v[0] for k, v in traj.obs.items()}, N)
    state, metrics = agent.learn(init, traj, jax.random.PRNGKey(1))
    return init, state, metrics


def max_abs_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                               strict=True))


def main() -> None:
    # Tiny programs: XLA's optimisation passes would cost more than they save.
    jax.config.update("jax_disable_most_optimizations", True)
    devices = jax.devices("cpu")
    out = {"num_devices": len(devices)}
    _, _, init, ref, ref_metrics = ppo_step(None)  # the single-device update
    agent, traj, _, two, two_metrics = ppo_step(devices[:2])
    out["ppo_diff_2_devices"] = max_abs_diff(ref, two)
    out["ppo_update_size"] = max_abs_diff(ref.params, init.params)
    out["ppo_loss_diff"] = abs(float(ref_metrics["policy_loss"]) - float(two_metrics["policy_loss"]))
    mz_init, mz_ref, mz_metrics = muzero_step(None)
    _, mz_two, _ = muzero_step(devices[:2])
    out["muzero_train_steps"] = int(mz_ref.train_steps)
    out["muzero_diff_2_devices"] = max_abs_diff(mz_ref.params, mz_two.params)
    out["muzero_update_size"] = max_abs_diff(mz_ref.params, mz_init.params)
    # Where the data lives: the trajectory split over the devices, the params on all of them.
    dp = agent.data_parallel
    traj = traj._replace(obs={k: v for k, v in traj.obs.items() if k in ENC.used_keys()})
    sharded = dp.shard(traj, axis=1)
    out["shard_shapes"] = sorted(list(s.data.shape) for s in sharded.action.addressable_shards)
    out["shard_devices"] = len({s.device for s in sharded.action.addressable_shards})
    leaf = jax.tree_util.tree_leaves(two.params)[0]
    out["params_replicated"] = bool(leaf.sharding.is_fully_replicated)
    out["params_devices"] = len(leaf.sharding.device_set)
    # The compiled update splits the work: each device computes on its half of every
    # minibatch and the gradients are all-reduced.
    hlo = agent._learn.lower(two, sharded, dp.replicate(jax.random.PRNGKey(3))).compile()
    out["all_reduce"] = "all-reduce" in hlo.as_text()
    # Sizes the devices do not divide are refused with a clear message.
    bad = make_ppo_agent(CFG, ENC, A, total_updates=1)
    bad.use_data_parallel(DataParallel(devices[:2]))
    try:
        bad.init(jax.random.PRNGKey(0), {k: v[0] for k, v in traj.obs.items()}, 3)
        out["indivisible_error"] = None
    except Exception as e:  # noqa: BLE001
        out["indivisible_error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())

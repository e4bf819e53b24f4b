"""Stochastic MuZero: straight-through codes, chance-node search, next-observation replay,
and a model that captures a coin flip that plain MuZero can only average."""

import csv
import json

import chex
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest
from test_muzero import TINY, bandit_obs

from omega.agents.base import Trajectory
from omega.agents.muzero import MuZeroConfig, make_muzero_agent
from omega.agents.muzero import stochastic as smz
from omega.agents.muzero.networks import logits_to_scalar
from omega.agents.muzero.search import run_stochastic_search
from omega.cli.main import main
from omega.config import config_from_dict
from omega.errors import ConfigError
from omega.replay import ReplayBuffer

pytestmark = pytest.mark.usefixtures("fast_compiles")


def test_straight_through_one_hot_forward_and_gradient():
    logits = jnp.array([[0.3, 1.2, -0.5], [2.0, 0.1, 0.0]])
    code = smz.straight_through_one_hot(logits)
    np.testing.assert_array_equal(code, [[0, 1, 0], [1, 0, 0]])
    w = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]])
    grad = jax.grad(lambda x: jnp.sum(w * smz.straight_through_one_hot(x)))(logits)
    # Copied unchanged: the argmax alone would pass no gradient, a softmax a vanishing one.
    np.testing.assert_allclose(grad, w)
    saturated = jnp.array([[30.0, 0.0, 0.0]])
    grad = jax.grad(lambda x: jnp.sum(w[:1] * smz.straight_through_one_hot(x)))(saturated)
    np.testing.assert_allclose(grad, w[:1])


# ---------------------------------------------------------------------------------------------
# Search on a hand-built chance model: one decision, then the dice, then the episode ends.
# Action 0 pays 0.5 for sure; action 1 pays +1 with probability p and -1 otherwise, so it is
# worth 2p - 1: better than action 0 for p = 0.9 (0.8), worse for p = 0.6 (0.2). Outcome
# rewards alone (without their probabilities) cannot tell the two roots apart.

def hand_model(p1):
    chance_probs = jnp.array([[1.0, 0.0], [p1, 1.0 - p1]])  # [action, outcome]
    reward = jnp.array([[0.5, 0.5], [1.0, -1.0]])  # [action, outcome]

    def decision_fn(params, rng, action, state):
        del params, rng, state
        logits = jnp.log(jnp.maximum(chance_probs[action], 1e-6))
        out = mctx.DecisionRecurrentFnOutput(chance_logits=logits,
                                             afterstate_value=jnp.zeros(action.shape))
        return out, action.astype(jnp.float32)  # the afterstate remembers the action

    def chance_fn(params, rng, outcome, afterstate):
        del params, rng
        r = reward[afterstate.astype(jnp.int32), outcome]
        out = mctx.ChanceRecurrentFnOutput(
            action_logits=jnp.zeros((outcome.shape[0], 2)), value=jnp.zeros_like(r),
            reward=r, discount=jnp.zeros_like(r))
        return out, afterstate

    return decision_fn, chance_fn


@pytest.mark.parametrize("search", ["muzero", "regularized"])
@pytest.mark.parametrize("p1, best", [(0.9, 1), (0.6, 0)])
def test_stochastic_search_weighs_outcomes_by_their_chance(p1, best, search):
    decision_fn, chance_fn = hand_model(p1)
    root = mctx.RootFnOutput(prior_logits=jnp.zeros((3, 2)), value=jnp.zeros(3),
                             embedding=jnp.zeros(3))
    run = jax.jit(lambda rng: run_stochastic_search(
        {}, rng, root, decision_fn, chance_fn, num_simulations=64, pb_c_init=1.25,
        pb_c_base=19652, dirichlet_alpha=0.3, dirichlet_fraction=0.25, temperature=1.0,
        greedy=True, search=search))
    out = run(jax.random.PRNGKey(0))
    chex.assert_shape(out.search_policy, (3, 2))
    np.testing.assert_array_equal(out.action, [best] * 3)
    np.testing.assert_allclose(out.search_policy.sum(-1), 1.0, rtol=1e-5)
    assert np.all(out.search_policy[:, best] > 0.5)
    # The root value approaches the better action's expected reward, max(0.5, 2p - 1).
    np.testing.assert_allclose(out.root_value, max(0.5, 2 * p1 - 1), atol=0.2)


# ---------------------------------------------------------------------------------------------
# Replay: the observation after each unrolled step


def test_replay_next_obs_and_mask():
    t_steps, n = 6, 2
    obs = {"x": np.arange(t_steps * n, dtype=np.float32).reshape(t_steps, n)}  # value = 2t + e
    terminated = np.zeros((t_steps, n), bool)
    terminated[2, 0] = True  # env 0: an episode ends at step 2
    replay = ReplayBuffer(max_size=64, num_unroll_steps=3, td_steps=2, gamma=0.9,
                          next_obs=True, seed=1)
    zeros = np.zeros((t_steps, n), np.float32)
    replay.add(obs, np.zeros((t_steps, n), np.int32), zeros, terminated,
               np.zeros((t_steps, n), bool), zeros, np.full((t_steps, n, 2), 0.5, np.float32),
               zeros)
    batch = replay.sample(64)
    env, start = batch.index
    for b in range(64):
        for k in range(3):
            step = start[b] + k
            if step + 1 <= t_steps - 1:
                assert batch.next_obs["x"][b, k] == 2 * (step + 1) + env[b]
            # Real successor: inside the episode, not an episode end, already stored.
            ended_before = env[b] == 0 and start[b] <= 2 < step
            expected = (step + 1 <= t_steps - 1) and not (env[b] == 0 and step == 2) \
                and not ended_before
            assert batch.next_obs_mask[b, k] == float(expected), (b, k, env[b], start[b])
    plain = ReplayBuffer(max_size=64, num_unroll_steps=3, td_steps=2, gamma=0.9)
    plain.add(obs, np.zeros((t_steps, n), np.int32), zeros, terminated,
              np.zeros((t_steps, n), bool), zeros, np.full((t_steps, n, 2), 0.5, np.float32),
              zeros)
    assert plain.sample(4).next_obs is None


# ---------------------------------------------------------------------------------------------
# A coin-flip task as Trajectory arrays: from the start S any action leads, 50/50, to A or B;
# there action 0 (A) or action 1 (B) pays +1 and the episode ends. The reward of the second
# unrolled step depends on the coin, so a deterministic model can only predict its average;
# a chance code read from the real next observation lets the model predict it exactly.

T, N, NUM_ACTIONS = 8, 16, 2
COIN = MuZeroConfig(
    latent_dim=16, dynamics_hidden=32, prediction_hidden=32, support_size=5,
    num_simulations=4, rollout_length=T, replay_size=4096, warmup_steps=T * N, batch_size=32,
    replay_ratio=2.0, unroll_steps=2, td_steps=2, learning_rate=3e-3, prioritized=False,
    num_chance_outcomes=4)


def coin_trajectory(np_rng):
    coins = np_rng.integers(0, 2, (T // 2, N))
    contexts = np.zeros((T + 1, N), int)
    contexts[1:T:2] = 1 + coins  # odd steps: A (1) or B (2); even steps: S (0)
    action = np_rng.integers(0, NUM_ACTIONS, (T, N)).astype(np.int32)
    reward = np.zeros((T, N), np.float32)
    reward[1::2] = (action[1::2] == coins).astype(np.float32)
    terminated = np.zeros((T, N), bool)
    terminated[1::2] = True
    first = np.zeros((T + 1, N), bool)
    first[0::2] = True
    return Trajectory(
        obs=bandit_obs(contexts), first=first, action=action, reward=reward,
        terminated=terminated, truncated=np.zeros((T, N), bool),
        truncation_value=np.zeros((T, N), np.float32),
        extras={"search_policy": np.full((T, N, NUM_ACTIONS), 0.5, np.float32),
                "root_value": np.zeros((T, N), np.float32)},
        initial_carry=None)


def train_on_coins(stochastic, updates=100, seed=0):
    import dataclasses

    agent = make_muzero_agent(dataclasses.replace(COIN, stochastic=stochastic), TINY,
                              NUM_ACTIONS, total_env_steps=updates * T * N)
    rng = jax.random.PRNGKey(seed)
    np_rng = np.random.default_rng(seed)
    state = agent.init(rng, bandit_obs(np.zeros(1, int)), N)
    metrics = []
    for _ in range(updates):
        rng, key = jax.random.split(rng)
        state, m = agent.learn(state, coin_trajectory(np_rng), key)
        metrics.append(m)
    return agent, state, metrics


def predicted_second_rewards(agent, params):
    """{(coin side, second action): reward the model predicts} after S and action 0; for the
    stochastic model, with the code its encoder gives the real second observation."""
    net, s = agent.network, COIN.support
    obs = bandit_obs(np.array([0, 1, 2]))
    first = {k: v[:1] for k, v in obs.items()}
    out = {}
    if isinstance(agent, smz.StochasticMuZeroAgent):
        latent, _, _ = net.apply(params, first, method=net.initial_inference)
        after, chance_logits, _ = net.apply(params, latent, jnp.array([0]),
                                            method=net.afterstate_inference)
        codes = {}
        for side in (1, 2):
            enc = net.apply(params, {k: v[side:side + 1] for k, v in obs.items()},
                            method=net.encode_chance)
            codes[side] = int(jnp.argmax(enc[0]))
            code = jax.nn.one_hot(jnp.argmax(enc, -1), COIN.num_chance_outcomes)
            second = net.apply(params, after, code, method=net.chance_inference)[0]
            for a in (0, 1):
                after2, chance2, _ = net.apply(params, second, jnp.array([a]),
                                               method=net.afterstate_inference)
                code2 = jax.nn.one_hot(jnp.argmax(chance2, -1), COIN.num_chance_outcomes)
                r = net.apply(params, after2, code2, method=net.chance_inference)[1]
                out[side, a] = float(logits_to_scalar(r, s)[0])
        return out, codes, jax.nn.softmax(chance_logits[0])
    latent, _, _ = net.apply(params, first, method=net.initial_inference)
    second = net.apply(params, latent, jnp.array([0]), method=net.recurrent_inference)[0]
    for a in (0, 1):
        r = net.apply(params, second, jnp.array([a]), method=net.recurrent_inference)[1]
        out[None, a] = float(logits_to_scalar(r, s)[0])
    return out, None, None


@pytest.fixture(scope="module")
def coin_runs():
    return train_on_coins(True), train_on_coins(False)


def test_chance_codes_capture_the_coin(coin_runs):
    (agent, state, metrics), (plain_agent, plain_state, _) = coin_runs
    assert isinstance(agent, smz.StochasticMuZeroAgent)
    assert all(np.isfinite(v) for v in metrics[-1].values()), metrics[-1]
    reward, codes, chance = predicted_second_rewards(agent, state.params)
    # The encoder gives the two sides different codes, the afterstate predicts both about
    # equally likely, and after each code the model knows which action pays.
    assert codes[1] != codes[2]
    assert chance[codes[1]] > 0.3 and chance[codes[2]] > 0.3, chance
    assert reward[1, 0] > 0.8 and reward[1, 1] < 0.2, reward
    assert reward[2, 1] > 0.8 and reward[2, 0] < 0.2, reward
    # Plain MuZero can only predict the average over the coin.
    plain, _, _ = predicted_second_rewards(plain_agent, plain_state.params)
    assert all(0.2 < r < 0.8 for r in plain.values()), plain
    assert abs(plain[None, 0] - plain[None, 1]) < 0.3, plain


def test_stochastic_act_shapes_and_compiles_once(coin_runs):
    agent, state, _ = coin_runs[0]
    params = agent.params(state)
    obs = bandit_obs(np.zeros(N, int))
    for greedy in (False, True):
        out = agent.act(params, obs, np.ones(N, bool), None, jax.random.PRNGKey(3), greedy)
        chex.assert_shape(out.action, (N,))
        chex.assert_shape(out.extras["search_policy"], (N, NUM_ACTIONS))
        chex.assert_shape(out.extras["root_value"], (N,))
    before = dict(agent.trace_counts)
    agent.act(params, obs, np.ones(N, bool), None, jax.random.PRNGKey(4), False)
    assert dict(agent.trace_counts) == before


def test_stochastic_with_gumbel_is_a_config_error():
    with pytest.raises(ConfigError, match="stochastic"):
        config_from_dict({"agent_type": "muzero", "env": {"id": "MiniHack-Room-5x5-v0"},
                          "muzero": {"stochastic": True, "search": "gumbel"}})


def test_cli_make_run_eval_on_the_stochastic_trap(tmp_path):
    import yaml

    cfg = {
        "agent_type": "muzero", "seed": 0,
        "env": {"id": "Omega-StochasticTrap-v0", "num_envs": 4, "num_workers": 1},
        "train": {"total_env_steps": 512, "log_every_steps": 256,
                  "checkpoint_every_steps": 1024},
        "record": {"every_n_episodes": 0},
        "model": {"kind": "plain", "map": "crop", "embed_dim": 8, "cnn_channels": [],
                  "mlp_hidden": 32, "output_dim": 32},
        "muzero": {"stochastic": True, "latent_dim": 16, "dynamics_hidden": 32,
                   "prediction_hidden": 32, "num_simulations": 4, "warmup_steps": 128,
                   "batch_size": 16, "replay_ratio": 1.0, "unroll_steps": 3},
    }
    path = tmp_path / "trap.yaml"
    path.write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "exp"
    assert main(["make", "--config", str(path), "--output-dir", str(exp)]) == 0
    assert main(["run", "--dir", str(exp)]) == 0
    with (exp / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert int(rows[-1]["env_steps"]) == 512
    assert np.isfinite(float(rows[-1]["chance_loss"]))
    assert set(rows[0]) == set(rows[-1])
    out_json = tmp_path / "eval.json"
    assert main(["eval", "--dir", str(exp), "--episodes", "2", "--seed", "7",
                 "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["episodes"] == 2


def test_stochastic_with_consistency_loss_is_a_config_error():
    with pytest.raises(ConfigError, match="consistency_loss_weight"):
        config_from_dict({"agent_type": "muzero", "env": {"id": "MiniHack-Room-5x5-v0"},
                          "muzero": {"stochastic": True, "consistency_loss_weight": 1.0}})


def test_stochastic_reanalyze_renews_targets_and_measures_their_kl():
    import dataclasses

    cfg = dataclasses.replace(COIN, stochastic=True, search="regularized",
                              reanalyze_fraction=0.5, reanalyze_batch_size=32)
    agent = make_muzero_agent(cfg, TINY, NUM_ACTIONS, total_env_steps=20 * T * N)
    rng = jax.random.PRNGKey(0)
    np_rng = np.random.default_rng(0)
    state = agent.init(rng, bandit_obs(np.zeros(1, int)), N)
    for _ in range(4):  # learn() reanalyzes a part of every batch once the warmup is over
        rng, key = jax.random.split(rng)
        state, metrics = agent.learn(state, coin_trajectory(np_rng), key)
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    policy = agent.replay.data["search_policy"].copy()
    fresh = agent._reanalyze(state.params, agent.replay.sample_starts(cfg.batch_size))
    assert len(fresh.env) > 0 and fresh.target_kl.shape == fresh.env.shape
    assert np.all(np.isfinite(fresh.target_kl)) and np.all(fresh.target_kl >= -1e-6)
    slots = fresh.time % agent.replay.capacity
    renewed = agent.replay.data["search_policy"][fresh.env, slots]
    assert np.abs(renewed - policy[fresh.env, slots]).max() > 1e-4
    np.testing.assert_allclose(renewed.sum(-1), 1.0, rtol=1e-5)

"""MuZero: transforms, search on a hand-built model, config, act/learn shapes, jit hygiene,
checkpointable state, learning on a contextual bandit (and failing with a broken loss), and
the CLI end to end.

Agents are tiny and shared between tests: on a small CPU most of the time is XLA compiles.
"""

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest
from flax import serialization

from omega.agents import build_agent
from omega.agents.base import Trajectory
from omega.agents.muzero import MuZeroAgent, MuZeroConfig, losses, make_muzero_agent, optim
from omega.agents.muzero import search as mcts
from omega.agents.muzero.config import Support
from omega.agents.muzero.networks import (
    MuZeroNetwork,
    logits_to_scalar,
    scalar_to_two_hot,
    scale_gradient,
)
from omega.cli.main import main
from omega.config import config_from_dict
from omega.errors import ConfigError
from omega.models.encoders import EncoderConfig
from omega.replay import ReplayBatch

TINY = EncoderConfig(kind="plain", map="crop", embed_dim=8, glyph_features=False,
                     cnn_channels=(), mlp_hidden=32, blstats_hidden=8, output_dim=32)


pytestmark = pytest.mark.usefixtures("fast_compiles")


# ---------------------------------------------------------------------------------------------
# Transforms


def test_value_transform_round_trips():
    x = jnp.array([-50.0, -1.0, -0.3, 0.0, 0.01, 0.7, 1.0, 3.5, 20.0, 100.0])
    two_hot = scalar_to_two_hot(x, Support(10))  # [10, 21]
    chex.assert_shape(two_hot, (10, 21))
    np.testing.assert_allclose(two_hot.sum(-1), 1.0, rtol=1e-5)
    assert int(jnp.max(jnp.sum(two_hot > 0, -1))) <= 2
    back = logits_to_scalar(jnp.log(two_hot), Support(10))
    np.testing.assert_allclose(back, x, rtol=2e-3, atol=2e-3)
    # Beyond the support's range the target is clipped to its edge.
    edge = logits_to_scalar(jnp.log(scalar_to_two_hot(jnp.array(1e6), Support(10))), Support(10))
    assert float(edge) < 1e3


def test_a_finer_support_step_resolves_small_rewards():
    """A 0.01 reward (h = 0.005) is 0.5% of a unit bin's mass, 10% of a 0.05 bin's; both round
    trip, and the finer support's range ends at h = S * step."""
    small = jnp.array([0.01])
    coarse, fine = Support(10), Support(60, 0.05)
    assert float(scalar_to_two_hot(small, coarse)[0, 11]) == pytest.approx(0.005, rel=0.01)
    assert float(scalar_to_two_hot(small, fine)[0, 61]) == pytest.approx(0.1, rel=0.01)
    x = jnp.array([-3.0, -0.01, 0.0, 0.01, 0.03, 1.0, 1.37, 5.0])
    back = logits_to_scalar(jnp.log(scalar_to_two_hot(x, fine)), fine)
    np.testing.assert_allclose(back, x, rtol=2e-3, atol=1e-4)
    # h(15) = 3.0 = 60 * 0.05: larger returns are clipped to about 15.
    edge = logits_to_scalar(jnp.log(scalar_to_two_hot(jnp.array(100.0), fine)), fine)
    assert float(edge) == pytest.approx(15.0, rel=0.01)
    assert MuZeroConfig(support_size=60, support_step=0.05).support == fine


def test_scale_gradient():
    f = lambda x: jnp.sum(scale_gradient(x, 0.5) ** 2)  # noqa: E731
    x = jnp.array([1.0, -2.0])
    assert float(f(x)) == pytest.approx(5.0)
    np.testing.assert_allclose(jax.grad(f)(x), 0.5 * 2 * x)


def test_temperature_schedule():
    schedule = ((0.0, 1.0), (0.5, 0.5), (0.75, 0.25))
    temps = [float(optim.temperature_at(schedule, jnp.float32(p))) for p in (0, 0.49, 0.5, 0.8, 2)]
    assert temps == [1.0, 1.0, 0.5, 0.25, 0.25]


def test_priority_adds_the_weighted_largest_reward_error():
    def logits(x):
        return jnp.log(scalar_to_two_hot(jnp.asarray(x, jnp.float32), Support(10)))

    # Two starts, K = 2: predicted root values 0.5 and 0; predicted rewards (0, 0.2) and (0, 0).
    value_logits = logits([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])  # [B, K+1, 2S+1]
    reward_logits = logits([[0.0, 0.2], [0.0, 0.0]])  # [B, K, 2S+1]
    batch = ReplayBatch(
        obs={}, action=None, reward_target=jnp.array([[1.0, 0.0], [-1.0, 3.0]]),
        reward_mask=jnp.array([[1.0, 1.0], [1.0, 0.0]]), terminal_target=None,
        value_target=jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), value_mask=None,
        policy_target=None, policy_mask=None, weight=None, value_partial=None,
        bootstrap_discount=None, bootstrap_obs=None, index=None)
    error, priority = losses.value_error_and_priority(value_logits, reward_logits, batch, Support(10),
                                                      0.0)
    np.testing.assert_allclose(error, [0.5, 0.0], atol=1e-2)
    np.testing.assert_allclose(priority, error)
    # Largest reward errors: row 0 max(1.0, 0.2) = 1.0; row 1 1.0 (the masked step's 3.0
    # would give a priority of 6 if it counted).
    _, priority = losses.value_error_and_priority(value_logits, reward_logits, batch, Support(10),
                                                 2.0)
    np.testing.assert_allclose(priority, [0.5 + 2.0, 0.0 + 2.0], atol=2e-2)


# ---------------------------------------------------------------------------------------------
# Search on a hand-built deterministic model

# States 0..2: action 0 pays 0.5 now and ends in the dead state 1; action 1 pays nothing now
# but leads to state 2, where every action pays 2. With discount 0.9 action 1 is worth 1.8.
# States 3..5 are the mirror image (the actions swapped), so the right answer differs per root.
REWARD = np.array([[0.5, 0.0], [0.0, 0.0], [2.0, 2.0],
                   [0.0, 0.5], [0.0, 0.0], [2.0, 2.0]], np.float32)
NEXT = np.array([[1, 2], [1, 1], [1, 1], [5, 4], [4, 4], [4, 4]], np.int32)


def hand_recurrent_fn(params, rng, action, state):
    del params, rng
    reward = jnp.asarray(REWARD)[state, action]
    out = mctx.RecurrentFnOutput(reward=reward, discount=jnp.full_like(reward, 0.9),
                                 prior_logits=jnp.zeros((state.shape[0], 2)),
                                 value=jnp.zeros_like(reward))
    return out, jnp.asarray(NEXT)[state, action]


@pytest.mark.parametrize("search", ["muzero", "gumbel"])
@pytest.mark.parametrize("greedy", [True, False])
def test_search_finds_the_delayed_reward(greedy, search):
    roots = jnp.array([0, 3, 0, 3])
    root = mctx.RootFnOutput(prior_logits=jnp.zeros((4, 2)), value=jnp.zeros(4), embedding=roots)
    search = jax.jit(lambda rng: mcts.run_search(
        {}, rng, root, hand_recurrent_fn, num_simulations=64, pb_c_init=1.25, pb_c_base=19652,
        dirichlet_alpha=0.3, dirichlet_fraction=0.25, temperature=0.0, greedy=greedy,
        search=search, max_considered_actions=2))
    out = search(jax.random.PRNGKey(0))
    chex.assert_shape(out.action, (4,))
    chex.assert_shape(out.search_policy, (4, 2))
    chex.assert_shape(out.root_value, (4,))
    # A one-step lookahead would take the 0.5; the search sees the 1.8 behind it.
    np.testing.assert_array_equal(out.action, [1, 0, 1, 0])
    np.testing.assert_allclose(out.search_policy.sum(-1), 1.0, rtol=1e-6)
    assert np.all(out.search_policy[[0, 2], 1] > 0.5) and np.all(out.search_policy[[1, 3], 0] > 0.5)
    assert np.all(np.asarray(out.root_value) > 0.5)


@pytest.mark.parametrize("search", ["muzero", "gumbel", "regularized"])
def test_evaluation_search_has_no_exploration_noise(search):
    # State 2: both actions pay 2, so the search policy keeps mass on both, and the prior
    # decides how much: root noise on the prior would move it.
    roots = jnp.full(64, 2, jnp.int32)
    root = mctx.RootFnOutput(prior_logits=jnp.tile(jnp.array([[1.0, 0.0]]), (64, 1)),
                             value=jnp.zeros(64), embedding=roots)

    def run(rng, explore):
        return jax.jit(lambda key: mcts.run_search(
            {}, key, root, hand_recurrent_fn, num_simulations=64, pb_c_init=1.25,
            pb_c_base=19652, dirichlet_alpha=0.3, dirichlet_fraction=0.5, temperature=1.0,
            greedy=False, search=search, max_considered_actions=2, explore=explore))(rng)

    a, b = run(jax.random.PRNGKey(0), 0.0), run(jax.random.PRNGKey(1), 0.0)
    # No noise: the search policy is the same for every root and every key ...
    np.testing.assert_allclose(a.search_policy, b.search_policy, rtol=1e-6)
    np.testing.assert_allclose(a.search_policy, np.tile(a.search_policy[:1], (64, 1)),
                               rtol=1e-6)
    # ... and actions are sampled from it, not always its argmax.
    actions = np.concatenate([a.action, b.action])
    assert 0 < actions.mean() < 1, actions
    if search == "muzero":  # the visit counts are where pUCT's root noise shows
        noisy = run(jax.random.PRNGKey(0), 1.0)
        assert not np.allclose(noisy.search_policy, np.tile(noisy.search_policy[:1], (64, 1)))


def test_gumbel_evaluation_samples_the_improved_policy_at_the_eval_temperature():
    # State 2: both actions pay 2 and the prior prefers action 0, so the improved policy keeps
    # mass on both; sampled at temperature 1 both are taken, at 0.05 only its argmax (0).
    roots = jnp.full(64, 2, jnp.int32)
    root = mctx.RootFnOutput(prior_logits=jnp.tile(jnp.array([[1.0, 0.0]]), (64, 1)),
                             value=jnp.zeros(64), embedding=roots)

    def run(temperature):
        return jax.jit(lambda key: mcts.run_search(
            {}, key, root, hand_recurrent_fn, num_simulations=16, pb_c_init=1.25,
            pb_c_base=19652, dirichlet_alpha=0.3, dirichlet_fraction=0.25,
            temperature=temperature, greedy=False, search="gumbel", max_considered_actions=2,
            explore=0.0))(jax.random.PRNGKey(0))

    soft, sharp = run(1.0), run(0.05)
    np.testing.assert_allclose(soft.search_policy, sharp.search_policy, rtol=1e-6)
    assert float(soft.search_policy[0, 0]) > 0.5
    assert 0 < np.asarray(soft.action).mean() < 0.5
    np.testing.assert_array_equal(sharp.action, 0)


def test_eval_params_carry_the_eval_temperature(bandit_run):
    agent, state, _, _ = bandit_run
    sharp = make_muzero_agent(dataclasses.replace(BANDIT, eval_temperature=0.25), TINY, A,
                              total_env_steps=40 * T * N)
    assert float(sharp.eval_params(state).temperature) == 0.25
    assert float(sharp.params(state).temperature) == float(agent.params(state).temperature)


def test_eval_params_turn_exploration_off(bandit_run):
    agent, state, _, _ = bandit_run
    assert float(agent.params(state).explore) == 1.0
    assert float(agent.eval_params(state).explore) == 0.0
    assert float(agent.eval_params(state).temperature) == 1.0


@pytest.mark.parametrize("reward_scale", [1.0, 0.01])
def test_gumbel_value_rescaling(reward_scale):
    # Root 0 of the hand-built model: action 1 is worth 1.8, action 0 0.5 (times reward_scale).
    def recurrent_fn(params, rng, action, state):
        out, next_state = hand_recurrent_fn(params, rng, action, state)
        return mctx.RecurrentFnOutput(reward=out.reward * reward_scale, discount=out.discount,
                                      prior_logits=out.prior_logits,
                                      value=out.value), next_state

    root = mctx.RootFnOutput(prior_logits=jnp.zeros((1, 2)), value=jnp.zeros(1),
                             embedding=jnp.array([0]))

    def policy(**qtransform):
        out = mcts.run_search({}, jax.random.PRNGKey(0), root, recurrent_fn, num_simulations=16,
                            pb_c_init=1.25, pb_c_base=19652, dirichlet_alpha=0.3,
                            dirichlet_fraction=0.25, temperature=1.0, greedy=True,
                            search="gumbel", max_considered_actions=2, **qtransform)
        return float(out.search_policy[0, 1])

    # Min-max normalised Q (the default): the push towards action 1 does not depend on how
    # large the value differences are, so a 100x smaller gap pushes as hard.
    assert policy() > 0.99
    # Raw Q: the push is proportional to the gap, (50 + max visits) * value_scale * (q1 - q0).
    raw = policy(gumbel_value_scale=0.1, gumbel_rescale_values=False)
    if reward_scale == 1.0:
        assert raw > 0.99
    else:
        assert 0.5 < raw < 0.6, raw
    # A negligible scale leaves the (uniform) prior.
    assert policy(gumbel_value_scale=1e-6, gumbel_rescale_values=False) == pytest.approx(0.5, abs=1e-3)


# ---------------------------------------------------------------------------------------------
# Config


def test_config_builds_the_agent():
    cfg = config_from_dict({
        "agent_type": "muzero",
        "muzero": {"num_simulations": 4, "rollout_length": 6,
                   "temperature_schedule": [[0.0, 1.0], [0.5, 0.25]]},
        "model": {"embed_dim": 8, "cnn_channels": [], "mlp_hidden": 16, "output_dim": 16},
    })
    assert cfg.muzero.temperature_schedule == ((0.0, 1.0), (0.5, 0.25))
    agent, rollout_length = build_agent(cfg, 8)
    assert isinstance(agent, MuZeroAgent) and rollout_length == 6
    assert agent.num_actions == 8


@pytest.mark.parametrize("muzero, message", [
    ({"temperature_schedule": [[0.1, 1.0]]}, "must start with a [0.0, temperature] pair"),
    ({"temperature_schedule": [[0.0, 1.0], [0.5]]}, "must have 2 items"),
    ({"warmup_steps": 5000, "replay_size": 1000}, "training never starts"),
    ({"dirichlet_fraction": 1.5}, "'muzero.dirichlet_fraction' must be between 0.0 and 1.0"),
    ({"lr_schedule": "step"}, "'muzero.lr_schedule' must be one of"),
    ({"reward_head": "both"}, "'muzero.reward_head' must be one of"),
    ({"reward_head": "per_action", "stochastic": True}, "reward_head: per_action is not"),
])
def test_bad_muzero_config_is_a_config_error(muzero, message):
    with pytest.raises(ConfigError, match=None) as e:
        config_from_dict({"agent_type": "muzero", "muzero": muzero})
    assert message in str(e.value)


def test_recurrent_encoder_is_refused_where_memory_is_not_threaded():
    recurrent = {"kind": "perceiver", "recurrent": True}
    config_from_dict({"agent_type": "muzero", "model": recurrent})  # plain MuZero: fine
    with pytest.raises(ConfigError, match="model.recurrent"):
        config_from_dict({"agent_type": "muzero", "model": recurrent,
                          "muzero": {"stochastic": True}})
    with pytest.raises(ConfigError, match="muzero.burn_in_steps"):
        config_from_dict({"agent_type": "muzero", "muzero": {"burn_in_steps": 2}})
    with pytest.raises(ConfigError, match="muzero.refresh_memory"):
        config_from_dict({"agent_type": "muzero", "muzero": {"refresh_memory": True}})
    with pytest.raises(ConfigError, match="muzero.burn_in_gradient"):
        config_from_dict({"agent_type": "muzero", "model": recurrent,
                          "muzero": {"burn_in_gradient": True}})


# ---------------------------------------------------------------------------------------------
# A contextual bandit built directly as Trajectory arrays: the centre glyph of a 3x3 crop says
# which of 4 actions pays +1. Every step is a one-step episode, so only a reward model that
# tells the actions apart lets the search (and then the prior) choose well.

FLOOR = 2378
CONTEXT_GLYPHS = np.array([2360, 2361, 2380, 2383], np.int16)
T, N, A = 4, 16, 4
BANDIT = MuZeroConfig(
    latent_dim=16, dynamics_hidden=32, prediction_hidden=32, support_size=5,
    num_simulations=8, rollout_length=T, replay_size=2048, warmup_steps=T * N, batch_size=32,
    replay_ratio=8.0, unroll_steps=2, td_steps=2, learning_rate=3e-3)


def bandit_obs(contexts):
    crop = np.full(contexts.shape + (3, 3), FLOOR, np.int16)
    crop[..., 1, 1] = CONTEXT_GLYPHS[contexts]
    return {"glyphs_crop": crop}


def bandit_rollout(agent, params, rng, np_rng):
    contexts = np_rng.integers(0, 4, (T + 1, N))
    obs = bandit_obs(contexts)
    actions, extras = [], []
    for t in range(T):
        rng, key = jax.random.split(rng)
        out = agent.act(params, {k: v[t] for k, v in obs.items()}, np.ones(N, bool), None, key)
        actions.append(np.asarray(out.action))
        extras.append({k: np.asarray(v) for k, v in out.extras.items()})
    action = np.stack(actions)
    reward = (action == contexts[:T]).astype(np.float32)
    return Trajectory(
        obs=obs, first=np.ones((T + 1, N), bool), action=action, reward=reward,
        terminated=np.ones((T, N), bool), truncated=np.zeros((T, N), bool),
        truncation_value=np.zeros((T, N), np.float32),
        extras={k: np.stack([e[k] for e in extras]) for k in extras[0]}, initial_carry=None)


def greedy_accuracy(agent, params):
    contexts = np.arange(N) % 4
    out = agent.act(params, bandit_obs(contexts), np.ones(N, bool), None,
                    jax.random.PRNGKey(0), greedy=True)
    return float(np.mean(np.asarray(out.action) == contexts))


def train_bandit(agent, updates, seed=0):
    rng = jax.random.PRNGKey(seed)
    np_rng = np.random.default_rng(seed)
    state = agent.init(rng, bandit_obs(np.zeros(1, int)), N)
    accuracies, metrics = [], []
    for _ in range(updates):
        rng, roll_key, learn_key = jax.random.split(rng, 3)
        traj = bandit_rollout(agent, agent.params(state), roll_key, np_rng)
        state, m = agent.learn(state, traj, learn_key)
        metrics.append(m)
        accuracies.append(greedy_accuracy(agent, agent.params(state)))
    return state, accuracies, metrics


@pytest.fixture(scope="module")
def bandit_run():
    agent = make_muzero_agent(BANDIT, TINY, A, total_env_steps=40 * T * N)
    state, accuracies, metrics = train_bandit(agent, updates=40)
    return agent, state, accuracies, metrics


def test_muzero_learns_contextual_bandit(bandit_run):
    _, _, accuracies, metrics = bandit_run
    assert accuracies[-1] >= 0.9, accuracies
    assert max(accuracies[:2]) < 0.9, "the task must not be solved before learning"
    assert metrics[-1]["reward_loss"] < 0.5 * metrics[1]["reward_loss"], metrics
    for m in metrics[1:]:
        assert all(np.isfinite(v) for v in m.values()), m


def test_per_action_reward_head_reads_the_taken_actions_head():
    cfg = dataclasses.replace(BANDIT, reward_head="per_action")
    agent = make_muzero_agent(cfg, TINY, A, total_env_steps=1000)
    state = agent.init(jax.random.PRNGKey(0), bandit_obs(np.zeros(1, int)), N)
    bins = 2 * cfg.support_size + 1
    kernel = state.params["params"]["dynamics"]["reward"]["kernel"]  # [H, A * bins]
    assert kernel.shape == (cfg.dynamics_hidden, A * bins)
    # Give action 2's head (and only it) weights: only action 2's reward moves.
    bumped = kernel.at[:, 2 * bins:3 * bins].set(
        jax.random.normal(jax.random.PRNGKey(1), (cfg.dynamics_hidden, bins)))
    params = jax.tree_util.tree_map(lambda x: x, state.params)
    params["params"]["dynamics"]["reward"]["kernel"] = bumped
    latent = jax.random.uniform(jax.random.PRNGKey(2), (3, cfg.latent_dim))

    def rewards(p, action):
        return agent.network.apply(p, latent, jnp.full((3,), action),
                                   method=MuZeroNetwork.recurrent_inference)[1]

    for action in range(A):
        before, after = rewards(state.params, action), rewards(params, action)
        chex.assert_shape(after, (3, bins))
        assert np.allclose(before, after) == (action != 2), action


def test_muzero_learns_contextual_bandit_with_per_action_reward_head():
    agent = make_muzero_agent(dataclasses.replace(BANDIT, reward_head="per_action"), TINY, A,
                              total_env_steps=40 * T * N)
    _, accuracies, metrics = train_bandit(agent, updates=40)
    assert accuracies[-1] >= 0.9, accuracies
    assert metrics[-1]["reward_loss"] < 0.5 * metrics[1]["reward_loss"], metrics


def test_broken_reward_loss_fails_the_bandit_test(monkeypatch):
    """A sign-flipped reward loss must not pass: proves the learning test can fail."""
    orig = losses.unroll_losses

    def flipped(*args, **kwargs):
        out = orig(*args, **kwargs)
        return out._replace(reward=-out.reward)

    monkeypatch.setattr(losses, "unroll_losses", flipped)
    agent = make_muzero_agent(BANDIT, TINY, A, total_env_steps=40 * T * N)
    _, accuracies, _ = train_bandit(agent, updates=25)
    assert max(accuracies[-5:]) <= 0.6, accuracies


def test_act_learn_shapes_and_jit_hygiene(bandit_run):
    agent, state, _, metrics = bandit_run
    params = agent.params(state)
    obs = bandit_obs(np.arange(N) % 4)
    out = agent.act(params, obs, np.ones(N, bool), None, jax.random.PRNGKey(1))
    chex.assert_shape(out.action, (N,))
    assert out.action.dtype == jnp.int32 and out.carry is None
    chex.assert_shape(out.extras["search_policy"], (N, A))
    chex.assert_shape(out.extras["root_value"], (N,))
    np.testing.assert_allclose(out.extras["search_policy"].sum(-1), 1.0, rtol=1e-5)
    v = agent.value(params, obs, None)
    chex.assert_shape(v, (N,))
    # The bandit pays 1 for the right action and the search finds it: V ~ 1.
    assert 0.5 < float(np.mean(v)) < 1.5

    assert agent.trace_counts["train"] == 1  # every train step, one trace
    assert agent.trace_counts["act"] == 2  # greedy and sampling variants
    # Warm-up is one rollout, then replay_ratio 8 with 64 steps / batch 32: 16 per learn.
    assert int(state.train_steps) == 16 * 40 and int(state.env_steps) == 40 * T * N
    expected = {"loss", "policy_loss", "value_loss", "reward_loss", "terminal_loss",
                "value_error", "grad_norm",
                "learning_rate", "train_steps", "replay_size", "root_value_mean", "temperature"}
    assert expected <= set(metrics[-1])
    assert metrics[-1]["learning_rate"] == pytest.approx(BANDIT.learning_rate)


def test_warmup_then_replay_ratio():
    cfg = dataclasses.replace(BANDIT, warmup_steps=3 * T * N, replay_ratio=0.25)
    agent = make_muzero_agent(cfg, TINY, A, total_env_steps=10_000)
    state = agent.init(jax.random.PRNGKey(0), bandit_obs(np.zeros(1, int)), N)
    np_rng = np.random.default_rng(0)
    steps = []
    for i in range(6):
        # Only learn is under test: random actions and a uniform "search" stand in for acting.
        contexts = np_rng.integers(0, 4, (T + 1, N))
        action = np_rng.integers(0, A, (T, N)).astype(np.int32)
        traj = Trajectory(
            obs=bandit_obs(contexts), first=np.ones((T + 1, N), bool), action=action,
            reward=(action == contexts[:T]).astype(np.float32),
            terminated=np.ones((T, N), bool), truncated=np.zeros((T, N), bool),
            truncation_value=np.zeros((T, N), np.float32),
            extras={"search_policy": np.full((T, N, A), 1.0 / A, np.float32),
                    "root_value": np.zeros((T, N), np.float32)}, initial_carry=None)
        state, m = agent.learn(state, traj, jax.random.PRNGKey(i))
        steps.append(int(state.train_steps))
        if i < 2:
            assert np.isnan(m["loss"])  # warming up: the columns exist, empty
        assert m["replay_size"] == (i + 1) * T * N
    # 64 env steps * 0.25 / 32 = half a train step per learn once warm.
    assert steps == [0, 0, 0, 1, 1, 2]
    assert float(state.update_credit) == pytest.approx(0.0)
    assert int(state.env_steps) == 6 * T * N


def test_state_round_trips_and_replay_is_fresh(bandit_run):
    agent, state, _, _ = bandit_run
    restored = serialization.from_state_dict(
        state, serialization.msgpack_restore(serialization.msgpack_serialize(
            serialization.to_state_dict(jax.device_get(state)))))
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored, jax.device_get(state))
    # The replay is no part of the state: a new agent (a resumed run) starts empty.
    fresh = make_muzero_agent(BANDIT, TINY, A, total_env_steps=40 * T * N)
    assert len(fresh.replay) == 0 and len(agent.replay) > 0


# ---------------------------------------------------------------------------------------------
# CLI end to end


def test_cli_make_run_eval(tmp_path, capsys):
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/muzero/room_5x5.yaml")
                         .read_text())
    cfg["record"]["every_n_episodes"] = 0
    cfg["train"]["log_every_steps"] = 512
    cfg["muzero"]["eval_params_ema"] = 0.99  # eval acts with the params' moving average
    cfg["muzero"]["replay_ratio"] = 4.0  # the plumbing, not the learning: fewer train steps
    path = tmp_path / "room_5x5.yaml"
    path.write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "exp"
    assert main(["make", "--config", str(path), "--output-dir", str(exp)]) == 0
    assert main(["run", "--dir", str(exp), "--steps", "2048"]) == 0
    import csv

    with (exp / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert int(rows[-1]["env_steps"]) == 2048
    assert float(rows[-1]["train_steps"]) > 0 and np.isfinite(float(rows[-1]["loss"]))
    out_json = tmp_path / "eval.json"
    assert main(["eval", "--dir", str(exp), "--episodes", "4", "--seed", "5",
                 "--json", str(out_json)]) == 0
    data = json.loads(out_json.read_text())
    assert data["episodes"] == 4 and data["env_steps"] == 2048
    assert data["params"] == "average"
    assert main(["eval", "--dir", str(exp), "--episodes", "4", "--seed", "5", "--current-params",
                 "--json", str(out_json)]) == 0
    data = json.loads(out_json.read_text())
    assert data["params"] == "current" and data["num_simulations"] == cfg["muzero"]["num_simulations"]
    # A bigger search than training used: the checkpoint still loads (the search budget is not
    # part of the params), and the JSON says which budget the episodes were played with.
    assert main(["eval", "--dir", str(exp), "--episodes", "4", "--seed", "5",
                 "--num-simulations", "4", "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["num_simulations"] == 4
    capsys.readouterr()
    assert main(["eval", "--dir", str(exp), "--num-simulations", "0"]) == 2
    assert "--num-simulations must be >= 1" in capsys.readouterr().err

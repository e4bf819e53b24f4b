"""PPO: GAE with terminal/truncated steps, each loss term, RND, jit hygiene, and learning.

Agents are tiny and shared between tests: on a small CPU most of the time is XLA compiles.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from omega.agents.base import Trajectory
from omega.agents.ppo import PPOConfig, make_ppo_agent
from omega.agents.ppo import agent as ppo
from omega.models.encoders import EncoderConfig

TINY = EncoderConfig(kind="plain", map="crop", embed_dim=8, glyph_features=False,
                     cnn_channels=(8,), mlp_hidden=32, blstats_hidden=8, output_dim=32)

pytestmark = pytest.mark.usefixtures("fast_compiles")


# ---------------------------------------------------------------------------------------------
# GAE


def test_gae_terminal_and_truncated_by_hand():
    g, lam = 0.9, 0.5
    # One env, 4 steps: step 1 terminates, step 2 is truncated (bootstrap 10), step 3 continues
    # into the bootstrap value values[4].
    reward = np.array([1.0, 2.0, 3.0, 4.0])
    terminated = np.array([False, True, False, False])
    truncated = np.array([False, False, True, False])
    trunc_value = np.array([0.0, 0.0, 10.0, 0.0])
    values = np.array([0.5, 1.0, 2.0, 3.0, 5.0])

    d3 = 4.0 + g * 5.0 - 3.0  # ordinary step: bootstraps values[4]
    d2 = 3.0 + g * 10.0 - 2.0  # truncated: bootstraps the real final obs, not values[3]
    d1 = 2.0 - 1.0  # terminal: nothing after it
    d0 = 1.0 + g * 1.0 - 0.5
    expected = np.array([d0 + g * lam * d1, d1, d2, d3])

    col = lambda x: jnp.asarray(x, jnp.float32)[:, None]  # noqa: E731  [T, N=1]
    adv, target = ppo.extrinsic_advantages(
        col(reward), col(terminated).astype(bool), col(truncated).astype(bool), col(trunc_value),
        col(values), g, lam)
    np.testing.assert_allclose(adv[:, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(target[:, 0], expected + values[:-1], rtol=1e-6)
    # The truncated step's target is the one-step bootstrap r + gamma * V(final obs).
    assert target[2, 0] == pytest.approx(3.0 + g * 10.0)


def test_gae_is_per_env():
    reward = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    discount = jnp.full((2, 2), 0.5)
    values = jnp.zeros((3, 2))
    adv = ppo.gae(reward, discount, values, 1.0)
    np.testing.assert_allclose(adv, [[1.0, 0.5], [0.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# Loss terms


def test_policy_loss_inside_and_outside_clip():
    eps = 0.2
    old = jnp.log(jnp.array([0.5, 0.5, 0.5, 0.5]))
    # ratios 1.1 (inside), 1.5 (outside, above), 0.5 (outside, below), 1.5 with negative adv.
    ratio = jnp.array([1.1, 1.5, 0.5, 1.5])
    adv = jnp.array([1.0, 1.0, 1.0, -1.0])
    loss, stats = ppo.policy_loss(old + jnp.log(ratio), old, adv, eps)
    # min(r A, clip(r) A): 1.1; 1.2 (clipped gain); 0.5 (pessimistic: unclipped); -1.5.
    expected = -np.mean([1.1, 1.2, 0.5, -1.5])
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(stats["clip_fraction"]) == pytest.approx(0.75)
    k3 = np.mean((np.array(ratio) - 1) - np.log(ratio))
    assert float(stats["approx_kl"]) == pytest.approx(k3, rel=1e-5)


def test_policy_loss_gradient_stops_outside_clip():
    adv = jnp.array([1.0])
    grad = jax.grad(lambda lp: ppo.policy_loss(lp, jnp.zeros(1), adv, 0.2)[0])
    assert float(grad(jnp.log(jnp.array([1.5])))[0]) == 0.0  # clipped: no push further
    assert float(grad(jnp.log(jnp.array([1.1])))[0]) < 0.0  # inside: raise the prob


def test_value_loss_plain_and_clipped():
    v, old, target = jnp.array([1.0, 3.0]), jnp.array([0.0, 0.0]), jnp.array([2.0, 0.0])
    assert float(ppo.value_loss(v, old, target)) == pytest.approx(0.5 * (1.0 + 9.0) / 2)
    # Clipped to old +- 0.5: 0.5 and 0.5; losses max((1-2)^2, (0.5-2)^2)=2.25, max(9, 0.25)=9.
    assert float(ppo.value_loss(v, old, target, 0.5)) == pytest.approx(0.5 * (2.25 + 9.0) / 2)


def test_entropy_known_distributions():
    assert float(ppo.entropy(jnp.zeros(4))) == pytest.approx(np.log(4), rel=1e-6)
    p = np.array([0.7, 0.2, 0.1])
    assert float(ppo.entropy(jnp.log(p))) == pytest.approx(-(p * np.log(p)).sum(), rel=1e-5)
    assert float(ppo.entropy(jnp.array([0.0, -1e9]))) == pytest.approx(0.0, abs=1e-6)


def test_running_mean_std_matches_numpy():
    rms = ppo.RunningMeanStd.create()
    xs = np.random.default_rng(0).normal(3.0, 2.0, (5, 40)).astype(np.float32)
    for x in xs:
        rms = rms.update(jnp.asarray(x))
    assert float(rms.mean) == pytest.approx(xs.mean(), rel=1e-3)
    assert float(rms.var) == pytest.approx(xs.var(), rel=1e-3)


# ---------------------------------------------------------------------------------------------
# A contextual bandit built directly as Trajectory arrays: the centre glyph of a 3x3 crop says
# which of 4 actions pays +1. Every step is a one-step episode.

FLOOR = 2378
CONTEXT_GLYPHS = np.array([2360, 2361, 2380, 2383], np.int16)  # wall, wall, corridor, stairs
T, N, A = 4, 16, 4


def bandit_obs(contexts):
    crop = np.full(contexts.shape + (3, 3), FLOOR, np.int16)
    crop[..., 1, 1] = CONTEXT_GLYPHS[contexts]
    return {"glyphs_crop": crop}


def bandit_rollout(agent, params, rng, np_rng):
    contexts = np_rng.integers(0, 4, (T + 1, N))
    obs = bandit_obs(contexts)
    first = np.ones((T + 1, N), bool)
    actions, extras = [], []
    for t in range(T):
        rng, key = jax.random.split(rng)
        out = agent.act(params, {k: v[t] for k, v in obs.items()}, first[t], None, key,
                        greedy=False)
        actions.append(np.asarray(out.action))
        extras.append({k: np.asarray(v) for k, v in out.extras.items()})
    action = np.stack(actions)
    reward = (action == contexts[:T]).astype(np.float32)
    return Trajectory(
        obs=obs, first=first, action=action, reward=reward,
        terminated=np.ones((T, N), bool), truncated=np.zeros((T, N), bool),
        truncation_value=np.zeros((T, N), np.float32),
        extras={k: np.stack([e[k] for e in extras]) for k in extras[0]}, initial_carry=None)


def greedy_accuracy(agent, params):
    contexts = np.arange(N) % 4
    out = agent.act(params, bandit_obs(contexts), np.ones(N, bool), None,
                    jax.random.PRNGKey(0), greedy=True)
    return float(np.mean(np.asarray(out.action) == contexts))


def train_bandit(agent, updates=50, seed=0):
    rng = jax.random.PRNGKey(seed)
    np_rng = np.random.default_rng(seed)
    state = agent.init(rng, bandit_obs(np.zeros(1, int)), N)
    accuracies, metrics = [], []
    for _ in range(updates):
        rng, roll_key, learn_key = jax.random.split(rng, 3)
        traj = bandit_rollout(agent, agent.params(state), roll_key, np_rng)
        state, m = agent.learn(state, traj, learn_key)
        metrics.append(jax.device_get(m))
        accuracies.append(greedy_accuracy(agent, agent.params(state)))
    return state, accuracies, metrics


# RND is on (so one compiled agent serves the RND test too) but has no say in the policy.
BANDIT_PPO = PPOConfig(learning_rate=1e-3, rollout_length=T, num_epochs=4, num_minibatches=4,
                       rnd=True, rnd_coef=0.0, rnd_lr=1e-3, rnd_hidden=32, rnd_output_dim=16)


@pytest.fixture(scope="module")
def bandit_run():
    agent = make_ppo_agent(BANDIT_PPO, TINY, A, total_updates=50)
    state, accuracies, metrics = train_bandit(agent)
    return agent, state, accuracies, metrics


def test_ppo_learns_contextual_bandit(bandit_run):
    _, _, accuracies, metrics = bandit_run
    assert accuracies[-1] > 0.9, accuracies
    assert max(accuracies[:3]) < 0.9, "the task must not be solved before learning"
    assert metrics[-1]["entropy"] < metrics[0]["entropy"]
    for m in metrics:
        assert all(np.isfinite(v) for v in m.values()), m


def test_broken_update_fails_the_bandit_test(monkeypatch):
    """A sign-flipped policy loss must not pass: proves the learning test can fail."""
    orig = ppo.policy_loss

    def flipped(*args, **kwargs):
        loss, stats = orig(*args, **kwargs)
        return -loss, stats

    monkeypatch.setattr(ppo, "policy_loss", flipped)
    agent = make_ppo_agent(BANDIT_PPO, TINY, A, total_updates=50)
    _, accuracies, _ = train_bandit(agent, updates=30)
    assert max(accuracies[-5:]) <= 0.5, accuracies


def test_learn_is_jitted_once_and_reports_metrics(bandit_run):
    agent, state, _, metrics = bandit_run
    assert agent.trace_counts["learn"] == 1  # 50 learn calls, one trace
    assert agent._learn._cache_size() == 1
    assert agent.trace_counts["act"] == 2  # greedy and sampling variants
    assert int(state.update_step) == 50
    expected = {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction",
                "grad_norm", "learning_rate", "entropy_coef", "rnd_loss",
                "intrinsic_reward_mean"}
    assert expected <= set(metrics[-1])
    assert metrics[-1]["learning_rate"] == pytest.approx(BANDIT_PPO.learning_rate)
    assert metrics[-1]["entropy_coef"] == pytest.approx(BANDIT_PPO.entropy_coef)


def test_linear_lr_schedule_reaches_zero():
    cfg = dataclasses.replace(BANDIT_PPO, lr_schedule="linear")
    agent = make_ppo_agent(cfg, TINY, A, total_updates=10)
    steps = cfg.num_epochs * cfg.num_minibatches
    assert float(agent.lr_schedule(0)) == pytest.approx(cfg.learning_rate)
    assert float(agent.lr_schedule(5 * steps)) == pytest.approx(cfg.learning_rate / 2)
    assert float(agent.lr_schedule(10 * steps)) == pytest.approx(0.0)


def test_linear_entropy_schedule_sets_each_updates_bonus_weight():
    cfg = dataclasses.replace(BANDIT_PPO, entropy_coef=0.5, entropy_schedule="linear",
                              entropy_coef_final=0.1)
    agent = make_ppo_agent(cfg, TINY, A, total_updates=8)
    _, _, metrics = train_bandit(agent, updates=10)
    coefs = [float(m["entropy_coef"]) for m in metrics]
    # From 0.5 at the first update to 0.1 at the budget's end, then held there.
    np.testing.assert_allclose(coefs, [0.5 - 0.05 * u for u in range(8)] + [0.1, 0.1],
                               rtol=1e-5)
    assert agent.trace_counts["learn"] == 1  # the weight is traced, not baked in


def test_entropy_weight_enters_the_loss(bandit_run):
    agent, state, _, _ = bandit_run
    contexts = np.arange(N) % 4
    b = (N,)
    mb = ppo.Batch(obs=bandit_obs(contexts), first=np.ones(b, bool),
                   action=np.zeros(b, np.int32), log_prob=np.full(b, -np.log(A), np.float32),
                   value=np.zeros(b, np.float32), int_value=np.zeros(b, np.float32),
                   advantage=np.linspace(-1, 1, N, dtype=np.float32),
                   target=np.ones(b, np.float32), int_target=np.zeros(b, np.float32))
    params = agent.params(state)
    loss0, stats = agent._loss(params, mb, None, jnp.float32(0.0))
    loss1, _ = agent._loss(params, mb, None, jnp.float32(0.3))
    assert float(stats["entropy"]) > 0.0
    assert float(loss1) == pytest.approx(float(loss0) - 0.3 * float(stats["entropy"]), rel=1e-5)


def test_value_bootstraps_are_finite(bandit_run):
    agent, state, _, _ = bandit_run
    v = agent.value(agent.params(state), bandit_obs(np.arange(N) % 4), None)
    assert v.shape == (N,) and np.isfinite(np.asarray(v)).all()
    # The bandit pays 1 for the right action and the policy is near greedy: V ~ 1.
    assert 0.5 < float(np.mean(v)) < 1.5


# ---------------------------------------------------------------------------------------------
# RND


def test_rnd_bonus_shrinks_on_a_repeated_observation(bandit_run):
    agent = bandit_run[0]  # already compiled for these shapes
    state = agent.init(jax.random.PRNGKey(1), bandit_obs(np.zeros(1, int)), N)

    def trajectory(contexts):
        obs = bandit_obs(contexts)
        return Trajectory(
            obs=obs, first=np.ones((T + 1, N), bool), action=np.zeros((T, N), np.int32),
            reward=np.zeros((T, N), np.float32), terminated=np.zeros((T, N), bool),
            truncated=np.zeros((T, N), bool), truncation_value=np.zeros((T, N), np.float32),
            extras={"log_prob": np.full((T, N), -np.log(A), np.float32),
                    "value": np.zeros((T, N), np.float32),
                    "int_value": np.zeros((T, N), np.float32)},
            initial_carry=None)

    seen = trajectory(np.zeros((T + 1, N), int))  # only context 0, over and over
    novel = trajectory(np.full((T + 1, N), 3))  # never trained on
    _, m = agent.learn(state, novel, jax.random.PRNGKey(1))  # probe only: state discarded
    novel_before = float(m["intrinsic_reward_mean"])
    bonuses = []
    for i in range(20):
        state, m = agent.learn(state, seen, jax.random.PRNGKey(i))
        bonuses.append(float(m["intrinsic_reward_mean"]))
    _, m = agent.learn(state, novel, jax.random.PRNGKey(99))
    novel_after = float(m["intrinsic_reward_mean"])

    assert bonuses[-1] < 0.2 * bonuses[0], bonuses
    assert novel_after > 3 * bonuses[-1], (novel_after, bonuses[-1])
    assert novel_before > 0
    assert {"rnd_loss", "intrinsic_reward_mean"} <= set(m)
    assert all(np.isfinite(float(v)) for v in m.values())
    # The whole state, RND included, round-trips through flax serialization (checkpoints).
    restored = serialization.from_state_dict(
        state, serialization.msgpack_restore(serialization.msgpack_serialize(
            serialization.to_state_dict(jax.device_get(state)))))
    jax.tree_util.tree_map(np.testing.assert_array_equal, restored, jax.device_get(state))
    assert agent.trace_counts["learn"] == 1


# ---------------------------------------------------------------------------------------------
# Recurrent: learn must re-run the encoder exactly as act did


def test_recurrent_learn_replays_acting_exactly():
    enc = EncoderConfig(kind="perceiver", map="crop", recurrent=True, embed_dim=8,
                        glyph_features=False, num_latents=2, latent_dim=8, num_heads=2,
                        num_self_attention_blocks=0, mlp_hidden=16, output_dim=16)
    n, t = 4, 5
    cfg = PPOConfig(rollout_length=t, num_epochs=1, num_minibatches=2)
    agent = make_ppo_agent(cfg, enc, A, total_updates=1)
    np_rng = np.random.default_rng(0)
    state = agent.init(jax.random.PRNGKey(0), bandit_obs(np.zeros(1, int)), n)
    # A sharp policy, so that logits (and the KL below) react to any change of the memory.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x * 300.0 if "policy_head" in jax.tree_util.keystr(p) else x, state.params)
    state = state._replace(params=params)

    carry, first = agent.initial_carry(n), np.ones(n, bool)
    for i in range(3):  # warm up, so the rollout starts mid-episode with a non-trivial carry
        out = agent.act(params, bandit_obs(np_rng.integers(0, 4, n)), first, carry,
                        jax.random.PRNGKey(i), greedy=False)
        carry, first = out.carry, np.zeros(n, bool)
    initial = carry
    contexts = np_rng.integers(0, 4, (t + 1, n))
    firsts = np.zeros((t + 1, n), bool)
    firsts[2, 1] = firsts[3, 2] = True  # episode starts mid-rollout
    obs = bandit_obs(contexts)
    actions, extras = [], []
    for i in range(t):
        out = agent.act(params, {k: v[i] for k, v in obs.items()}, firsts[i], carry,
                        jax.random.PRNGKey(10 + i), greedy=False)
        carry = out.carry
        actions.append(np.asarray(out.action))
        extras.append({k: np.asarray(v) for k, v in out.extras.items()})
    traj = Trajectory(
        obs=obs, first=firsts, action=np.stack(actions), reward=np.zeros((t, n), np.float32),
        terminated=firsts[1:], truncated=np.zeros((t, n), bool),
        truncation_value=np.zeros((t, n), np.float32),
        extras={k: np.stack([e[k] for e in extras]) for k in extras[0]}, initial_carry=initial)
    assert np.std(traj.extras["log_prob"]) > 0.1, "the policy must be input-dependent"

    # With a zero learning rate every minibatch sees the acting params: ratios must be 1.
    agent0 = make_ppo_agent(dataclasses.replace(cfg, learning_rate=0.0), enc, A, 1)
    _, m = agent0.learn(state, traj, jax.random.PRNGKey(0))
    assert float(m["approx_kl"]) < 1e-6 and float(m["clip_fraction"]) == 0.0, m
    # Replaying from the wrong initial carry must show up: the check can fail.
    wrong = traj._replace(initial_carry=jnp.zeros_like(initial))
    _, m = agent0.learn(state, wrong, jax.random.PRNGKey(0))
    assert float(m["approx_kl"]) > 1e-3, m

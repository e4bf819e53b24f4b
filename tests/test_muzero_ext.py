"""MuZero extensions: the regularized search policy (Grill et al. 2020), the state-consistency
loss (EfficientZero) and reanalyze (Schrittwieser et al. 2021). Each is a config switch, off by
default.
"""

import copy
import dataclasses

import chex
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest
from test_muzero import hand_recurrent_fn  # the deterministic hand-built model

from omega.agents.base import Trajectory
from omega.agents.muzero import MuZeroConfig, losses, make_muzero_agent, optim
from omega.agents.muzero import search as mcts
from omega.agents.muzero.config import Support
from omega.config import config_from_dict
from omega.errors import ConfigError
from omega.models.encoders import EncoderConfig
from omega.replay import ReplayBatch

pytestmark = pytest.mark.usefixtures("fast_compiles")


# ---------------------------------------------------------------------------------------------
# Regularized policy optimisation


def kl_objective(pi, q, prior, lam):
    """q.pi - lam KL(prior, pi) per row: [N, A] -> [N]."""
    return jnp.sum(q * pi, -1) - lam * jnp.sum(prior * (jnp.log(prior) - jnp.log(pi)), -1)


def test_regularized_policy_hand_solved():
    # prior (1/2, 1/2), q (1, 0), lam 1: 1/(2(a-1)) + 1/(2a) = 1  =>  a^2 - 2a + 1/2 = 0,
    # a = 1 + 1/sqrt(2) (the root above max(q + lam prior) = 1.5), pi = (1/sqrt 2, 1 - 1/sqrt 2).
    q = jnp.array([[1.0, 0.0]])
    prior = jnp.array([[0.5, 0.5]])
    # lambda_N = c sqrt(n) / (n + |A|) = 3 * 2 / 6 = 1 with 4 visits over 2 actions and c = 3.
    lam = mcts.regularization_strength(jnp.array([[3.0, 1.0]]), 3.0)
    np.testing.assert_allclose(lam, [1.0], rtol=1e-6)
    pi = jax.jit(mcts.regularized_policy)(q, prior, lam)
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(pi, [[s, 1 - s]], rtol=1e-5)
    # The same pi from its closed form with that alpha.
    np.testing.assert_allclose(pi, 0.5 / ((1 + s) - np.asarray(q)), rtol=1e-5)


def test_regularized_policy_is_the_optimum():
    rng = np.random.default_rng(0)
    n, a = 64, 6
    q = jnp.asarray(rng.normal(size=(n, a)), jnp.float32)
    prior = jax.nn.softmax(jnp.asarray(rng.normal(size=(n, a)) * 2, jnp.float32))
    lam = jnp.asarray(rng.uniform(0.05, 3.0, n), jnp.float32)
    pi = jax.jit(mcts.regularized_policy)(q, prior, lam)
    chex.assert_shape(pi, (n, a))
    assert np.all(np.asarray(pi) > 0)
    np.testing.assert_allclose(pi.sum(-1), 1.0, rtol=1e-5)
    # Optimality (KKT): q_a + lam prior_a / pi_a is the same alpha for every action.
    alpha = q + lam[:, None] * prior / pi
    np.testing.assert_allclose(alpha, jnp.broadcast_to(alpha.mean(-1, keepdims=True), (n, a)),
                               rtol=1e-4, atol=1e-4)
    # ...and no distribution nearby scores better.
    best = kl_objective(pi, q, prior, lam)
    for _ in range(20):
        d = rng.normal(size=(n, a))
        d -= d.mean(-1, keepdims=True)  # stays on the simplex's plane
        step = 0.5 * np.asarray(pi).min(-1, keepdims=True) / np.abs(d).max(-1, keepdims=True)
        other = pi + step * d
        assert np.all(np.asarray(kl_objective(other, q, prior, lam)) <= np.asarray(best) + 1e-6)
    # The closed form's two limits: a huge lambda keeps the prior, a tiny one picks max q.
    np.testing.assert_allclose(mcts.regularized_policy(q, prior, jnp.full(n, 1e4)), prior,
                               atol=1e-3)
    greedy = mcts.regularized_policy(q, prior, jnp.full(n, 1e-4))
    np.testing.assert_array_equal(jnp.argmax(greedy, -1), jnp.argmax(q, -1))
    assert float(greedy.max(-1).min()) > 0.99


def test_completed_qvalues():
    q = jnp.array([[2.0, 0.0, 4.0, 0.0]])
    visits = jnp.array([[1.0, 0.0, 3.0, 2.0]])
    out = mcts.completed_qvalues(q, visits, jnp.array([1.0]))
    # Unvisited action 1 gets the root value 1; the range [0, 4] maps to [0, 1].
    np.testing.assert_allclose(out, [[0.5, 0.25, 1.0, 0.0]])


def hand_search(greedy, search="regularized", prior_logits=None):
    roots = jnp.array([0, 3, 0, 3])
    prior = jnp.zeros((4, 2)) if prior_logits is None else prior_logits
    root = mctx.RootFnOutput(prior_logits=prior, value=jnp.zeros(4), embedding=roots)
    return jax.jit(lambda rng: mcts.run_search(
        {}, rng, root, hand_recurrent_fn, num_simulations=32, pb_c_init=1.25, pb_c_base=19652,
        dirichlet_alpha=0.3, dirichlet_fraction=0.25, temperature=1.0, greedy=greedy,
        search=search))


@pytest.mark.parametrize("greedy", [True, False])
def test_regularized_search_finds_the_delayed_reward(greedy):
    search = hand_search(greedy)
    out = search(jax.random.PRNGKey(0))
    pi = np.asarray(out.search_policy)
    np.testing.assert_allclose(pi.sum(-1), 1.0, rtol=1e-5)
    # A one-step lookahead would take the 0.5; the search sees the 1.8 behind it.
    np.testing.assert_array_equal(pi.argmax(-1), [1, 0, 1, 0])
    assert np.all(pi.max(-1) > 0.75)
    assert np.all(np.asarray(out.root_value) > 0.5)
    if greedy:
        np.testing.assert_array_equal(out.action, [1, 0, 1, 0])
    else:  # sampled from pi: over many keys, the frequencies follow it
        actions = np.stack([np.asarray(search(jax.random.PRNGKey(i)).action)
                            for i in range(40)])
        assert 0.75 < np.mean(actions == [1, 0, 1, 0]) < 1.0


def test_regularized_search_policy_is_not_the_visit_counts():
    # A prior that strongly favours the bad action: with few simulations pUCT's visits follow
    # it, while pi_bar already moves to the action whose Q is better.
    prior = jnp.log(jnp.array([[0.9, 0.1], [0.1, 0.9]] * 2))
    visits = hand_search(True, "muzero", prior)(jax.random.PRNGKey(0)).search_policy
    pi = hand_search(True, "regularized", prior)(jax.random.PRNGKey(0)).search_policy
    assert np.all(np.asarray(pi)[[0, 2], 1] > np.asarray(visits)[[0, 2], 1])
    assert np.all(np.asarray(pi)[[1, 3], 0] > np.asarray(visits)[[1, 3], 0])


def test_regularized_search_config():
    cfg = config_from_dict({"agent_type": "muzero", "muzero": {"search": "regularized"}})
    assert cfg.muzero.search == "regularized"
    assert MuZeroConfig().search == "muzero"
    with pytest.raises(ConfigError, match="'regularized'"):
        config_from_dict({"agent_type": "muzero", "muzero": {"search": "rpo"}})


# ---------------------------------------------------------------------------------------------
# A walk over 4 rooms for the model-learning tests: the centre glyph of a 3x3 crop is the room;
# action a moves from room s to (s + a) % 4; episodes end at random (terminal; reward 1 when
# that last move lands in room 3). Episodes span several steps, so there are real next
# observations to be consistent with.

FLOOR = 2378
ROOM_GLYPHS = np.array([2360, 2361, 2380, 2383], np.int16)
TINY = EncoderConfig(kind="plain", map="crop", embed_dim=8, glyph_features=False,
                     cnn_channels=(), mlp_hidden=32, blstats_hidden=8, output_dim=32)
T, N, A = 16, 8, 4
SMALL = MuZeroConfig(
    latent_dim=16, dynamics_hidden=32, prediction_hidden=32, support_size=5, num_simulations=4,
    rollout_length=T, replay_size=2048, warmup_steps=T * N, batch_size=32, replay_ratio=1.0,
    unroll_steps=3, td_steps=3, learning_rate=3e-3)


def room_obs(rooms):
    crop = np.full(rooms.shape + (3, 3), FLOOR, np.int16)
    crop[..., 1, 1] = ROOM_GLYPHS[rooms]
    return {"glyphs_crop": crop}


def walk_trajectory(np_rng, rng_policy=None):
    rooms = np.zeros((T + 1, N), int)
    rooms[0] = np_rng.integers(0, 4, N)
    action = np_rng.integers(0, A, (T, N)).astype(np.int32)
    terminated = np_rng.random((T, N)) < 0.2
    for t in range(T):
        moved = (rooms[t] + action[t]) % 4
        rooms[t + 1] = np.where(terminated[t], np_rng.integers(0, 4, N), moved)
    reward = (terminated & ((rooms[:T] + action) % 4 == 3)).astype(np.float32)
    policy = (np.full((T, N, A), 1.0 / A, np.float32) if rng_policy is None
              else rng_policy.dirichlet(np.ones(A), (T, N)).astype(np.float32))
    return Trajectory(
        obs=room_obs(rooms), first=np.concatenate([np.ones((1, N), bool), terminated]),
        action=action, reward=reward, terminated=terminated, truncated=np.zeros((T, N), bool),
        truncation_value=np.zeros((T, N), np.float32),
        extras={"search_policy": policy, "root_value": np.zeros((T, N), np.float32)},
        initial_carry=None)


def filled_agent(cfg, rollouts=2, seed=0):
    """An agent (initialised) whose replay holds ``rollouts`` walk trajectories."""
    agent = make_muzero_agent(cfg, TINY, A, total_env_steps=10_000)
    state = agent.init(jax.random.PRNGKey(seed), room_obs(np.zeros(1, int)), N)
    np_rng = np.random.default_rng(seed)
    for _ in range(rollouts):
        traj = walk_trajectory(np_rng, np_rng)
        agent.replay.add({k: v[:-1] for k, v in traj.obs.items()}, traj.action, traj.reward,
                         traj.terminated, traj.truncated, traj.truncation_value,
                         traj.extras["search_policy"], traj.extras["root_value"])
    return agent, state


# ---------------------------------------------------------------------------------------------
# State consistency

CONSISTENT = dataclasses.replace(SMALL, consistency_loss_weight=2.0)


def test_consistency_loss_stops_the_target_gradient():
    rng = np.random.default_rng(0)
    online = jnp.asarray(rng.normal(size=(3, 2, 5)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(3, 2, 5)), jnp.float32)
    mask = jnp.array([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    loss = losses.consistency_loss(online, target, mask)
    chex.assert_shape(loss, (3,))
    np.testing.assert_allclose(losses.consistency_loss(online, online, mask), [-1.0, -0.5, 0.0],
                               rtol=1e-6)
    g_target = jax.grad(lambda x: losses.consistency_loss(online, x, mask).sum())(target)
    g_online = jax.grad(lambda x: losses.consistency_loss(x, target, mask).sum())(online)
    np.testing.assert_array_equal(g_target, 0.0)
    assert float(jnp.abs(g_online[0]).sum()) > 0
    np.testing.assert_array_equal(g_online[2], 0.0)  # masked: no gradient either


def test_consistency_is_off_by_default():
    assert MuZeroConfig().consistency_loss_weight == 0.0
    agent, state = filled_agent(SMALL, rollouts=1)
    assert "projection" not in state.params["params"]
    assert agent.replay.sample(4).next_obs is None
    with pytest.raises(ConfigError, match="consistency_loss_weight"):
        config_from_dict({"agent_type": "muzero", "muzero": {"consistency_loss_weight": -1}})


def test_consistency_loss_decreases_on_a_fixed_batch():
    agent, state = filled_agent(CONSISTENT)
    assert {"projection", "predictor"} <= set(state.params["params"])
    batch = agent.replay.sample(CONSISTENT.batch_size)._replace(index=())
    assert batch.next_obs_mask.sum() > 0
    params, opt_state = state.params, state.opt_state
    losses = []
    for i in range(40):
        params, opt_state, metrics, _ = agent._train_step(params, opt_state, jnp.int32(i), batch)
        losses.append(float(metrics["consistency_loss"]))
    assert agent.trace_counts["train"] == 1
    assert -1.0 <= min(losses) and max(losses) <= 1.0
    assert losses[-1] < losses[0] - 0.1, losses
    # The loss is one of learn's metrics from the first (warm-up) row on.
    warming, warming_state = filled_agent(
        dataclasses.replace(CONSISTENT, warmup_steps=2 * T * N), rollouts=0)
    _, m = warming.learn(warming_state, walk_trajectory(np.random.default_rng(1)),
                         jax.random.PRNGKey(0))
    assert np.isnan(m["consistency_loss"]) and np.isnan(m["loss"])


def test_consistency_is_masked_past_episode_ends():
    agent, state = filled_agent(CONSISTENT)
    batch = agent.replay.sample(CONSISTENT.batch_size)._replace(index=())
    mask = batch.next_obs_mask  # [B, K]
    # From a step that ends the episode on, the stored next observation is another episode's.
    assert 0 < mask.mean() < 1
    assert np.all(mask[batch.terminal_target == 1] == 0)
    np.testing.assert_array_equal(mask, batch.policy_mask[:, 1:])
    loss = jax.jit(agent._loss)

    def with_next_glyph(where, glyph):
        crop = batch.next_obs["glyphs_crop"].copy()
        crop[where] = glyph
        return batch._replace(next_obs={"glyphs_crop": crop})

    base, aux = loss(state.params, batch)
    masked = with_next_glyph(mask == 0, 2361)
    np.testing.assert_allclose(loss(state.params, masked)[1]["consistency_loss"],
                               aux["consistency_loss"], rtol=1e-6)
    np.testing.assert_allclose(loss(state.params, masked)[0], base, rtol=1e-6)
    changed = with_next_glyph(mask == 1, 2361)
    assert abs(float(loss(state.params, changed)[1]["consistency_loss"])
               - float(aux["consistency_loss"])) > 1e-4


# ---------------------------------------------------------------------------------------------
# Reanalyze


def stored_targets(agent):
    return agent.replay.data["search_policy"].copy(), agent.replay.data["root_value"].copy()


def test_reanalyze_off_changes_no_stored_target():
    assert MuZeroConfig().reanalyze_fraction == 0.0
    agent, state = filled_agent(SMALL)
    policy, value = stored_targets(agent)
    state, m = agent.learn(state, walk_trajectory(np.random.default_rng(5)),
                           jax.random.PRNGKey(1))
    assert int(state.train_steps) > 0 and "reanalyzed_steps" not in m
    # Only the newly added rollout differs (it overwrote nothing: the replay is not full).
    new, new_value = stored_targets(agent)
    old_slots = slice(0, agent.replay.time - T)
    np.testing.assert_array_equal(new[:, old_slots], policy[:, old_slots])
    np.testing.assert_array_equal(new_value[:, old_slots], value[:, old_slots])


@pytest.mark.parametrize("search", ["muzero", "gumbel"])
def test_reanalyze_rewrites_the_sampled_subset_without_noise(search):
    cfg = dataclasses.replace(SMALL, reanalyze_fraction=0.25, reanalyze_batch_size=24,
                              search=search, max_considered_actions=4)
    agent, state = filled_agent(cfg)
    policy, value = stored_targets(agent)
    starts = agent.replay.sample_starts(cfg.batch_size)
    rng_before = copy.deepcopy(agent.replay.rng)
    subset = copy.deepcopy(rng_before).choice(cfg.batch_size, 8, replace=False)
    envs, times = agent._reanalyze(state.params, starts)[:2]
    # A random 8 of the 32 sequences, K + 1 = 4 positions each (fewer where they overlap or
    # run past the newest step).
    env, start, _ = starts
    expected = {(env[i], t) for i in subset for t in range(start[i], start[i] + 4)
                if t < agent.replay.time}
    assert set(zip(envs.tolist(), times.tolist(), strict=True)) == expected
    assert 24 < len(envs) <= 32  # two search batches of 24, the second padded
    new, new_value = stored_targets(agent)
    slots = times % agent.replay.capacity
    changed = np.zeros(value.shape, bool)
    changed[envs, slots] = True
    # Exactly the reanalyzed steps changed (the stored policies were random Dirichlet draws).
    assert np.all(np.abs(new - policy).sum(-1)[changed] > 1e-4)
    np.testing.assert_array_equal(new[~changed], policy[~changed])
    np.testing.assert_array_equal(new_value[~changed], value[~changed])
    np.testing.assert_allclose(new[envs, slots].sum(-1), 1.0, rtol=1e-5)

    # Noise-free: the targets are those of the greedy search, whatever its key (24 steps: the
    # search batch size, compiled already)...
    first = envs[:24], slots[:24]
    obs = agent.replay.observations_at(envs[:24], times[:24])
    actor = agent.params(state)
    greedy = agent.act(actor, obs, None, None, jax.random.PRNGKey(7), greedy=True).extras
    np.testing.assert_allclose(new[first], greedy["search_policy"], atol=1e-5)
    np.testing.assert_allclose(new_value[first], greedy["root_value"], atol=1e-5)
    if search != "gumbel":  # ...not those of the noisy (Dirichlet) acting search
        noisy = agent.act(actor, obs, None, None, jax.random.PRNGKey(7)).extras
        assert np.abs(np.asarray(noisy["search_policy"]) - new[first]).max() > 1e-3
    # ...and the same again given the same params (and the same subset).
    agent.replay.data["search_policy"][:] = policy
    agent.replay.rng = rng_before
    again_envs, again_times = agent._reanalyze(state.params, starts)[:2]
    np.testing.assert_array_equal(again_envs, envs)
    np.testing.assert_array_equal(new, agent.replay.data["search_policy"])


def test_learner_pads_reanalyze_searches_only_to_what_a_train_step_can_reanalyze():
    # 8 of 32 sequences, K + 1 = 4 positions each: at most 32 roots, not 256 (padded roots
    # cost as much search as real ones); the targets are those of the 24-root searches.
    padded = {}
    for size in (256, 24):
        cfg = dataclasses.replace(SMALL, reanalyze_fraction=0.25, reanalyze_batch_size=size,
                                  search="gumbel", max_considered_actions=4)
        agent, state = filled_agent(cfg)
        shapes = []
        act = agent._act

        def spy(actor, obs, key, _act=act, _shapes=shapes, **kw):
            _shapes.append(next(iter(obs.values())).shape[0])
            return _act(actor, obs, key, **kw)

        agent._act = spy
        starts = agent.replay.sample_starts(cfg.batch_size)
        envs, times = agent._reanalyze(state.params, starts)[:2]
        slots = times % agent.replay.capacity
        padded[size] = (shapes, agent.replay.data["search_policy"][envs, slots],
                        agent.replay.data["root_value"][envs, slots])
    assert padded[256][0] == [32] and padded[24][0] == [24, 24]
    np.testing.assert_allclose(padded[256][1], padded[24][1], atol=1e-5)
    np.testing.assert_allclose(padded[256][2], padded[24][2], atol=1e-5)


def test_learn_with_reanalyze():
    cfg = dataclasses.replace(SMALL, reanalyze_fraction=0.5, reanalyze_batch_size=64,
                              consistency_loss_weight=1.0, search="regularized")
    agent, state = filled_agent(cfg, rollouts=1)
    policy, _ = stored_targets(agent)
    traces = None
    for i in range(2):
        state, m = agent.learn(state, walk_trajectory(np.random.default_rng(i)),
                               jax.random.PRNGKey(i))
        assert m["reanalyzed_steps"] > 0 and np.isfinite(m["loss"])
        assert np.isfinite(m["consistency_loss"])
        traces = traces or dict(agent.trace_counts)
    assert dict(agent.trace_counts) == traces  # built once: no retrace on the second learn
    assert agent.trace_counts["train"] == 1
    # Some of the first rollout's stored targets are now the search's, not the Dirichlet draws.
    new = agent.replay.data["search_policy"][:, :T]
    assert np.any(np.abs(new - policy[:, :T]).sum(-1) > 1e-4)


def test_reanalyze_config():
    with pytest.raises(ConfigError, match="reanalyze_fraction"):
        config_from_dict({"agent_type": "muzero", "muzero": {"reanalyze_fraction": 1.5}})
    with pytest.raises(ConfigError, match="reanalyze_batch_size"):
        config_from_dict({"agent_type": "muzero", "muzero": {"reanalyze_batch_size": 0}})


# ---------------------------------------------------------------------------------------------
# The prior's entropy bonus


def test_policy_entropy_on_known_logits():
    logits = jnp.stack([jnp.zeros((3, 4)),  # uniform over 4: log 4 everywhere
                        jnp.array([[0.0, 0.0, -1e9, -1e9]] * 3)])  # two actions: log 2
    mask = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    step_weight = jnp.array([1.0, 0.5, 0.5])
    np.testing.assert_allclose(losses.policy_entropy(logits, mask, step_weight),
                               [2 * np.log(4), 1.5 * np.log(2)], rtol=1e-6)


def test_policy_entropy_bonus_enters_the_loss_and_flattens_the_prior():
    assert MuZeroConfig().policy_entropy_weight == 0.0
    agent, state = filled_agent(SMALL)
    batch = agent.replay.sample(SMALL.batch_size)._replace(index=())
    # The stored targets are sharp: the prior sharpens towards them without the bonus.
    sharp = np.zeros_like(batch.policy_target)
    sharp[..., 0] = 1.0
    batch = batch._replace(policy_target=sharp, weight=np.ones_like(batch.weight))
    loss0, aux0 = jax.jit(agent._loss)(state.params, batch)
    assert 0 < float(aux0["policy_entropy"]) <= 2 * np.log(A) + 1e-5
    w = 0.7
    bonus = make_muzero_agent(dataclasses.replace(SMALL, policy_entropy_weight=w),
                              agent.encoder_cfg, A, agent.total_env_steps)
    loss1, aux1 = jax.jit(bonus._loss)(state.params, batch)
    np.testing.assert_allclose(aux1["policy_entropy"], aux0["policy_entropy"], rtol=1e-6)
    np.testing.assert_allclose(loss1, loss0 - w * aux0["policy_entropy"], rtol=1e-5)

    def trained_entropy(trainer):
        params, opt_state = state.params, state.opt_state
        for i in range(30):
            params, opt_state, metrics, _ = trainer._train_step(params, opt_state,
                                                                jnp.int32(i), batch)
        return float(metrics["policy_entropy"])

    assert trained_entropy(bonus) > trained_entropy(agent) + 0.1
    with pytest.raises(ConfigError, match="policy_entropy_weight"):
        config_from_dict({"agent_type": "muzero", "muzero": {"policy_entropy_weight": -0.1}})


# ---------------------------------------------------------------------------------------------
# Priority from the reward error


@pytest.mark.parametrize("stochastic", [False, True])
def test_priority_reward_weight_raises_the_priority_of_mispredicted_rewards(stochastic):
    base = dataclasses.replace(SMALL, stochastic=stochastic)
    agent, state = filled_agent(base)
    batch = agent.replay.sample(256)
    mispredicted = (batch.reward_target * batch.reward_mask).max(-1) > 0.5  # [B]
    assert 0 < mispredicted.sum() < 256
    step = jnp.int32(0)
    _, _, _, plain = agent._train_step(state.params, state.opt_state, step, batch)
    weighted_agent, _ = filled_agent(dataclasses.replace(base, priority_reward_weight=3.0))
    _, _, metrics, weighted = weighted_agent._train_step(state.params, state.opt_state, step,
                                                         batch)
    plain, weighted = np.asarray(plain), np.asarray(weighted)
    # Same params, same batch: the value error is unchanged, the reward error is added.
    assert float(metrics["value_error"]) == pytest.approx(plain.mean(), rel=1e-5)
    assert np.all(weighted >= plain - 1e-6)
    # An untrained model predicts rewards near 0, so starts with a reward of 1 gain ~3.
    assert np.all(weighted[mispredicted] - plain[mispredicted] > 1.5)


# ---------------------------------------------------------------------------------------------
# Muesli's policy-gradient term


def _pg_batch(action, mu_taken, value_target, reward_mask, a=4):
    """A minimal ReplayBatch for policy_gradient_loss: B starts, K = 1."""
    b = len(action)
    policy_target = np.full((b, 2, a), 0.0, np.float32)
    for i, (act, mu) in enumerate(zip(action, mu_taken, strict=True)):
        policy_target[i, 0] = (1.0 - mu) / (a - 1)
        policy_target[i, 0, act] = mu
    zeros = np.zeros((b, 1), np.float32)
    return ReplayBatch(
        obs={}, action=np.asarray(action, np.int32)[:, None], reward_target=zeros,
        reward_mask=np.asarray(reward_mask, np.float32)[:, None], terminal_target=zeros,
        value_target=np.stack([value_target, value_target], -1).astype(np.float32),
        value_mask=np.ones((b, 2), np.float32), policy_target=policy_target,
        policy_mask=np.ones((b, 2), np.float32), weight=np.ones(b, np.float32),
        value_partial=np.zeros((b, 2), np.float32), bootstrap_discount=np.zeros((b, 2), np.float32),
        bootstrap_obs={}, index=())


def test_policy_gradient_loss_on_known_inputs():
    support = Support(5)
    logits = jnp.log(jnp.array([[0.1, 0.2, 0.3, 0.4]] * 4))  # pi = 0.1, 0.2, 0.3, 0.4
    value_logits = jnp.zeros((4, support.bins))  # uniform over a symmetric support: v = 0
    batch = _pg_batch(action=[3, 0, 2, 1], mu_taken=[0.2, 0.5, 0.3, 0.2],
                      value_target=np.array([0.5, 0.5, -0.25, 0.8]), reward_mask=[1, 1, 1, 0])
    loss, advantage = losses.policy_gradient_loss(logits, value_logits, batch, support,
                                              normalize=False)
    # rho = min(1, pi / mu): 0.4 / 0.2 -> 1 (truncated), 0.1 / 0.5 = 0.2, 0.3 / 0.3 = 1; the
    # last start has no stored successor (reward_mask 0): no advantage, no loss.
    np.testing.assert_allclose(advantage, [0.5, 0.5, -0.25, 0.0], atol=1e-4)
    expected = [-1.0 * 0.5 * np.log(0.4), -0.2 * 0.5 * np.log(0.1),
                -1.0 * -0.25 * np.log(0.3), 0.0]
    np.testing.assert_allclose(loss, expected, rtol=1e-3)

    # The gradient raises the taken action's logit where the return beat the value and
    # lowers it where it fell short; the advantage and rho pass no gradient.
    def total(lg):
        return losses.policy_gradient_loss(lg, value_logits, batch, support, normalize=False)[0].sum()

    grad = np.asarray(jax.grad(total)(logits))
    assert grad[0, 3] < 0 and grad[1, 0] < 0  # descent raises these logits
    assert grad[2, 2] > 0  # and lowers this one
    np.testing.assert_allclose(grad[3], 0.0)
    pi = np.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(grad[0], -0.5 * (np.eye(4)[3] - pi), rtol=1e-3, atol=1e-6)
    value_grad = jax.grad(lambda v: losses.policy_gradient_loss(logits, v, batch, support)[0].sum())
    np.testing.assert_allclose(value_grad(value_logits), 0.0)

    # Normalised: the same loss divided by the advantages' std over the unmasked starts.
    normalized, raw = losses.policy_gradient_loss(logits, value_logits, batch, support)
    np.testing.assert_allclose(raw, advantage)
    std = np.std([0.5, 0.5, -0.25])
    np.testing.assert_allclose(normalized, np.asarray(expected) / std, rtol=1e-3, atol=1e-6)
    # Scaling every return and value (here: the targets; the value is 0) leaves it unchanged.
    scaled = batch._replace(value_target=batch.value_target * 4.0)
    np.testing.assert_allclose(losses.policy_gradient_loss(logits, value_logits, scaled, support)[0],
                               normalized, rtol=1e-3, atol=1e-6)


def test_policy_gradient_loss_over_positions_averages_the_live_ones():
    support = Support(5)
    pi = np.array([0.1, 0.2, 0.3, 0.4])
    b, p = 3, 2
    logits = jnp.log(jnp.broadcast_to(jnp.asarray(pi), (b, p, 4)))
    value_logits = jnp.zeros((b, p, support.bins))  # v = 0 everywhere
    action = np.array([[3, 0], [2, 2], [1, 3]], np.int32)  # [B, P]
    value_target = np.array([[0.5, -0.5], [1.0, 0.25], [0.4, 0.9]], np.float32)
    policy_target = np.full((b, p + 1, 4), 0.25, np.float32)  # mu = 0.25 for every action
    zeros = np.zeros((b, p), np.float32)
    batch = ReplayBatch(
        obs={}, action=action, reward_target=zeros, reward_mask=np.ones((b, p), np.float32),
        terminal_target=zeros,
        value_target=np.concatenate([value_target, np.zeros((b, 1), np.float32)], 1),
        value_mask=np.ones((b, p + 1), np.float32), policy_target=policy_target,
        policy_mask=np.ones((b, p + 1), np.float32), weight=np.ones(b, np.float32),
        value_partial=np.zeros((b, p + 1), np.float32),
        bootstrap_discount=np.zeros((b, p + 1), np.float32), bootstrap_obs={}, index=())
    # The third sequence's second observation is not its start's successor (an episode end).
    position_mask = jnp.array([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    loss, advantage = losses.policy_gradient_loss(logits, value_logits, batch, support,
                                              normalize=False, position_mask=position_mask)
    np.testing.assert_allclose(advantage, [[0.5, -0.5], [1.0, 0.25], [0.4, 0.0]], atol=1e-4)
    rho = np.minimum(1.0, pi / 0.25)
    term = -rho[action] * np.asarray(advantage) * np.log(pi[action])  # [B, P]
    np.testing.assert_allclose(loss, term.sum(1) / p, rtol=1e-3)
    # The first position alone is the start-only term, whatever follows it.
    start_only, _ = losses.policy_gradient_loss(logits[:, 0], value_logits[:, 0], batch, support,
                                            normalize=False)
    np.testing.assert_allclose(start_only, term[:, 0], rtol=1e-3)
    # Normalised over the five live positions, not the masked one.
    normalized, _ = losses.policy_gradient_loss(logits, value_logits, batch, support,
                                            position_mask=position_mask)
    live = np.asarray(advantage)[np.asarray(position_mask) > 0]
    np.testing.assert_allclose(normalized, term.sum(1) / p / live.std(), rtol=1e-3)


@pytest.mark.parametrize("stochastic", [False, True])
def test_policy_gradient_steps_use_the_real_next_observations(stochastic):
    base = dataclasses.replace(SMALL, stochastic=stochastic, policy_gradient_weight=1.0)
    agent, state = filled_agent(base)
    assert MuZeroConfig().policy_gradient_steps == 1
    steps = 3
    multi = make_muzero_agent(dataclasses.replace(base, policy_gradient_steps=steps),
                              agent.encoder_cfg, A, agent.total_env_steps)
    assert multi.replay.with_next_obs
    multi.replay = agent.replay
    agent.replay.with_next_obs = True
    batch = agent.replay.sample(SMALL.batch_size)._replace(index=())
    batch = batch._replace(weight=np.ones_like(batch.weight))
    net = agent.network
    method = type(net).initial_inference
    _, logits0, value_logits0 = net.apply(state.params, batch.obs, method=method)
    # Position j's predictions are the network's on the j-th real successor.
    logits, value_logits = losses.real_predictions(multi.network, state.params, batch,
                                                   steps - 1)
    assert logits.shape == (SMALL.batch_size, steps - 1, A)
    for j in range(steps - 1):
        obs_j = {k: v[:, j] for k, v in batch.next_obs.items()}
        _, lj, vj = net.apply(state.params, obs_j, method=method)
        np.testing.assert_allclose(logits[:, j], lj, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(value_logits[:, j], vj, rtol=1e-5, atol=1e-5)
    pg, advantage, live = multi._policy_gradient(state.params, batch, logits0, value_logits0)
    assert advantage.shape == live.shape == (SMALL.batch_size, steps)
    # Positions past an episode end (or past the newest stored step) are masked out.
    dead = np.asarray(batch.next_obs_mask[:, :steps - 1]) == 0
    assert dead.any()
    np.testing.assert_allclose(np.asarray(advantage)[:, 1:][dead], 0.0)
    np.testing.assert_allclose(np.asarray(live)[:, 1:][dead], 0.0)
    # The logged mean |A| is over the live positions only, not diluted by the masked zeros.
    _, metrics = losses.policy_gradient_term(multi.network, multi.cfg, state.params, batch,
                                             logits0, value_logits0)
    live_abs = np.abs(np.asarray(advantage))[np.asarray(live) > 0]
    np.testing.assert_allclose(metrics["advantage"], live_abs.mean(), rtol=1e-5)
    single, _, _ = agent._policy_gradient(state.params, batch, logits0, value_logits0)
    assert not np.allclose(pg, single)
    # Only the policy-gradient term differs between the two losses (which use the value
    # targets bootstrapped afresh, so their terms differ from the ones above).
    loss_single, aux_single = jax.jit(agent._loss)(state.params, batch)
    loss_multi, aux = jax.jit(multi._loss)(state.params, batch)
    np.testing.assert_allclose(aux["value_loss"], aux_single["value_loss"], rtol=1e-6)
    np.testing.assert_allclose(loss_multi - loss_single,
                               aux["policy_gradient_loss"] - aux_single["policy_gradient_loss"],
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="policy_gradient_steps"):
        config_from_dict({"agent_type": "muzero",
                          "muzero": {"unroll_steps": 3, "policy_gradient_steps": 4}})


@pytest.mark.parametrize("stochastic", [False, True])
def test_policy_gradient_weight_enters_the_loss(stochastic):
    assert MuZeroConfig().policy_gradient_weight == 0.0
    base = dataclasses.replace(SMALL, stochastic=stochastic)
    agent, state = filled_agent(base)
    batch = agent.replay.sample(SMALL.batch_size)._replace(index=())
    batch = batch._replace(weight=np.ones_like(batch.weight))
    loss0, aux0 = jax.jit(agent._loss)(state.params, batch)
    assert "policy_gradient_loss" not in aux0
    w = 2.0
    weighted = make_muzero_agent(dataclasses.replace(base, policy_gradient_weight=w),
                                 agent.encoder_cfg, A, agent.total_env_steps)
    loss1, aux1 = jax.jit(weighted._loss)(state.params, batch)
    assert float(aux1["advantage"]) > 0
    np.testing.assert_allclose(loss1, loss0 + w * aux1["policy_gradient_loss"], rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ConfigError, match="policy_gradient_weight"):
        config_from_dict({"agent_type": "muzero", "muzero": {"policy_gradient_weight": -1.0}})


@pytest.mark.parametrize("stochastic", [False, True])
def test_policy_gradient_fade_lowers_the_weight_over_the_train_steps(stochastic):
    assert MuZeroConfig().policy_gradient_fade_until == 0.0
    faded = dataclasses.replace(SMALL, stochastic=stochastic, policy_gradient_weight=2.0,
                                policy_gradient_fade_until=0.5)
    for progress, weight in [(0.0, 2.0), (0.25, 1.0), (0.5, 0.0), (0.9, 0.0)]:
        np.testing.assert_allclose(losses.policy_gradient_weight_at(faded, progress), weight)
    constant = dataclasses.replace(faded, policy_gradient_fade_until=0.0)
    np.testing.assert_allclose(losses.policy_gradient_weight_at(constant, 0.9), 2.0)
    # The train step reads the weight from its step: at the first step it trains as the
    # constant weight does, from fade_until on as an agent without the term.
    agent, state = filled_agent(faded)
    total = agent.total_train_steps
    batch = agent.replay.sample(SMALL.batch_size)._replace(index=())
    without = make_muzero_agent(dataclasses.replace(faded, policy_gradient_weight=0.0),
                                agent.encoder_cfg, A, agent.total_env_steps)
    full = make_muzero_agent(constant, agent.encoder_cfg, A, agent.total_env_steps)

    def step(a, at):
        params, _, metrics, _ = a._train_step(state.params, state.opt_state, jnp.int32(at),
                                              batch)
        return params, metrics

    start, metrics = step(agent, 0)
    chex.assert_trees_all_close(start, step(full, 0)[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics["policy_gradient_weight"], 2.0)
    _, metrics = step(agent, total // 4)
    np.testing.assert_allclose(metrics["policy_gradient_weight"],
                               2.0 * (1 - (total // 4) / total / 0.5), rtol=1e-6)
    late, metrics = step(agent, total // 2)
    assert float(metrics["policy_gradient_weight"]) == 0.0
    chex.assert_trees_all_close(late, step(without, total // 2)[0], rtol=1e-5, atol=1e-7)
    assert not jax.tree_util.tree_all(jax.tree_util.tree_map(  # the term did train at first
        lambda x, y: bool(jnp.allclose(x, y, rtol=1e-5, atol=1e-7)), start,
        step(without, 0)[0]))
    with pytest.raises(ConfigError, match="policy_gradient_fade_until"):
        config_from_dict({"agent_type": "muzero", "muzero": {"policy_gradient_fade_until": 1.5}})


# ---------------------------------------------------------------------------------------------
# Moving average of the params for evaluation


def test_params_ema_on_known_updates():
    params = {"w": jnp.array([1.0, 2.0])}
    transform = optim.params_ema(0.5)
    state = transform.init(params)
    np.testing.assert_allclose(state.ema["w"], [1.0, 2.0])  # starts at the initial params
    updates = {"w": jnp.array([2.0, -2.0])}
    out, state = transform.update(updates, state, params)
    np.testing.assert_allclose(out["w"], updates["w"])  # passes the updates through
    np.testing.assert_allclose(state.ema["w"], [2.0, 1.0])  # 0.5 * [1, 2] + 0.5 * [3, 0]
    out, state = transform.update(updates, state, {"w": jnp.array([3.0, 0.0])})
    np.testing.assert_allclose(state.ema["w"], [3.5, -0.5])  # 0.5 * [2, 1] + 0.5 * [5, -2]


def test_eval_params_ema_averages_what_evaluation_acts_with(tmp_path):
    from omega.training.checkpoint import LoopState, load_checkpoint, save_checkpoint

    assert MuZeroConfig().eval_params_ema == 0.0
    plain, plain_state = filled_agent(SMALL)
    assert plain.eval_params(plain_state).net is plain_state.params  # off: the current params
    decay = 0.9
    agent, state = filled_agent(dataclasses.replace(SMALL, eval_params_ema=decay,
                                                    replay_ratio=4.0, warmup_steps=0))
    before = state.params
    traj = walk_trajectory(np.random.default_rng(1), np.random.default_rng(2))
    state, _ = agent.learn(state, traj, jax.random.PRNGKey(0))
    steps = int(state.train_steps)
    assert steps >= 2
    # Every step moved the params; the average lags behind them, between start and end.
    ema, now = agent.eval_params(state).net, state.params
    assert agent.params(state).net is now  # acting in training keeps the current params
    assert agent.eval_params(state, average=False).net is now
    gaps = jax.tree_util.tree_map(lambda e, p, b: (float(jnp.abs(e - p).max()),
                                                   float(jnp.abs(e - b).max())),
                                  ema, now, before)
    assert all(g[0] > 0 and g[1] > 0 for g in jax.tree_util.tree_leaves(
        gaps, is_leaf=lambda x: isinstance(x, tuple)))
    # With one step the average is exactly decay * start + (1 - decay) * new.
    one, one_state = filled_agent(dataclasses.replace(SMALL, eval_params_ema=decay))
    batch = one.replay.sample(SMALL.batch_size)._replace(index=())
    new_params, opt_state, _, _ = one._train_step(one_state.params, one_state.opt_state,
                                                  one_state.train_steps, batch)
    expected = jax.tree_util.tree_map(lambda b, p: decay * b + (1 - decay) * p,
                                      one_state.params, new_params)
    chex.assert_trees_all_close(opt_state[-1].ema, expected, rtol=1e-5, atol=1e-6)
    # The average is part of the checkpoint.
    path = save_checkpoint(tmp_path, state, LoopState(env_steps=1, updates=1, episodes=0,
                                                      rng=np.zeros(2, np.uint32)), "h")
    template = agent.init(jax.random.PRNGKey(5), room_obs(np.zeros(1, int)), N)
    restored, _ = load_checkpoint(path, template, "h")
    chex.assert_trees_all_close(agent.eval_params(restored).net, ema)
    with pytest.raises(ConfigError, match="eval_params_ema"):
        config_from_dict({"agent_type": "muzero", "muzero": {"eval_params_ema": 1.0}})

"""How MuZero's learning targets are made: the Gumbel target's Q normalisation (floor and
statistics), the target network, reanalyze without write-back, and the diagnostics that
show what each does (Q spread, target KL, per-loss gradient norms, latent rank).
"""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest
from test_muzero_ext import SMALL, filled_agent, walk_trajectory
from test_muzero_ext import N as N_ENVS

from omega.agents.muzero import losses, optim
from omega.agents.muzero import search as mcts
from omega.agents.muzero.networks import logits_to_scalar
from omega.training.checkpoint import LoopState, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("fast_compiles")

A = 4


def bandit_recurrent_fn(rewards):
    """A one-step model: action a pays rewards[a] and ends the episode (discount 0)."""
    def fn(params, rng, action, state):
        del params, rng
        reward = jnp.asarray(rewards)[action]
        out = mctx.RecurrentFnOutput(reward=reward, discount=jnp.zeros_like(reward),
                                     prior_logits=jnp.zeros((state.shape[0], A)),
                                     value=jnp.zeros_like(reward))
        return out, state
    return fn


def gumbel_target(rewards, floor, stats="root", value_scale=0.1, prior=None):
    n = 3
    prior = jnp.zeros((n, A)) if prior is None else prior
    root = mctx.RootFnOutput(prior_logits=prior, value=jnp.zeros(n),
                             embedding=jnp.zeros(n, jnp.int32))
    out = mcts.run_search({}, jax.random.PRNGKey(0), root, bandit_recurrent_fn(rewards),
                        num_simulations=16, pb_c_init=1.25, pb_c_base=19652.0,
                        dirichlet_alpha=0.3, dirichlet_fraction=0.25, temperature=1.0,
                        greedy=True, search="gumbel", max_considered_actions=A,
                        gumbel_value_scale=value_scale, gumbel_q_floor=floor,
                        gumbel_q_stats=stats)
    return out


def test_q_floor_keeps_the_target_at_the_prior_when_q_barely_differs():
    tiny = [0.0, 1e-5, 0.0, 0.0]
    # mctx's floor: a spread of 1e-5 becomes the full push, ~(50 + 4) * 0.1 = 5.4 logits.
    loose = gumbel_target(tiny, floor=1e-8)
    assert float(loose.search_policy[0, 1]) > 0.9
    assert float(loose.target_kl[0]) > 1.0
    # A floor of 0.01 scales that push by 1e-5 / 0.01: the target stays the (uniform) prior.
    floored = gumbel_target(tiny, floor=0.01)
    np.testing.assert_allclose(floored.search_policy, 0.25, atol=2e-3)
    assert float(floored.target_kl.max()) < 1e-5
    np.testing.assert_allclose(floored.q_spread, 1e-5, rtol=1e-3)
    # A real difference is pushed as hard either way.
    real = [0.0, 0.5, 0.0, 0.0]
    np.testing.assert_allclose(gumbel_target(real, floor=0.01).search_policy,
                               gumbel_target(real, floor=1e-8).search_policy, rtol=1e-5)
    assert float(gumbel_target(real, floor=0.01).search_policy[0, 1]) > 0.9


def random_tree(seed=0, n=5):
    """A tree from a Gumbel search of a random model, for the qtransform tests."""
    rng = np.random.default_rng(seed)
    table = jnp.asarray(rng.normal(size=(8, A)), jnp.float32)

    def fn(params, key, action, state):
        del params, key
        reward = table[state % 8, action]
        out = mctx.RecurrentFnOutput(reward=reward, discount=jnp.full_like(reward, 0.9),
                                     prior_logits=table[(state + 3) % 8],
                                     value=table[(state + 1) % 8, action])
        return out, state * A + action + 1

    root = mctx.RootFnOutput(prior_logits=jnp.asarray(rng.normal(size=(n, A)), jnp.float32),
                             value=jnp.asarray(rng.normal(size=n), jnp.float32),
                             embedding=jnp.arange(n, dtype=jnp.int32))
    return mctx.gumbel_muzero_policy({}, jax.random.PRNGKey(seed), root, fn, 24,
                                     max_num_considered_actions=A).search_tree


def test_root_normalisation_matches_mctx():
    tree = random_tree()
    node = jnp.zeros((), jnp.int32)
    for value_scale, rescale in [(0.1, True), (0.025, True), (1.0, False)]:
        ours = jax.vmap(functools.partial(mcts.qtransform_normalized, node_index=node,
                                          value_scale=value_scale, floor=1e-8,
                                          rescale=rescale))(tree)
        theirs = jax.vmap(functools.partial(mctx.qtransform_completed_by_mix_value,
                                            node_index=node, value_scale=value_scale,
                                            rescale_values=rescale))(tree)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_tree_statistics_normalise_by_everything_the_search_saw():
    tree = random_tree(seed=1)
    t = jax.tree_util.tree_map(lambda x: np.asarray(x[0]), tree)  # one env, numpy
    node = jnp.zeros((), jnp.int32)
    edge_q = t.children_rewards + t.children_discounts * t.children_values
    seen = np.concatenate([edge_q[t.children_visits > 0], t.node_values[t.node_visits > 0]])
    completed = np.asarray(mcts.mixed_completed_qvalues(jax.tree_util.tree_map(jnp.asarray, t),
                                                      node))
    lo, hi = min(seen.min(), completed.min()), max(seen.max(), completed.max())
    assert hi - lo > completed.max() - completed.min()  # the tree saw more than the root
    expected = (50 + t.children_visits[0].max()) * 0.1 * (completed - lo) / (hi - lo)
    ours = mcts.qtransform_normalized(jax.tree_util.tree_map(jnp.asarray, t), node,
                                    value_scale=0.1, floor=0.01, stats="tree")
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    # So the root's own spread pushes less than with the root's statistics.
    root_stats = mcts.qtransform_normalized(jax.tree_util.tree_map(jnp.asarray, t), node,
                                          value_scale=0.1, floor=0.01, stats="root")
    assert float(np.ptp(ours)) < float(np.ptp(root_stats))


def test_effective_rank():
    rng = np.random.default_rng(0)
    line = np.outer(rng.normal(size=64), rng.normal(size=8))
    np.testing.assert_allclose(losses.effective_rank(jnp.asarray(line, jnp.float32)), 1.0, atol=1e-3)
    q, _ = np.linalg.qr(rng.normal(size=(64, 8)))  # 8 orthonormal columns: equal singular values
    spread = losses.effective_rank(jnp.asarray(q, jnp.float32))
    assert 7.0 < float(spread) <= 8.0


# ---------------------------------------------------------------------------------------------
# Target network


def test_target_network_refreshes_every_n_updates_and_is_checkpointed(tmp_path):
    cfg = dataclasses.replace(SMALL, target_update_interval=3)
    agent, state = filled_agent(cfg)
    chex.assert_trees_all_equal(agent.target_network(state.opt_state), state.params)
    batch = agent.replay.sample(cfg.batch_size)._replace(index=())
    params, opt = state.params, state.opt_state
    history = [params]  # params after j updates
    for j in range(7):
        params, opt, _, _ = agent._train_step(params, opt, jnp.int32(j), batch)
        history.append(params)
        # After j + 1 updates the target holds the params of the last multiple of 3.
        chex.assert_trees_all_equal(agent.target_network(opt), history[3 * ((j + 1) // 3)])
    target = agent.target_network(opt)
    assert not np.allclose(np.asarray(jax.tree_util.tree_leaves(target)[0]),
                           np.asarray(jax.tree_util.tree_leaves(params)[0]))
    saved = state._replace(params=params, opt_state=opt)
    loop = LoopState(env_steps=7, updates=7, episodes=0, rng=np.zeros(2, np.uint32))
    path = save_checkpoint(tmp_path, saved, loop, "hash")
    restored, _ = load_checkpoint(path, state, "hash")
    chex.assert_trees_all_equal(agent.target_network(restored.opt_state), target)
    # Off (the default), the optimiser state is what it was before target networks existed,
    # so older checkpoints load.
    plain, plain_state = filled_agent(SMALL)
    assert optim.find_state(plain_state.opt_state, optim.TargetParamsState) is None
    assert len(plain_state.opt_state) == 2  # clip, adam
    with pytest.raises(TypeError, match="target network"):
        plain.target_network(plain_state.opt_state)


def test_bootstrap_values_come_from_the_target_network():
    cfg = dataclasses.replace(SMALL, target_update_interval=100)
    agent, state = filled_agent(cfg)
    batch = agent.replay.sample(cfg.batch_size)._replace(index=())
    other, opt = state.params, state.opt_state  # trained a little: its values are not all 0
    for j in range(20):
        other, opt, _, _ = agent._train_step(other, opt, jnp.int32(j), batch)
    # (The untrained value head predicts a uniform distribution, whose cross-entropy is the
    # same for every target, so the online params here are the trained ones.)
    same, _ = agent._loss_terms(other, batch, other)
    moved, _ = agent._loss_terms(other, batch, state.params)
    # Only the value targets read the bootstrap network.
    np.testing.assert_allclose(same["policy"], moved["policy"])
    np.testing.assert_allclose(same["reward"], moved["reward"])
    assert not np.allclose(same["value"], moved["value"])


# ---------------------------------------------------------------------------------------------
# Reanalyze


@pytest.mark.parametrize("write_back", [True, False])
def test_reanalyze_write_back(write_back):
    cfg = dataclasses.replace(SMALL, search="gumbel", max_considered_actions=A,
                              reanalyze_fraction=0.5, reanalyze_write_back=write_back)
    agent, state = filled_agent(cfg)
    stored = agent.replay.time  # the steps already in the replay, slots 0 .. stored - 1
    before = agent.replay.data["search_policy"][:, :stored].copy()
    traj = walk_trajectory(np.random.default_rng(5), np.random.default_rng(6))
    _, metrics = agent.learn(state, traj, jax.random.PRNGKey(1))
    assert metrics["reanalyzed_steps"] > 0
    assert np.isfinite(metrics["target_kl_reanalyzed"])
    after = agent.replay.data["search_policy"][:, :stored]
    assert (not np.allclose(after, before)) == write_back


# ---------------------------------------------------------------------------------------------
# Diagnostics


@pytest.mark.parametrize("consistency", [0.0, 0.5])
def test_learn_logs_the_target_diagnostics(consistency):
    cfg = dataclasses.replace(SMALL, search="gumbel", max_considered_actions=A,
                              diagnostics_interval=1, consistency_loss_weight=consistency)
    agent, state = filled_agent(cfg)
    traj = walk_trajectory(np.random.default_rng(5), np.random.default_rng(6))
    act = agent.act(agent.params(state), {k: v[0] for k, v in traj.obs.items()},
                    traj.first[0], None, jax.random.PRNGKey(0))
    traj = traj._replace(extras={**traj.extras,
                                 "q_spread": np.tile(np.asarray(act.extras["q_spread"]),
                                                     (traj.action.shape[0], 1)),
                                 "target_kl": np.tile(np.asarray(act.extras["target_kl"]),
                                                      (traj.action.shape[0], 1))})
    _, metrics = agent.learn(state, traj, jax.random.PRNGKey(1))
    terms = ["policy", "value", "reward", "terminal"] + (["consistency"] if consistency else [])
    for name in terms:
        assert np.isfinite(metrics[f"grad_norm_{name}"]) and metrics[f"grad_norm_{name}"] > 0
    assert ("grad_norm_consistency" in metrics) == bool(consistency)
    assert 1.0 <= metrics["latent_effective_rank"] <= cfg.latent_dim
    spread = np.asarray(act.extras["q_spread"])
    assert metrics["root_q_spread"] == pytest.approx(float(spread.mean()), rel=1e-5)
    assert metrics["root_q_spread_below_0_01"] == pytest.approx(float(np.mean(spread < 0.01)))
    assert metrics["target_kl_fresh"] >= -1e-6


def test_policy_gradient_weights_by_the_acting_policy_not_the_reanalyzed_one():
    agent, state = filled_agent(SMALL)
    replay = agent.replay
    env, time = np.arange(N_ENVS), np.full(N_ENVS, replay.oldest)
    acted = replay.search_targets_at(env, time)[0]
    fresh = np.zeros_like(acted)
    fresh[:, 0] = 1.0  # reanalyze says: always action 0
    replay.set_search_targets(env, time, fresh, np.zeros(N_ENVS, np.float32))
    starts = (env, time, np.ones(N_ENVS, np.float32))
    batch = replay.sample(N_ENVS, starts=starts)
    np.testing.assert_allclose(batch.policy_target[:, 0], fresh)
    np.testing.assert_allclose(batch.behaviour_policy[:, 0], acted)
    # The importance weight rho = min(1, pi / mu) reads mu from the acting policy: with the
    # reanalyzed target as mu, an action other than 0 would get mu = 0 and rho = 1.
    logits = jnp.zeros((N_ENVS, A)) - 0.5 * jnp.arange(A)  # a prior that is not uniform
    value_logits = jnp.zeros((N_ENVS, 2 * SMALL.support_size + 1))
    loss, _ = losses.policy_gradient_loss(logits, value_logits, batch, SMALL.support,
                                      normalize=False)
    pi = np.asarray(jax.nn.softmax(logits))
    taken = np.asarray(batch.action[:, 0])
    mu = acted[np.arange(N_ENVS), taken]
    rho = np.minimum(1.0, pi[np.arange(N_ENVS), taken] / np.maximum(mu, 1e-6))
    value = np.asarray(logits_to_scalar(value_logits, SMALL.support))
    mask = batch.reward_mask[:, 0] * batch.policy_mask[:, 0]
    advantage = (batch.value_target[:, 0] - value) * mask
    expected = -rho * advantage * np.log(pi[np.arange(N_ENVS), taken])
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(rho, np.minimum(1.0, pi[np.arange(N_ENVS), taken]
                                           / np.maximum(fresh[np.arange(N_ENVS), taken], 1e-6)))

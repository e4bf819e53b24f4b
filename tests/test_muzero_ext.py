"""MuZero extensions: the regularized search policy (Grill et al. 2020), the state-consistency
loss (EfficientZero) and reanalyze (MuZero Unplugged). Each is a config switch, off by default.
"""

import chex
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from omega.agents.muzero import MuZeroConfig
from omega.agents.muzero import agent as mz
from omega.config import config_from_dict
from omega.errors import ConfigError


@pytest.fixture(scope="module", autouse=True)
def fast_compiles():
    """Tiny programs: XLA's optimisation passes would take longer than running them."""
    old = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


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
    lam = mz.regularization_strength(jnp.array([[3.0, 1.0]]), 3.0)
    np.testing.assert_allclose(lam, [1.0], rtol=1e-6)
    pi = jax.jit(mz.regularized_policy)(q, prior, lam)
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
    pi = jax.jit(mz.regularized_policy)(q, prior, lam)
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
    np.testing.assert_allclose(mz.regularized_policy(q, prior, jnp.full(n, 1e4)), prior,
                               atol=1e-3)
    greedy = mz.regularized_policy(q, prior, jnp.full(n, 1e-4))
    np.testing.assert_array_equal(jnp.argmax(greedy, -1), jnp.argmax(q, -1))
    assert float(greedy.max(-1).min()) > 0.99


def test_completed_qvalues():
    q = jnp.array([[2.0, 0.0, 4.0, 0.0]])
    visits = jnp.array([[1.0, 0.0, 3.0, 2.0]])
    out = mz.completed_qvalues(q, visits, jnp.array([1.0]))
    # Unvisited action 1 gets the root value 1; the range [0, 4] maps to [0, 1].
    np.testing.assert_allclose(out, [[0.5, 0.25, 1.0, 0.0]])


# A deterministic model (as in tests/test_muzero.py): action 0 pays 0.5 and ends in the dead
# state 1; action 1 pays nothing but leads to state 2, where every action pays 2. States 3..5
# mirror it with the actions swapped.
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


def hand_search(greedy, search="regularized", prior_logits=None):
    roots = jnp.array([0, 3, 0, 3])
    prior = jnp.zeros((4, 2)) if prior_logits is None else prior_logits
    root = mctx.RootFnOutput(prior_logits=prior, value=jnp.zeros(4), embedding=roots)
    return jax.jit(lambda rng: mz.run_search(
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

"""MuZero's search: one batched search over all envs with mctx, and what it needs around it.

The Q transforms (:func:`qtransform_normalized`, :func:`completed_qvalues`), the regularized
policy of Grill et al. (2020) (:func:`regularized_policy`), the greedy tie-break on Q
(:func:`greedy_action`) and the searches themselves: :func:`run_search` (pUCT, Gumbel or
regularized over a deterministic model) and :func:`run_stochastic_search` (pUCT or
regularized over a model with chance nodes). Both share the policy read off a pUCT tree
(:func:`puct_policy`), as mctx's policies share one search. Pure functions over jax arrays
and ``mctx.Tree``; the model enters as mctx callbacks.

Shapes: ``N`` envs, ``A`` actions.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import mctx

from omega.agents.base import Params
from omega.agents.muzero.config import Support
from omega.agents.muzero.networks import logits_to_scalar


class SearchOutput(NamedTuple):
    action: jax.Array  # [N] int32
    search_policy: jax.Array  # [N, A] visit distribution
    root_value: jax.Array  # [N] the search's value estimate of the root
    # Diagnostics: max - min of the root's completed Q-values (unvisited actions completed
    # by the mixed value, before any normalisation), and KL(search_policy || prior).
    q_spread: jax.Array | None = None  # [N]
    target_kl: jax.Array | None = None  # [N]


def regularization_strength(visit_counts: jax.Array, c: float) -> jax.Array:
    """Grill et al.'s lambda_N = c sqrt(n) / (n + |A|), n the root's visits: [N, A] -> [N]."""
    n = visit_counts.sum(-1)
    return c * jnp.sqrt(n) / (n + visit_counts.shape[-1])


def completed_qvalues(qvalues: jax.Array, visit_counts: jax.Array,
                      value: jax.Array) -> jax.Array:
    """Root Q-values [N, A] with unvisited actions completed by the root value [N], min-max
    normalised to [0, 1] over them and the root value (the scale pUCT compares them on)."""
    completed = jnp.where(visit_counts > 0, qvalues, value[:, None])  # [N, A]
    lo = jnp.minimum(completed.min(-1), value)[:, None]
    hi = jnp.maximum(completed.max(-1), value)[:, None]
    return (completed - lo) / jnp.maximum(hi - lo, 1e-8)


def regularized_policy(q: jax.Array, prior: jax.Array, lam: jax.Array,
                       num_iterations: int = 32) -> jax.Array:
    """pi_bar = argmax_pi q.pi - lam KL(prior, pi) (Grill et al. 2020): [N, A] -> [N, A].

    The maximiser is ``lam * prior / (alpha - q)`` with ``alpha`` the one value that makes it
    sum to 1; the sum falls as ``alpha`` rises and is >= 1 at ``max(q + lam * prior)`` and
    <= 1 at ``max(q) + lam``, so a fixed number of bisection steps finds it. ``lam`` [N] > 0.
    """
    lam = lam[:, None]  # [N, 1]
    # pi_bar does not change when q shifts; with max(q) = 0, alpha is small and float32
    # resolves the gap alpha - q of the best action, which can be tiny, far better.
    q = q - q.max(-1, keepdims=True)

    def policy(alpha: jax.Array) -> jax.Array:  # [N] -> [N, A]
        gap = jnp.maximum(alpha[:, None] - q, 1e-12)
        return jnp.where(prior > 0, lam * prior / gap, 0.0)

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = policy(mid).sum(-1) > 1.0  # alpha too small
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo = jnp.max(q + lam * prior, axis=-1)  # [N]
    hi = lam[:, 0]  # [N]: max(q) + lam
    lo, hi = jax.lax.fori_loop(0, num_iterations, bisect, (lo, hi))
    pi = policy(0.5 * (lo + hi))
    return pi / pi.sum(-1, keepdims=True)  # the remaining bisection error, normalised away


def mixed_completed_qvalues(tree: mctx.Tree, node_index: jax.Array) -> jax.Array:
    """The node's Q-values [A] with the unvisited actions completed by the mixed value of
    Danihelka et al. (2022), Appendix D, as mctx completes them; unbatched ``tree``."""
    qvalues = tree.qvalues(node_index)
    visits = tree.children_visits[node_index]
    prior = jnp.maximum(jax.nn.softmax(tree.children_prior_logits[node_index]),
                        jnp.finfo(jnp.float32).tiny)
    visited = visits > 0
    sum_probs = jnp.sum(jnp.where(visited, prior, 0.0))
    weighted_q = jnp.sum(jnp.where(visited, prior * qvalues / jnp.where(visited, sum_probs, 1.0),
                                   0.0))
    total = visits.sum()
    mixed = (tree.raw_values[node_index] + total * weighted_q) / (total + 1)
    return jnp.where(visited, qvalues, mixed)


def tree_value_range(tree: mctx.Tree) -> tuple[jax.Array, jax.Array]:
    """The smallest and largest value the search saw ([], []; unbatched ``tree``): every
    visited edge's Q = reward + discount * child value and every visited node's value."""
    edge_q = tree.children_rewards + tree.children_discounts * tree.children_values
    edge_seen = tree.children_visits > 0
    node_seen = tree.node_visits > 0
    lo = jnp.minimum(jnp.min(jnp.where(edge_seen, edge_q, jnp.inf)),
                     jnp.min(jnp.where(node_seen, tree.node_values, jnp.inf)))
    hi = jnp.maximum(jnp.max(jnp.where(edge_seen, edge_q, -jnp.inf)),
                     jnp.max(jnp.where(node_seen, tree.node_values, -jnp.inf)))
    return lo, hi


def qtransform_normalized(tree: mctx.Tree, node_index: jax.Array, *, value_scale: float,
                          floor: float, stats: str = "root", rescale: bool = True,
                          maxvisit_init: float = 50.0) -> jax.Array:
    """mctx's ``qtransform_completed_by_mix_value`` with the min-max normalisation's floor
    and statistics as options: ``(maxvisit_init + max visits) * value_scale * q`` [A], with
    ``q`` the completed Q-values min-max normalised over the node's actions (``stats`` "root",
    mctx) or over the whole tree ("tree", EfficientZero V2), dividing by at least ``floor``
    and clipped to [0, 1]. ``rescale`` False uses the raw completed Q-values."""
    completed = mixed_completed_qvalues(tree, node_index)
    if rescale:
        if stats == "tree":
            lo, hi = tree_value_range(tree)
            lo, hi = jnp.minimum(lo, completed.min()), jnp.maximum(hi, completed.max())
        else:
            lo, hi = completed.min(), completed.max()
        completed = jnp.clip((completed - lo) / jnp.maximum(hi - lo, floor), 0.0, 1.0)
    maxvisit = jnp.max(tree.children_visits[node_index])
    return (maxvisit_init + maxvisit) * value_scale * completed


def policy_kl(target: jax.Array, logits: jax.Array) -> jax.Array:
    """KL(target || softmax(logits)) over the last axis: [..., A] -> [...]."""
    log_q = jax.nn.log_softmax(logits)
    return jnp.sum(jnp.where(target > 0, target * (jnp.log(jnp.maximum(target, 1e-30)) - log_q),
                             0.0), axis=-1)


def root_q_spread(tree: mctx.Tree) -> jax.Array:
    """max - min of the root's mixed-completed Q-values: batched ``tree`` -> [N]."""
    root = jnp.zeros((), jnp.int32)
    q = jax.vmap(mixed_completed_qvalues, (0, None))(tree, root)  # [N, A]
    return q.max(-1) - q.min(-1)




def make_root(logits: jax.Array, value_logits: jax.Array, latent: jax.Array,
              support: Support) -> mctx.RootFnOutput:
    """The search's root from the network's predictions for it: policy logits [N, A], value
    logits [N, 2S+1] and latent [N, D]."""
    return mctx.RootFnOutput(prior_logits=logits,
                             value=logits_to_scalar(value_logits, support),
                             embedding=latent)


def greedy_action(summary: mctx.SearchSummary) -> jax.Array:
    """The most visited root action [N], ties broken by the better Q-value: few simulations
    leave ties in the visit counts, and the greedy policy should not default to the lowest
    action id."""
    visits = summary.visit_counts  # [N, A]
    most = visits == visits.max(axis=-1, keepdims=True)
    return jnp.argmax(jnp.where(most, summary.qvalues, -jnp.inf), axis=-1)


def puct_policy(out: mctx.PolicyOutput, prior_logits: jax.Array, act_rng: jax.Array | None, *,
                pb_c_init: float, greedy: bool, regularized: bool
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The action [N] int32, policy target [N, A] and root value [N] read off a pUCT tree
    (decision nodes only; chance nodes are below them): mctx's visit-count action and
    distribution, the most visited action when greedy (:func:`greedy_action`); with
    ``regularized``, the regularized policy over the completed, normalised root Q-values, the
    network prior ``prior_logits`` and ``lambda_N`` with ``c = pb_c_init``, which is also the
    action distribution (sampled with ``act_rng``; its argmax when greedy)."""
    summary = out.search_tree.summary()
    action, policy = out.action, out.action_weights
    if regularized:
        q = completed_qvalues(summary.qvalues, summary.visit_counts, summary.value)
        lam = regularization_strength(summary.visit_counts, pb_c_init)
        # The network's prior, not the noised one the tree used: noise explores, it is no
        # part of the target.
        policy = regularized_policy(q, jax.nn.softmax(prior_logits), lam)  # [N, A]
        action = (jnp.argmax(policy, axis=-1) if greedy
                  else jax.random.categorical(act_rng, jnp.log(policy), axis=-1))
    elif greedy:
        action = greedy_action(summary)
    return action.astype(jnp.int32), policy, summary.value


def puct_search(params: Params, rng: jax.Array, root: mctx.RootFnOutput,
                callbacks: tuple[Any, ...], *, num_simulations: int, pb_c_init: float,
                pb_c_base: float, dirichlet_alpha: float, dirichlet_fraction: float,
                temperature: jax.Array | float, greedy: bool,
                explore: jax.Array | float) -> mctx.PolicyOutput:
    """mctx's pUCT search: ``mctx.muzero_policy`` with one callback (the recurrent fn),
    ``mctx.stochastic_muzero_policy`` with two (the decision and chance fns). Root Dirichlet
    noise scaled by ``explore``, none when greedy."""
    policy = mctx.muzero_policy if len(callbacks) == 1 else mctx.stochastic_muzero_policy
    return policy(params, rng, root, *callbacks, num_simulations,
                  dirichlet_fraction=0.0 if greedy else dirichlet_fraction * explore,
                  dirichlet_alpha=dirichlet_alpha, pb_c_init=pb_c_init, pb_c_base=pb_c_base,
                  temperature=temperature)


def run_search(params: Params, rng: jax.Array, root: mctx.RootFnOutput,
               recurrent_fn: mctx.RecurrentFn, *, num_simulations: int, pb_c_init: float,
               pb_c_base: float, dirichlet_alpha: float, dirichlet_fraction: float,
               temperature: jax.Array | float, greedy: bool, search: str = "muzero",
               max_considered_actions: int = 16, gumbel_scale: float = 1.0,
               gumbel_value_scale: float = 0.1, gumbel_rescale_values: bool = True,
               gumbel_q_floor: float = 1e-8, gumbel_q_stats: str = "root",
               explore: jax.Array | float = 1.0) -> SearchOutput:
    """One batched search over all envs.

    ``search="muzero"``: pUCT; the policy target is the visit distribution, training actions
    are sampled from visits ** (1 / temperature) after root Dirichlet noise; greedy: no noise
    and the most visited action. ``search="gumbel"``: Gumbel MuZero; the policy target is the
    completed-Q improved policy, the action the one sequential halving keeps (Gumbel noise is
    the exploration; greedy sets its scale to 0, so the choice is deterministic).
    ``search="regularized"``: the pUCT tree (root Dirichlet noise unless greedy), then the
    regularized policy :func:`regularized_policy` over the completed, normalised root
    Q-values, the network prior and ``lambda_N`` with ``c = pb_c_init``: it is the policy
    target, training actions are sampled from it, greedy takes its argmax.

    ``explore`` (not greedy only) scales the exploration noise (Dirichlet fraction, Gumbel
    scale); at 0 (evaluating the sampled policy) there is none, and actions are sampled from
    the search policy itself: the visit distribution, the improved policy or pi_bar.

    Gumbel's Q normalisation: :func:`qtransform_normalized` with ``gumbel_q_floor`` and
    ``gumbel_q_stats``. The output also carries two diagnostics, ``q_spread`` and
    ``target_kl`` (:class:`SearchOutput`).
    """
    if search == "gumbel":
        out = mctx.gumbel_muzero_policy(
            params, rng, root, recurrent_fn, num_simulations,
            max_num_considered_actions=max_considered_actions,
            gumbel_scale=0.0 if greedy else gumbel_scale * explore,
            qtransform=functools.partial(qtransform_normalized,
                                         value_scale=gumbel_value_scale,
                                         rescale=gumbel_rescale_values,
                                         floor=gumbel_q_floor, stats=gumbel_q_stats))
        action, policy = out.action, out.action_weights
        if not greedy:
            # Without Gumbel noise sequential halving is deterministic: sample the policy,
            # sharpened by the temperature (1 in training, where explore > 0 ignores it).
            sampled = jax.random.categorical(jax.random.fold_in(rng, 1),
                                             jnp.log(policy) / temperature, axis=-1)
            action = jnp.where(explore > 0, action, sampled)
        action = action.astype(jnp.int32)
    else:
        act_rng = None
        if search == "regularized":
            rng, act_rng = jax.random.split(rng)
        out = puct_search(params, rng, root, (recurrent_fn,), num_simulations=num_simulations,
                          pb_c_init=pb_c_init, pb_c_base=pb_c_base,
                          dirichlet_alpha=dirichlet_alpha,
                          dirichlet_fraction=dirichlet_fraction, temperature=temperature,
                          greedy=greedy, explore=explore)
        action, policy, _ = puct_policy(out, root.prior_logits, act_rng, pb_c_init=pb_c_init,
                                        greedy=greedy, regularized=search == "regularized")
    return SearchOutput(action=action, search_policy=policy,
                        root_value=out.search_tree.summary().value,
                        q_spread=root_q_spread(out.search_tree),
                        target_kl=policy_kl(policy, root.prior_logits))


def run_stochastic_search(params: Params, rng: jax.Array, root: mctx.RootFnOutput,
                          decision_fn: Any, chance_fn: Any, *, num_simulations: int,
                          pb_c_init: float, pb_c_base: float, dirichlet_alpha: float,
                          dirichlet_fraction: float, temperature: jax.Array | float,
                          greedy: bool, search: str = "muzero",
                          explore: jax.Array | float = 1.0) -> SearchOutput:
    """One batched stochastic search (``mctx.stochastic_muzero_policy``: pUCT over decision
    nodes, chance nodes expanded by sampling the predicted outcome distribution).
    ``search="muzero"``: the visit distribution is the policy target and training actions
    are sampled from it with ``temperature``; greedy: no root noise and the most visited
    action (ties to the better Q). ``search="regularized"``: the regularized policy over the
    root's completed Q-values is target and action distribution (argmax when greedy).
    ``explore`` scales the root Dirichlet noise (0 when evaluating the sampled policy). The
    diagnostics are :func:`run_search`'s, over the tree's decision nodes."""
    rng, act_rng = jax.random.split(rng)
    out = puct_search(params, rng, root, (decision_fn, chance_fn),
                      num_simulations=num_simulations, pb_c_init=pb_c_init,
                      pb_c_base=pb_c_base, dirichlet_alpha=dirichlet_alpha,
                      dirichlet_fraction=dirichlet_fraction, temperature=temperature,
                      greedy=greedy, explore=explore)
    action, policy, value = puct_policy(out, root.prior_logits, act_rng, pb_c_init=pb_c_init,
                                        greedy=greedy, regularized=search == "regularized")
    return SearchOutput(action=action, search_policy=policy, root_value=value,
                        q_spread=root_q_spread(out.search_tree),
                        target_kl=policy_kl(policy, root.prior_logits))

"""MuZero (Schrittwieser et al. 2020): batched MCTS with mctx over a learned model, trained
from a replay buffer.

Acting is one jitted call for all envs: the representation encodes every observation, then
``mctx.muzero_policy`` (pUCT, ``search: muzero``) or ``mctx.gumbel_muzero_policy``
(``search: gumbel``) searches ``num_simulations`` steps with the dynamics and prediction
functions; ``search: regularized`` runs the pUCT tree and then acts with, and learns towards,
the regularized policy of Grill et al. (2020) (:func:`regularized_policy`). With pUCT, training actions are sampled from the visit counts with a temperature
that follows ``temperature_schedule`` over the training budget (the temperature travels with
the params the actor gets, :class:`ActorParams`), after root Dirichlet noise; with Gumbel,
exploration is the Gumbel noise of sequential halving. Greedy acting (evaluation) adds no
noise: the most visited action (pUCT) or the deterministic halving winner (Gumbel). ``act``
hands the learner the search policy (``search_policy`` [N, A]: visit distribution or
improved policy) and the search's root value (``root_value`` [N]).

Learning follows the :class:`~omega.agents.base.Agent` seam: ``learn(state, trajectory,
rng)`` appends the trajectory to a host-side :class:`~omega.replay.ReplayBuffer` that the
agent object owns, then runs as many jitted train steps as ``replay_ratio`` asks for
(none until the buffer holds ``warmup_steps`` env steps). A train step unrolls the model
``K`` steps from a sampled observation along the stored actions (``lax.scan``), with
cross-entropy losses to the search policies, the categorical n-step value targets (bootstrapped
with the current network's value of the stored observation n steps on, without gradient, or
with the root value stored when acting if ``fresh_bootstrap`` is off), the categorical rewards
and the episode ends (the search discounts by ``gamma * (1 - p_terminal)``); the latent
gradient is halved at every unroll step and each unrolled step's loss is weighted 1/K, as in
MuZero. With prioritised replay the losses are importance-weighted and the sampled starts get
the new priority ``|value target - predicted value|`` after each step (plus
``priority_reward_weight`` times the unroll's largest reward error, when that is set).

Options: with ``consistency_loss_weight`` > 0 a state-consistency loss (EfficientZero) also
pulls each unrolled latent towards the representation of the real observation it stands for
(:func:`consistency_loss`). With ``policy_gradient_weight`` > 0 the prior also follows the
real returns of the actions taken (Muesli's policy-gradient term,
:func:`policy_gradient_loss`), not only the search's improved policy. With ``reanalyze_fraction`` > 0, that fraction of each batch's
sequences first gets fresh search policies and root values from a noise-free search with the
current params, written back to the replay (reanalyze, Schrittwieser et al. 2021). On the Ray
backend, reanalyze can instead run in separate Ray actors (``distributed.num_reanalyze_workers``)
through the same pieces: :meth:`MuZeroAgent.sample_reanalyze_batch`,
:meth:`MuZeroAgent.search_targets` and :meth:`MuZeroAgent.write_search_targets`.

Memory: with a recurrent encoder (``model.recurrent: true``) the representation also reads
and updates the encoder memory (the carry): ``act`` resets it where ``first`` is True,
encodes the observation with it and returns the updated memory, and hands the memory it
started from to the replay (``extras["memory"]``), which stores it per step next to the
observation. A train step starts the representation from the stored memory at the sequence
start, or, with ``burn_in_steps`` > 0, re-encodes the stored observations before it (no
gradient, clipped at the episode start) from the memory stored there; bootstrap, consistency
and reanalyze observations are encoded with their stored memories. With ``refresh_memory``
each train step then re-encodes its sequences with the new params and writes the memories
that follow each start back to the replay (:meth:`MuZeroAgent._refresh`).

Checkpoints and resume: :class:`MuZeroState` (params, optimiser state, counters) is what a
checkpoint holds. The replay buffer is saved next to it (:meth:`MuZeroAgent.replay_state`,
written by the training loop as ``replay_<env_steps>.msgpack``) and loaded on resume
(:meth:`MuZeroAgent.restore_replay`), so a resumed run trains again at once; the resumed
envs start new episodes, so each env's stream in the replay ends at its newest stored step.

Shapes: ``N`` envs, ``T`` rollout length, ``A`` actions, ``B`` batch, ``K`` unroll steps,
``D`` latent size, ``2S + 1`` support bins.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import optax

from omega.agents.base import ActOutput, Carry, Observation, Params, Trajectory
from omega.agents.muzero.config import MuZeroConfig, check_encoder
from omega.agents.muzero.networks import (
    MuZeroNetwork,
    logits_to_scalar,
    scalar_to_two_hot,
    scale_gradient,
)
from omega.agents.parallel import DataParallel
from omega.models.encoders import EncoderConfig, initial_carry
from omega.replay import MemoryBatch, ReplayBatch, ReplayBuffer

# ---------------------------------------------------------------------------------------------
# State


class ActorParams(NamedTuple):
    """What an actor needs: network params, the current visit-count temperature, and whether
    to explore (1: training, root Dirichlet / Gumbel noise on; 0: evaluation, actions sampled
    from the search policy without exploration noise; see :meth:`MuZeroAgent.eval_params`)."""

    net: Params
    temperature: jax.Array  # []
    explore: jax.Array = 1.0  # [] float, 1 or 0


class MuZeroState(NamedTuple):
    params: Params
    opt_state: optax.OptState
    train_steps: jax.Array  # [] int32, jitted train steps so far
    env_steps: jax.Array  # [] int32, env steps added to the replay so far
    update_credit: jax.Array  # [] float32, fractional train steps owed by replay_ratio


class ParamsEMAState(NamedTuple):
    ema: Params  # the moving average of the params after each update


class TargetParamsState(NamedTuple):
    target: Params  # the params after the last update whose count is a multiple of interval
    count: jax.Array  # [] int32, updates so far


def target_params(interval: int) -> optax.GradientTransformation:
    """A target network kept in the optimiser state: a copy of the params, replaced by the
    new params after every ``interval``-th update; passes the updates through unchanged.
    Like :func:`params_ema` it goes last in a chain, and an optimiser without it keeps its
    older state structure, so checkpoints of runs without a target network still load."""

    def init_fn(params: Params) -> TargetParamsState:
        return TargetParamsState(target=jax.tree_util.tree_map(jnp.asarray, params),
                                 count=jnp.zeros((), jnp.int32))

    def update_fn(updates, state: TargetParamsState, params: Params | None = None):
        if params is None:
            raise ValueError("target_params needs the params passed to update")
        new_params = optax.apply_updates(params, updates)
        count = state.count + 1
        refresh = count % interval == 0
        target = jax.tree_util.tree_map(lambda t, p: jnp.where(refresh, p, t), state.target,
                                        new_params)
        return updates, TargetParamsState(target=target, count=count)

    return optax.GradientTransformation(init_fn, update_fn)


def find_state(opt_state: optax.OptState, kind: type) -> Any:
    """The state of type ``kind`` among the chain's states (None when there is none)."""
    for part in opt_state:
        if isinstance(part, kind):
            return part
    return None


def params_ema(decay: float) -> optax.GradientTransformation:
    """Tracks ``ema <- decay * ema + (1 - decay) * new params`` in the optimiser state and
    passes the updates through unchanged; goes last in a chain, so the updates it sees are
    the final ones. The average starts from the initial params."""

    def init_fn(params: Params) -> ParamsEMAState:
        return ParamsEMAState(ema=jax.tree_util.tree_map(jnp.asarray, params))

    def update_fn(updates, state: ParamsEMAState, params: Params | None = None):
        if params is None:
            raise ValueError("params_ema needs the params passed to update")
        new_params = optax.apply_updates(params, updates)
        return updates, ParamsEMAState(
            ema=optax.incremental_update(new_params, state.ema, 1.0 - decay))

    return optax.GradientTransformation(init_fn, update_fn)


class ReanalyzeBatch(NamedTuple):
    """Replay steps to reanalyze and what the search reads of them (:meth:`MuZeroAgent.
    reanalyze_batches`); plain numpy, so it travels to a remote reanalyze worker as is."""

    env: np.ndarray  # [M] the steps' envs
    time: np.ndarray  # [M] and times
    obs: dict[str, np.ndarray]  # [R, ...] their observations, padded to R >= M
    memory: np.ndarray | None = None  # [R, ...] stored memories (recurrent encoders only)
    first: np.ndarray | None = None  # [R] bool, likewise


class Reanalyzed(NamedTuple):
    """What :meth:`MuZeroAgent._reanalyze` did: the replay steps it searched afresh and
    wrote targets to, what they held before when those must be put back after the batch is
    built (``reanalyze_write_back`` off; else None), and each step's KL(new target || prior)."""

    env: np.ndarray  # [M]
    time: np.ndarray  # [M]
    replaced: tuple[np.ndarray, np.ndarray] | None  # (search_policy [M, A], root_value [M])
    target_kl: np.ndarray  # [M]


class SearchOutput(NamedTuple):
    action: jax.Array  # [N] int32
    search_policy: jax.Array  # [N, A] visit distribution
    root_value: jax.Array  # [N] the search's value estimate of the root
    # Diagnostics: max - min of the root's completed Q-values (unvisited actions completed
    # by the mixed value, before any normalisation), and KL(search_policy || prior).
    q_spread: jax.Array | None = None  # [N]
    target_kl: jax.Array | None = None  # [N]


# ---------------------------------------------------------------------------------------------
# Pure pieces (tested one by one)


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


def effective_rank(x: jax.Array) -> jax.Array:
    """The effective rank (Roy & Vetterli 2007) of the centred rows x [B, D]: exp of the
    entropy of the normalised singular values; 1 for rows on a line, min(B, D) at most."""
    sv = jnp.linalg.svd(x - x.mean(0), compute_uv=False)
    p = sv / jnp.maximum(sv.sum(), 1e-12)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-30)), 0.0)))


def root_q_spread(tree: mctx.Tree) -> jax.Array:
    """max - min of the root's mixed-completed Q-values: batched ``tree`` -> [N]."""
    root = jnp.zeros((), jnp.int32)
    q = jax.vmap(mixed_completed_qvalues, (0, None))(tree, root)  # [N, A]
    return q.max(-1) - q.min(-1)


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
            # Without Gumbel noise sequential halving is deterministic: sample the policy.
            sampled = jax.random.categorical(jax.random.fold_in(rng, 1), jnp.log(policy),
                                             axis=-1)
            action = jnp.where(explore > 0, action, sampled)
    else:
        if search == "regularized":
            rng, act_rng = jax.random.split(rng)
        out = mctx.muzero_policy(
            params, rng, root, recurrent_fn, num_simulations,
            dirichlet_fraction=0.0 if greedy else dirichlet_fraction * explore,
            dirichlet_alpha=dirichlet_alpha, pb_c_init=pb_c_init, pb_c_base=pb_c_base,
            temperature=temperature)
        summary = out.search_tree.summary()
        action, policy = out.action, out.action_weights
        if search == "regularized":
            q = completed_qvalues(summary.qvalues, summary.visit_counts, summary.value)
            lam = regularization_strength(summary.visit_counts, pb_c_init)
            # The network's prior, not the noised one the tree used: noise explores, it is no
            # part of the target.
            policy = regularized_policy(q, jax.nn.softmax(root.prior_logits), lam)  # [N, A]
            action = (jnp.argmax(policy, axis=-1) if greedy
                      else jax.random.categorical(act_rng, jnp.log(policy), axis=-1))
        elif greedy:
            # Few simulations leave ties in the visit counts; the better Q-value breaks them,
            # so the greedy policy does not default to the lowest action id.
            visits = summary.visit_counts  # [N, A]
            most = visits == visits.max(axis=-1, keepdims=True)
            action = jnp.argmax(jnp.where(most, summary.qvalues, -jnp.inf), axis=-1)
    return SearchOutput(action=action.astype(jnp.int32), search_policy=policy,
                        root_value=out.search_tree.summary().value,
                        q_spread=root_q_spread(out.search_tree),
                        target_kl=policy_kl(policy, root.prior_logits))


def cross_entropy(target: jax.Array, logits: jax.Array) -> jax.Array:
    """-sum target * log softmax(logits) over the last axis: [..., C] -> [...]."""
    return -jnp.sum(target * jax.nn.log_softmax(logits), axis=-1)


def consistency_loss(online: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Negative cosine similarity of the online projections [B, K, P] to the targets
    [B, K, P] (no gradient into them), masked [B, K] and averaged over K: -> [B]."""
    target = jax.lax.stop_gradient(target)
    cos = jnp.sum(_unit(online) * _unit(target), axis=-1)  # [B, K]
    return -jnp.sum(cos * mask, axis=-1) / mask.shape[-1]


def policy_entropy(policy_logits: jax.Array, mask: jax.Array,
                   step_weight: jax.Array) -> jax.Array:
    """The prior's entropy at the root and the unrolled steps, masked [B, K+1] and weighted
    like the policy loss: logits [B, K+1, A] -> [B]."""
    log_p = jax.nn.log_softmax(policy_logits)
    entropy = -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)  # [B, K+1]
    return (entropy * mask) @ step_weight


def policy_gradient_mask(batch: ReplayBatch, positions: int,
                         position_mask: jax.Array | None = None) -> jax.Array:
    """[B, P] 1 where the policy-gradient term sees a taken action on the real observation:
    0 at the newest stored step and past an episode end (and where ``position_mask`` is 0)."""
    mask = batch.reward_mask[:, :positions] * batch.policy_mask[:, :positions]
    return mask if position_mask is None else mask * position_mask


def policy_gradient_loss(root_logits: jax.Array, root_value_logits: jax.Array,
                         batch: ReplayBatch, support_size: int, normalize: bool = True,
                         position_mask: jax.Array | None = None
                         ) -> tuple[jax.Array, jax.Array]:
    """Muesli's policy-gradient term (Hessel et al. 2021): ``-rho A log pi(a|s)`` with the
    advantage ``A`` = the n-step return target minus the network's value, and ``rho =
    min(1, pi(a|s) / mu(a|s))`` the truncated importance weight of the taken action against
    the acting search's policy ``mu`` it was sampled from (``batch.behaviour_policy``, which
    reanalyze leaves alone; the policy target when the batch has none); ``A`` and ``rho``
    carry no gradient.
    With ``normalize`` the loss uses ``A`` divided by its standard deviation over the batch
    (as PPO does), so the term's strength does not depend on the reward scale.

    The logits are the network's predictions from the real observations at the first ``P``
    positions of each sequence: [B, A] and [B, 2S+1] (``P`` = 1, the start), or [B, P, A] and
    [B, P, 2S+1]; ``position_mask`` [B, P] drops positions whose observation is not the real
    one (past an episode end). Returns (loss [B]: the sum over the live positions over
    ``P``; ``A`` before normalising, 0 where masked: [B] for [B, A] logits, else [B, P]).

    It raises the prior of an action whose real return beat the value, whatever the model
    predicts for it: the search only improves the policy where the model already sees what
    an action does, and a rare decisive step (the model says it is like its many look-alikes)
    stays invisible to it until the prior takes it often enough to teach the model.
    """
    start_only = root_logits.ndim == 2
    if start_only:
        root_logits, root_value_logits = root_logits[:, None], root_value_logits[:, None]
    p = root_logits.shape[1]
    action = batch.action[:, :p]  # [B, P]
    mask = policy_gradient_mask(batch, p, position_mask)
    log_pi = jnp.take_along_axis(jax.nn.log_softmax(root_logits), action[..., None],
                                 -1)[..., 0]  # [B, P]
    behaviour = batch.policy_target if batch.behaviour_policy is None else batch.behaviour_policy
    mu = jnp.take_along_axis(behaviour[:, :p], action[..., None], -1)[..., 0]
    rho = jnp.minimum(1.0, jnp.exp(log_pi) / jnp.maximum(mu, 1e-6))
    value = logits_to_scalar(root_value_logits, support_size)  # [B, P]
    advantage = jax.lax.stop_gradient(batch.value_target[:, :p] - value) * mask
    scaled = advantage
    if normalize:
        count = jnp.maximum(mask.sum(), 1.0)
        mean = advantage.sum() / count
        std = jnp.sqrt(jnp.sum(mask * jnp.square(advantage - mean)) / count)
        scaled = advantage / jnp.maximum(std, 1e-3)
    per_position = -jax.lax.stop_gradient(rho) * scaled * log_pi  # [B, P], 0 where masked
    return per_position.sum(-1) / p, advantage[:, 0] if start_only else advantage


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


class Losses(NamedTuple):
    policy: jax.Array  # [B, K+1]
    value: jax.Array  # [B, K+1]
    reward: jax.Array  # [B, K]
    terminal: jax.Array  # [B, K]


def unroll_losses(policy_logits: jax.Array, value_logits: jax.Array, reward_logits: jax.Array,
                  terminal_logits: jax.Array, batch: ReplayBatch, support_size: int) -> Losses:
    """Masked per-position cross-entropies; logits [B, K+1, A], [B, K+1, 2S+1], [B, K, 2S+1]
    and [B, K] (binary)."""
    value_target = scalar_to_two_hot(batch.value_target, support_size)  # [B, K+1, 2S+1]
    reward_target = scalar_to_two_hot(batch.reward_target, support_size)  # [B, K, 2S+1]
    terminal = optax.sigmoid_binary_cross_entropy(terminal_logits, batch.terminal_target)
    return Losses(
        policy=cross_entropy(batch.policy_target, policy_logits) * batch.policy_mask,
        value=cross_entropy(value_target, value_logits) * batch.value_mask,
        reward=cross_entropy(reward_target, reward_logits) * batch.reward_mask,
        terminal=terminal * batch.reward_mask)


def value_error_and_priority(value_logits: jax.Array, reward_logits: jax.Array,
                             batch: ReplayBatch, support_size: int,
                             reward_weight: float) -> tuple[jax.Array, jax.Array]:
    """The root value error [B] and the replay priority [B]: that error plus
    ``reward_weight`` times the unroll's largest reward error (logits [B, K+1, 2S+1] and
    [B, K, 2S+1])."""
    predicted = logits_to_scalar(value_logits[:, 0], support_size)  # [B]
    error = jnp.abs(batch.value_target[:, 0] - predicted)  # [B]
    if not reward_weight:
        return error, error
    reward = logits_to_scalar(reward_logits, support_size)  # [B, K]
    reward_error = jnp.max(jnp.abs(batch.reward_target - reward) * batch.reward_mask, -1)
    return error, error + reward_weight * reward_error


def temperature_at(schedule: tuple[tuple[float, float], ...], progress: jax.Array) -> jax.Array:
    """The temperature of the last schedule entry whose fraction is <= ``progress``."""
    fractions = jnp.asarray([f for f, _ in schedule], jnp.float32)
    temps = jnp.asarray([t for _, t in schedule], jnp.float32)
    idx = jnp.sum(progress >= fractions) - 1
    return temps[jnp.clip(idx, 0, len(schedule) - 1)]


# ---------------------------------------------------------------------------------------------
# Agent


class MuZeroAgent:
    """Implements :class:`omega.agents.base.Agent` (see the module docstring)."""

    # The train-step metrics, logged as NaN while the replay warms up so that metrics.csv has
    # the same columns from its first row on.
    loss_columns: tuple[str, ...] = ("loss", "policy_loss", "value_loss", "reward_loss",
                                     "terminal_loss", "policy_entropy", "value_error",
                                     "grad_norm", "learning_rate")

    # Whether :meth:`_diagnostics_impl` applies (it reads :meth:`_loss_terms`).
    supports_diagnostics: bool = True

    def __init__(self, cfg: MuZeroConfig, encoder_cfg: EncoderConfig, num_actions: int,
                 total_env_steps: int):
        check_encoder(cfg, encoder_cfg)
        self.cfg = cfg
        self.recurrent = bool(encoder_cfg.recurrent)
        self.encoder_cfg = encoder_cfg
        self.num_actions = int(num_actions)
        self.total_env_steps = max(1, int(total_env_steps))
        self.network = MuZeroNetwork(
            encoder_cfg, self.num_actions, cfg.latent_dim, cfg.dynamics_hidden,
            cfg.prediction_hidden, cfg.support_size,
            projection_dim=cfg.latent_dim if cfg.consistency_loss_weight > 0 else 0,
            reward_head=cfg.reward_head)
        self.total_train_steps = max(1, int(
            cfg.replay_ratio * max(0, self.total_env_steps - cfg.warmup_steps) / cfg.batch_size))
        if cfg.lr_schedule == "linear":
            self.lr_schedule = optax.linear_schedule(cfg.learning_rate, 0.0,
                                                     self.total_train_steps)
        elif cfg.lr_schedule == "cosine":
            self.lr_schedule = optax.cosine_decay_schedule(cfg.learning_rate,
                                                           self.total_train_steps)
        else:
            self.lr_schedule = optax.constant_schedule(cfg.learning_rate)
        transforms = [optax.clip_by_global_norm(cfg.max_grad_norm),
                      optax.adam(self.lr_schedule, eps=cfg.adam_eps)]
        if cfg.eval_params_ema > 0:  # off: the optimiser state keeps its older structure
            transforms.append(params_ema(cfg.eval_params_ema))
        if cfg.target_update_interval > 0:  # likewise
            transforms.append(target_params(cfg.target_update_interval))
        self.optimizer = optax.chain(*transforms)
        self.replay = self._new_replay()
        self.trace_counts: collections.Counter[str] = collections.Counter()
        self.data_parallel: DataParallel | None = None
        self._last_metrics: dict[str, float] = {}
        self._init = jax.jit(self._init_impl)
        self._act = jax.jit(self._act_impl, static_argnames="greedy")
        self._reanalyze_key = jax.random.PRNGKey(0)
        # Whether learn reanalyzes (reanalyze_fraction > 0); the Ray backend turns it off when
        # remote reanalyze workers do it instead (omega.training.distributed).
        self.reanalyze_in_learn = cfg.reanalyze_fraction > 0
        self._value = jax.jit(self._value_impl)
        self._train_step = jax.jit(self._train_step_impl)
        self._diagnostics = jax.jit(self._diagnostics_impl)
        self._refresh_memory = jax.jit(self._refresh_memory_impl)
        self._temperature = jax.jit(self._temperature_impl)

    def _new_replay(self) -> ReplayBuffer:
        cfg = self.cfg
        return ReplayBuffer(
            max_size=cfg.replay_size, num_unroll_steps=cfg.unroll_steps, td_steps=cfg.td_steps,
            gamma=cfg.gamma, max_age=cfg.replay_max_age, prioritized=cfg.prioritized,
            priority_alpha=cfg.priority_alpha, priority_beta=cfg.priority_beta,
            success_fraction=cfg.success_fraction, next_obs=(cfg.consistency_loss_weight > 0
                                                   or cfg.policy_gradient_steps > 1),
            burn_in=cfg.burn_in_steps)

    def use_data_parallel(self, data_parallel: DataParallel) -> None:
        """Learn data-parallel: params and optimiser state replicated, every replay batch
        split along its batch axis (:mod:`omega.agents.parallel`)."""
        data_parallel.check_divisible(self.cfg.batch_size, "muzero.batch_size",
                                      f"use a multiple of {data_parallel.size}")
        self.data_parallel = data_parallel

    # -- Agent protocol ------------------------------------------------------------------------

    def init(self, rng: jax.Array, obs_example: Observation, num_envs: int) -> MuZeroState:
        del num_envs  # the replay sizes itself on the first trajectory
        self.replay = self._new_replay()  # a fresh state never trained on old data
        return self._init(rng, self._filter(obs_example))

    def replay_state(self) -> dict[str, Any]:
        """The replay buffer as numpy arrays and numbers, saved with each checkpoint
        (:meth:`omega.replay.ReplayBuffer.state_dict`)."""
        return self.replay.state_dict()

    def restore_replay(self, saved: Mapping[str, Any]) -> int:
        """Replaces the replay with a saved one (``ValueError`` when it does not fit this
        config); returns the env steps it holds. The envs of a resumed run start new
        episodes, so every env's stream ends at its newest stored step (a time limit whose
        value target is its own root value, :meth:`~omega.replay.ReplayBuffer.end_streams`):
        no n-step target or unroll reaches into the new episodes."""
        replay = self._new_replay()
        replay.load_state_dict(saved)
        replay.end_streams(np.arange(replay.num_envs))
        self.replay = replay
        return len(replay)

    def params(self, state: MuZeroState) -> ActorParams:
        return ActorParams(net=state.params, temperature=self._temperature(state.env_steps),
                           explore=jnp.ones((), jnp.float32))

    def eval_params(self, state: MuZeroState, average: bool = True) -> ActorParams:
        """What evaluation acts with: the moving average of the params when
        ``eval_params_ema`` is on (and ``average``), else the current ones; no exploration
        noise; when not greedy, actions are sampled from the search policy (visit counts at
        temperature 1, the improved policy, or pi_bar)."""
        net = self.averaged_params(state) if average else state.params
        return ActorParams(net=net, temperature=jnp.ones((), jnp.float32),
                           explore=jnp.zeros((), jnp.float32))

    def averaged_params(self, state: MuZeroState) -> Params:
        """The moving average of the params (``eval_params_ema`` > 0), else the params."""
        if self.cfg.eval_params_ema <= 0:
            return state.params
        ema_state = find_state(state.opt_state, ParamsEMAState)
        if ema_state is None:
            raise TypeError("the optimiser state has no params average; was the state made "
                            "by an agent with the same eval_params_ema?")
        return ema_state.ema

    def initial_carry(self, num_envs: int) -> Carry:
        return initial_carry(self.encoder_cfg, num_envs)  # None unless recurrent

    def act(self, params: ActorParams, obs: Observation, first: np.ndarray, carry: Carry,
            rng: jax.Array, greedy: bool = False) -> ActOutput:
        if not self.recurrent:  # stateless encoder: nothing to reset or carry
            return self._act(params, self._filter(obs), rng, greedy=bool(greedy))
        return self._act(params, self._filter(obs), rng, greedy=bool(greedy),
                         first=jnp.asarray(first, bool), memory=carry)

    def value(self, params: ActorParams, obs: Observation, carry: Carry) -> jax.Array:
        if not self.recurrent:
            return self._value(params, self._filter(obs))
        return self._value(params, self._filter(obs), memory=carry)

    def learn(self, state: MuZeroState, trajectory: Trajectory,
              rng: jax.Array) -> tuple[MuZeroState, Mapping[str, float]]:
        cfg = self.cfg
        t, n = trajectory.action.shape
        extras = trajectory.extras
        chex.assert_shape(extras["search_policy"], (t, n, self.num_actions))
        chex.assert_shape(extras["root_value"], (t, n))
        obs = {k: v[:-1] for k, v in self._filter(trajectory.obs).items()}  # obs[T] comes again
        memory = {}
        if self.recurrent:
            memory = {"memory": extras["memory"], "first": trajectory.first[:-1]}
        self.replay.add(obs, trajectory.action, trajectory.reward, trajectory.terminated,
                        trajectory.truncated, trajectory.truncation_value,
                        extras["search_policy"], extras["root_value"], **memory)
        # Sampling follows the loop's key stream, so a run is reproducible from its seed.
        key = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
        self.replay.rng = np.random.default_rng(np.asarray(key).ravel().tolist())

        credit = float(state.update_credit)
        if len(self.replay) >= min(cfg.warmup_steps, self.replay.max_live):
            credit += cfg.replay_ratio * t * n / cfg.batch_size
        num_steps = int(credit)
        params, opt_state, train_steps = state.params, state.opt_state, state.train_steps
        dp = self.data_parallel
        if dp is not None:
            params, opt_state, train_steps = dp.replicate((params, opt_state, train_steps))
        step_count = int(state.train_steps)
        step_metrics, diagnostics = [], []
        reanalyzed, reanalyzed_kl = 0, []
        for _ in range(num_steps):
            if self.reanalyze_in_learn:
                starts = self.replay.sample_starts(cfg.batch_size)
                search_params = params
                if cfg.target_update_interval and cfg.reanalyze_with_target:
                    search_params = self.target_network(opt_state)
                fresh = self._reanalyze(search_params, starts)
                reanalyzed += len(fresh.env)
                reanalyzed_kl.append(fresh.target_kl)
                batch = self.replay.sample(cfg.batch_size, starts=starts)
                if fresh.replaced is not None:  # no write-back: the stored targets return
                    self.replay.set_search_targets(fresh.env, fresh.time, *fresh.replaced)
            else:
                batch = self.replay.sample(cfg.batch_size)
            if not cfg.fresh_bootstrap:  # not needed on the device
                batch = batch._replace(bootstrap_obs={})
                if batch.memory is not None:
                    batch = batch._replace(memory=batch.memory._replace(
                        bootstrap_memory=None, bootstrap_first=None))
            device_batch = batch._replace(index=())
            if not cfg.policy_gradient_weight:  # only the policy-gradient term reads it
                device_batch = device_batch._replace(behaviour_policy=None)
            if dp is not None:
                device_batch = dp.shard(device_batch, axis=0)
            if (cfg.diagnostics_interval and self.supports_diagnostics
                    and step_count % cfg.diagnostics_interval == 0):
                diagnostics.append(self._diagnostics(params, opt_state, device_batch))
            params, opt_state, metrics, priority = self._train_step(
                params, opt_state, train_steps, device_batch)
            if cfg.prioritized:
                self.replay.update_priorities(batch.index, np.asarray(priority))
            if cfg.refresh_memory:
                self._refresh(params, batch)
            train_steps = train_steps + 1
            step_count += 1
            step_metrics.append(metrics)
        if step_metrics:
            stacked = jax.device_get(step_metrics)
            self._last_metrics.update(
                {k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]})
        elif not self._last_metrics:  # still warming up: the same columns, empty
            self._last_metrics = dict.fromkeys(self.loss_columns, float("nan"))
            if cfg.consistency_loss_weight > 0:
                self._last_metrics["consistency_loss"] = float("nan")
            if cfg.policy_gradient_weight > 0:
                self._last_metrics.update(policy_gradient_loss=float("nan"),
                                          advantage=float("nan"))
            if self.reanalyze_in_learn:
                self._last_metrics["target_kl_reanalyzed"] = float("nan")
        if diagnostics:  # kept until the next ones, so every row has the newest
            self._last_metrics.update(
                {k: float(v) for k, v in jax.device_get(diagnostics[-1]).items()})
        if reanalyzed:
            self._last_metrics["target_kl_reanalyzed"] = float(np.mean(np.concatenate(
                reanalyzed_kl)))
        new_state = MuZeroState(
            params=params, opt_state=opt_state, train_steps=train_steps,
            env_steps=state.env_steps + t * n,
            update_credit=jnp.asarray(credit - num_steps, jnp.float32))
        metrics = dict(self._last_metrics)
        metrics.update(
            train_steps=float(train_steps), replay_size=float(len(self.replay)),
            root_value_mean=float(np.mean(extras["root_value"])),
            temperature=float(self._temperature(state.env_steps)))
        if "q_spread" in extras:  # the acting search's diagnostics (run_search)
            spread = np.asarray(extras["q_spread"])
            metrics.update(root_q_spread=float(spread.mean()),
                           root_q_spread_below_0_01=float(np.mean(spread < 0.01)),
                           target_kl_fresh=float(np.mean(extras["target_kl"])))
        if self.reanalyze_in_learn:
            metrics["reanalyzed_steps"] = float(reanalyzed)
        return new_state, metrics

    def _reanalyze(self, params: Params, starts: tuple[np.ndarray, np.ndarray, np.ndarray]
                   ) -> Reanalyzed:
        """Fresh search targets for a random ``reanalyze_fraction`` of the sequences starting
        at ``starts`` (env [B], time [B], weight [B]), written to the replay (see
        :class:`Reanalyzed` for what comes back). The search is :meth:`search_targets`
        (greedy, noise-free), the one remote reanalyze workers run, with ``params``.
        """
        cfg = self.cfg
        env, start, _ = starts
        count = round(cfg.reanalyze_fraction * len(env))
        if count == 0:
            empty = np.zeros(0, np.int64)
            return Reanalyzed(empty, empty, None, np.zeros(0, np.float32))
        chosen = self.replay.rng.choice(len(env), size=count, replace=False)
        envs, times = self.replay.unroll_positions(env[chosen], start[chosen])
        kept = None
        if not cfg.reanalyze_write_back:
            kept = self.replay.search_targets_at(envs, times)
        kls = []
        for batch in self.reanalyze_batches(envs, times):
            extras = self._search_extras(params, batch)
            self.replay.set_search_targets(batch.env, batch.time, extras["search_policy"],
                                           extras["root_value"])
            kls.append(extras["target_kl"])
        return Reanalyzed(envs, times, kept, np.concatenate(kls))

    # -- reanalyze, also for remote workers ----------------------------------------------------

    def reanalyze_batches(self, env: np.ndarray, time: np.ndarray) -> list[ReanalyzeBatch]:
        """The live replay steps (env [M], time [M]) in batches of ``reanalyze_batch_size``
        with their observations (and memories); the last is padded to that size (one shape,
        so the search compiles once)."""
        size = self.cfg.reanalyze_batch_size
        batches = []
        for lo in range(0, len(env), size):
            e, t = env[lo:lo + size], time[lo:lo + size]
            pe = np.pad(e, (0, size - len(e)), mode="edge")
            pt = np.pad(t, (0, size - len(t)), mode="edge")
            memory = first = None
            if self.recurrent:
                memory, first = self.replay.memory_at(pe, pt)
            batches.append(ReanalyzeBatch(env=e, time=t, obs=self.replay.observations_at(pe, pt),
                                          memory=memory, first=first))
        return batches

    def sample_reanalyze_batch(self) -> ReanalyzeBatch:
        """One batch of up to ``reanalyze_batch_size`` live steps, the unroll positions of
        sequences drawn as the train steps draw them (:meth:`ReplayBuffer.sample_positions`):
        what a remote reanalyze worker searches next. The replay must not be empty."""
        env, time = self.replay.sample_positions(self.cfg.reanalyze_batch_size)
        return self.reanalyze_batches(env, time)[0]

    def search_targets(self, net: Params, batch: ReanalyzeBatch) -> tuple[np.ndarray, np.ndarray]:
        """Fresh search targets (search_policy [M, A], root_value [M]) of the batch's steps
        with network params ``net``: the acting search, greedy (no Dirichlet or Gumbel noise,
        which would make the targets a noisy copy of what the network already knows rather
        than its best estimate) with a fixed key, so they depend on the params alone."""
        extras = self._search_extras(net, batch)
        return extras["search_policy"], extras["root_value"]

    def _search_extras(self, net: Params, batch: ReanalyzeBatch) -> dict[str, np.ndarray]:
        """:meth:`search_targets` with every search output ([M, ...] each, numpy)."""
        actor = ActorParams(net=net, temperature=jnp.ones((), jnp.float32),
                            explore=jnp.zeros((), jnp.float32))
        memory = {}
        if batch.memory is not None:
            memory = {"first": batch.first, "memory": batch.memory}
        out = self._act(actor, batch.obs, self._reanalyze_key, greedy=True, **memory)
        m = len(batch.env)
        return {k: np.asarray(v)[:m] for k, v in jax.device_get(out.extras).items()}

    def write_search_targets(self, env: np.ndarray, time: np.ndarray, search_policy: np.ndarray,
                             root_value: np.ndarray) -> int:
        """Writes reanalyzed targets back to the replay for the steps still live (those
        evicted since they were sampled are skipped); returns how many were written."""
        return self.replay.set_search_targets_if_live(env, time, search_policy, root_value)

    def _refresh(self, params: Params, batch: ReplayBatch) -> None:
        """Writes back the memories after each of the batch's sequences' K + 1 observations
        (those before steps start + 1 .. start + K + 1), encoded with ``params`` from the
        start memory (burn-in included): the stored-state refresh of ``refresh_memory``."""
        env, slot = batch.index
        # The slot is the start's time modulo the capacity; the live window is shorter than
        # the capacity, so that time is the one live time with this slot.
        c = self.replay.capacity
        start = self.replay.oldest + (slot - self.replay.oldest) % c
        length = self.cfg.unroll_steps + 1
        obs, first = self.replay.sequences_at(env, start, length)
        start_memory = batch.memory._replace(bootstrap_memory=None, bootstrap_first=None,
                                             next_memory=None, next_first=None)
        memory = self._refresh_memory(params, start_memory, obs, first)  # [B, K+1, ...]
        times = start[:, None] + np.arange(1, length + 1)  # [B, K+1]
        self.replay.set_memory(np.repeat(env, length), times.ravel(),
                               np.asarray(memory).reshape((-1,) + memory.shape[2:]))

    # -- jitted bodies -------------------------------------------------------------------------

    def _filter(self, obs: Observation) -> Observation:
        # Unused keys would only cost host->device copies and replay memory.
        return {k: v for k, v in obs.items() if k in self.encoder_cfg.used_keys()}

    def _init_impl(self, rng: jax.Array, obs: Observation) -> MuZeroState:
        batch = next(iter(obs.values())).shape[0]
        memory = {}
        if self.recurrent:
            memory = {"first": jnp.ones(batch, bool),
                      "memory": initial_carry(self.encoder_cfg, batch)}
        params = self.network.init(rng, obs, jnp.zeros(batch, jnp.int32), **memory)
        return MuZeroState(params=params, opt_state=self.optimizer.init(params),
                           train_steps=jnp.zeros((), jnp.int32),
                           env_steps=jnp.zeros((), jnp.int32),
                           update_credit=jnp.zeros((), jnp.float32))

    def _temperature_impl(self, env_steps: jax.Array) -> jax.Array:
        progress = env_steps.astype(jnp.float32) / self.total_env_steps
        return temperature_at(self.cfg.temperature_schedule, progress)

    def _recurrent_fn(self, params: Params, rng: jax.Array, action: jax.Array,
                      latent: jax.Array) -> tuple[mctx.RecurrentFnOutput, jax.Array]:
        del rng
        s = self.cfg.support_size
        next_latent, reward_logits, terminal_logit, logits, value_logits = self.network.apply(
            params, latent, action, method=MuZeroNetwork.recurrent_inference)
        reward = logits_to_scalar(reward_logits, s)  # [N]
        # Past a predicted episode end nothing counts: the model's imagination there (trained
        # for at most K steps) would otherwise add rewards that never come.
        discount = self.cfg.gamma * (1.0 - jax.nn.sigmoid(terminal_logit))  # [N]
        out = mctx.RecurrentFnOutput(
            reward=reward, discount=discount, prior_logits=logits,
            value=logits_to_scalar(value_logits, s))
        return out, next_latent

    def _act_impl(self, params: ActorParams, obs: Observation, rng: jax.Array,
                  greedy: bool, first: jax.Array | None = None,
                  memory: Carry = None) -> ActOutput:
        """``first`` [N] and ``memory`` (the carry before obs) with a recurrent encoder."""
        self.trace_counts["act"] += 1
        cfg = self.cfg
        latent, next_memory = self.network.apply(params.net, obs, first, memory,
                                                 method=MuZeroNetwork.encode)
        logits, value_logits = self.network.apply(params.net, latent,
                                                  method=MuZeroNetwork.predict)
        root = mctx.RootFnOutput(prior_logits=logits,
                                 value=logits_to_scalar(value_logits, cfg.support_size),
                                 embedding=latent)
        out = run_search(
            params.net, rng, root, self._recurrent_fn, num_simulations=cfg.num_simulations,
            pb_c_init=cfg.pb_c_init, pb_c_base=cfg.pb_c_base,
            dirichlet_alpha=cfg.dirichlet_alpha, dirichlet_fraction=cfg.dirichlet_fraction,
            temperature=params.temperature, greedy=greedy, search=cfg.search,
            explore=params.explore,
            max_considered_actions=cfg.max_considered_actions, gumbel_scale=cfg.gumbel_scale,
            gumbel_value_scale=cfg.gumbel_value_scale,
            gumbel_rescale_values=cfg.gumbel_rescale_values, gumbel_q_floor=cfg.gumbel_q_floor,
            gumbel_q_stats=cfg.gumbel_q_stats)
        extras = {"search_policy": out.search_policy, "root_value": out.root_value,
                  "q_spread": out.q_spread, "target_kl": out.target_kl}
        if memory is not None:
            extras["memory"] = memory  # what the replay stores: the memory before obs
        return ActOutput(action=out.action, extras=extras, carry=next_memory)

    def _value_impl(self, params: ActorParams, obs: Observation,
                    memory: Carry = None) -> jax.Array:
        self.trace_counts["value"] += 1
        # The obs continues the episode the memory belongs to (a time limit's final obs), so
        # nothing resets.
        _, _, value_logits = self.network.apply(params.net, obs, None, memory,
                                                method=MuZeroNetwork.initial_inference)
        return logits_to_scalar(value_logits, self.cfg.support_size)  # [N]

    def _refresh_memory_impl(self, params: Params, memory: MemoryBatch, obs: Observation,
                             first: jax.Array) -> jax.Array:
        """The encoder memories [B, K+1, ...] after each of obs [B, K+1, ...] (first
        [B, K+1]), from the start memory of ``memory``."""
        self.trace_counts["refresh"] += 1

        def step(m, inputs):
            o, f = inputs
            _, m = self.network.apply(params, o, f, m, method=MuZeroNetwork.encode)
            return m, m

        _, memories = jax.lax.scan(step, self._start_memory(params, memory),
                                   jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1),
                                                          (obs, first)))
        return jnp.swapaxes(memories, 0, 1)

    def _start_memory(self, params: Params, memory: MemoryBatch) -> Carry:
        """The encoder memory [B, ...] before each sequence's start observation: the stored
        one, carried through the burn-in observations with ``params`` (no gradient unless
        ``burn_in_gradient``)."""
        if not self.cfg.burn_in_steps:
            return memory.memory
        through = self.cfg.burn_in_gradient
        if not through:
            params = jax.lax.stop_gradient(params)

        def step(m, inputs):
            obs, first, mask = inputs  # [B, ...], [B], [B]
            _, next_m = self.network.apply(params, obs, first, m, method=MuZeroNetwork.encode)
            # Steps before the window (another episode, or overwritten) leave it unchanged.
            keep = mask.reshape(mask.shape + (1,) * (m.ndim - 1)) > 0
            return jnp.where(keep, next_m, m), None

        time_major = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), (
            memory.burn_in_obs, memory.burn_in_first, memory.burn_in_mask))
        start, _ = jax.lax.scan(step, memory.memory, time_major)
        return start if through else jax.lax.stop_gradient(start)

    def _loss(self, params: Params, batch: ReplayBatch, boot_params: Params | None = None
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The batch's loss and the logged metrics (plus ``priority`` [B]); ``boot_params``
        (default: ``params``) value the bootstrap observations."""
        terms, aux = self._loss_terms(params, batch,
                                      params if boot_params is None else boot_params)
        return jnp.mean(batch.weight * sum(terms.values())), aux

    def _loss_terms(self, params: Params, batch: ReplayBatch, boot_params: Params
                    ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        """The loss split into its weighted terms (name -> [B], summing to the per-sample
        loss) and the logged metrics of :meth:`_loss`."""
        cfg = self.cfg
        k = cfg.unroll_steps
        chex.assert_shape(batch.action, (None, k))
        first, memory = None, None
        if batch.memory is not None:
            first, memory = batch.memory.first, self._start_memory(params, batch.memory)
        latent, logits0, value_logits0 = self.network.apply(
            params, batch.obs, first, memory, method=MuZeroNetwork.initial_inference)

        def step(latent, action):
            next_latent, reward_logits, terminal_logit, logits, value_logits = (
                self.network.apply(params, latent, action,
                                   method=MuZeroNetwork.recurrent_inference))
            # MuZero halves the gradient into the dynamics at every step, so the total
            # gradient reaching the representation does not grow with the unroll length.
            return scale_gradient(next_latent, 0.5), (reward_logits, terminal_logit, logits,
                                                      value_logits, next_latent)

        _, (reward_logits, terminal_logits, logits, value_logits, latents) = jax.lax.scan(
            step, latent, jnp.swapaxes(batch.action, 0, 1))  # each [K, B, ...]
        policy_logits = jnp.concatenate([logits0[None], logits], 0).swapaxes(0, 1)  # [B, K+1, A]
        value_logits = jnp.concatenate([value_logits0[None], value_logits],
                                       0).swapaxes(0, 1)  # [B, K+1, 2S+1]
        reward_logits = reward_logits.swapaxes(0, 1)  # [B, K, 2S+1]
        terminal_logits = terminal_logits.swapaxes(0, 1)  # [B, K]
        if cfg.fresh_bootstrap:
            boot_obs = _flatten2(batch.bootstrap_obs)  # [B*(K+1), ...]
            boot_first, boot_memory = None, None
            if batch.memory is not None:
                boot_first = _flatten2(batch.memory.bootstrap_first)
                boot_memory = _flatten2(batch.memory.bootstrap_memory)
            _, _, boot_logits = self.network.apply(
                jax.lax.stop_gradient(boot_params), boot_obs, boot_first, boot_memory,
                method=MuZeroNetwork.initial_inference)
            boot_value = logits_to_scalar(boot_logits, cfg.support_size).reshape(
                batch.value_partial.shape)  # [B, K+1]
            batch = batch._replace(value_target=jax.lax.stop_gradient(
                batch.value_partial + batch.bootstrap_discount * boot_value))
        losses = unroll_losses(policy_logits, value_logits, reward_logits, terminal_logits,
                               batch, cfg.support_size)
        # The root counts 1, each unrolled step 1/K (MuZero's gradient scaling of the losses).
        step_weight = jnp.concatenate([jnp.ones(1), jnp.full(k, 1.0 / k)])  # [K+1]
        policy = losses.policy @ step_weight  # [B]
        value = losses.value @ step_weight  # [B]
        reward = losses.reward.sum(-1) / k  # [B]
        terminal = losses.terminal.sum(-1) / k  # [B]
        entropy = policy_entropy(policy_logits, batch.policy_mask, step_weight)  # [B]
        terms = {"policy": cfg.policy_loss_weight * policy, "value": cfg.value_loss_weight * value,
                 "reward": cfg.reward_loss_weight * reward,
                 "terminal": cfg.terminal_loss_weight * terminal}
        if cfg.policy_entropy_weight > 0:
            terms["entropy"] = -cfg.policy_entropy_weight * entropy
        extra = {}
        if cfg.policy_gradient_weight > 0:
            pg, metrics = self._policy_gradient_term(params, batch, logits0, value_logits0)
            terms["policy_gradient"] = cfg.policy_gradient_weight * pg
            extra.update(metrics)
        if cfg.consistency_loss_weight > 0:
            consistency = self._consistency(params, latents.swapaxes(0, 1), batch)  # [B]
            terms["consistency"] = cfg.consistency_loss_weight * consistency
            extra["consistency_loss"] = consistency.mean()
        error, priority = value_error_and_priority(value_logits, reward_logits, batch,
                                                   cfg.support_size, cfg.priority_reward_weight)
        aux = {"policy_loss": policy.mean(), "value_loss": value.mean(),
               "reward_loss": reward.mean(), "terminal_loss": terminal.mean(),
               "policy_entropy": entropy.mean(), "value_error": error.mean(),
               "priority": priority, **extra}
        return terms, aux

    def _diagnostics_impl(self, params: Params, opt_state: optax.OptState,
                          batch: ReplayBatch) -> dict[str, jax.Array]:
        """What decides whether each loss shapes the representation: the norm of each
        weighted loss term's gradient at the representation's params (``grad_norm_<term>``),
        and the effective rank (Roy & Vetterli 2007: exp of the entropy of the normalised
        singular values) of the batch's root latents, between 1 (collapsed) and D."""
        self.trace_counts["diagnostics"] += 1
        boot_params = self._bootstrap_params(params, opt_state)
        names = list(jax.eval_shape(lambda p: self._loss_terms(p, batch, boot_params)[0],
                                    params))

        def term_means(p):
            terms, _ = self._loss_terms(p, batch, boot_params)
            return jnp.stack([jnp.mean(batch.weight * terms[n]) for n in names])

        jac = jax.jacrev(term_means)(params)["params"]["representation"]  # leaves [T, ...]
        sq = sum(jnp.sum(jnp.square(x).reshape(len(names), -1), -1)
                 for x in jax.tree_util.tree_leaves(jac))  # [T]
        out = {f"grad_norm_{n}": jnp.sqrt(sq[i]) for i, n in enumerate(names)}
        first, memory = None, None
        if batch.memory is not None:
            first, memory = batch.memory.first, self._start_memory(params, batch.memory)
        latent = self.network.apply(params, batch.obs, first, memory,
                                    method=MuZeroNetwork.represent)  # [B, D]
        out["latent_effective_rank"] = effective_rank(latent)
        return out

    def _real_predictions(self, params: Params, batch: ReplayBatch, steps: int
                          ) -> tuple[jax.Array, jax.Array]:
        """Policy and value logits [B, steps, A], [B, steps, 2S+1] of the network on the real
        observations after the first ``steps`` unrolled steps (``batch.next_obs``)."""
        b = batch.action.shape[0]
        obs = _flatten2(jax.tree_util.tree_map(lambda x: x[:, :steps], batch.next_obs))
        first, memory = None, None
        if batch.memory is not None:
            first = _flatten2(batch.memory.next_first[:, :steps])
            memory = _flatten2(jax.tree_util.tree_map(lambda x: x[:, :steps],
                                                      batch.memory.next_memory))
        _, logits, value_logits = self.network.apply(params, obs, first, memory,
                                                     method=MuZeroNetwork.initial_inference)
        return logits.reshape(b, steps, -1), value_logits.reshape(b, steps, -1)

    def _policy_gradient_term(self, params: Params, batch: ReplayBatch, logits0: jax.Array,
                              value_logits0: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The policy-gradient loss [B] and its logged metrics: the batch mean and the mean
        |A| over the positions the term used (masked positions hold 0, which is not data)."""
        pg, advantage, live = self._policy_gradient(params, batch, logits0, value_logits0)
        return pg, {"policy_gradient_loss": pg.mean(),
                    "advantage": jnp.abs(advantage).sum() / jnp.maximum(live.sum(), 1.0)}

    def _policy_gradient(self, params: Params, batch: ReplayBatch, logits0: jax.Array,
                         value_logits0: jax.Array
                         ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """:func:`policy_gradient_loss` at the first ``policy_gradient_steps`` positions: the
        start's predictions (``logits0`` [B, A], ``value_logits0``) and the network's on the
        next real observations. -> (loss [B], advantage [B, P], live positions [B, P])."""
        cfg = self.cfg
        more = cfg.policy_gradient_steps - 1
        if not more:
            loss, advantage = policy_gradient_loss(logits0, value_logits0, batch,
                                                   cfg.support_size,
                                                   cfg.policy_gradient_normalize)
            return loss, advantage[:, None], policy_gradient_mask(batch, 1)
        logits, value_logits = self._real_predictions(params, batch, more)
        logits = jnp.concatenate([logits0[:, None], logits], 1)  # [B, P, A]
        value_logits = jnp.concatenate([value_logits0[:, None], value_logits], 1)
        position_mask = jnp.concatenate([jnp.ones_like(batch.next_obs_mask[:, :1]),
                                         batch.next_obs_mask[:, :more]], 1)  # [B, P]
        loss, advantage = policy_gradient_loss(logits, value_logits, batch, cfg.support_size,
                                               cfg.policy_gradient_normalize, position_mask)
        return loss, advantage, policy_gradient_mask(batch, cfg.policy_gradient_steps,
                                                     position_mask)

    def _consistency(self, params: Params, latents: jax.Array, batch: ReplayBatch) -> jax.Array:
        """The state-consistency loss [B] of the unrolled latents [B, K, D] against the
        representations of the observations they should stand for (``batch.next_obs``)."""
        b, k, d = latents.shape
        next_obs = _flatten2(batch.next_obs)  # [B*K, ...]
        first, memory = None, None
        if batch.memory is not None:
            first, memory = (_flatten2(batch.memory.next_first),
                             _flatten2(batch.memory.next_memory))
        real = self.network.apply(params, next_obs, first, memory,
                                  method=MuZeroNetwork.represent)  # [B*K, D]
        target = self.network.apply(params, real, False, method=MuZeroNetwork.project)
        online = self.network.apply(params, latents.reshape(b * k, d), True,
                                    method=MuZeroNetwork.project)
        return consistency_loss(online.reshape(b, k, -1), target.reshape(b, k, -1),
                                batch.next_obs_mask)

    def target_network(self, opt_state: optax.OptState) -> Params:
        """The target network's params (``target_update_interval`` > 0)."""
        found = find_state(opt_state, TargetParamsState)
        if found is None:
            raise TypeError("the optimiser state has no target network; was it made by an "
                            "agent with the same target_update_interval?")
        return found.target

    def _bootstrap_params(self, params: Params, opt_state: optax.OptState) -> Params:
        """What values the bootstrap observations: the target network when there is one."""
        return self.target_network(opt_state) if self.cfg.target_update_interval else params

    def _train_step_impl(self, params: Params, opt_state: optax.OptState, step: jax.Array,
                         batch: ReplayBatch) -> tuple[Params, optax.OptState, dict[str, Any],
                                                      jax.Array]:
        self.trace_counts["train"] += 1
        (loss, aux), grads = jax.value_and_grad(self._loss, has_aux=True)(
            params, batch, self._bootstrap_params(params, opt_state))
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        priority = aux.pop("priority")
        metrics = dict(aux, loss=loss, grad_norm=optax.global_norm(grads),
                       learning_rate=jnp.asarray(self.lr_schedule(step), jnp.float32))
        return params, opt_state, metrics, priority


def _flatten2(tree: Any) -> Any:
    """Merges the two leading axes of every leaf: [B, K, ...] -> [B*K, ...]."""
    return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def make_muzero_agent(cfg: MuZeroConfig, encoder_cfg: EncoderConfig, num_actions: int,
                      total_env_steps: int) -> MuZeroAgent:
    """A MuZero agent (Stochastic MuZero with ``cfg.stochastic``); ``total_env_steps`` sets
    the temperature and lr schedules' length."""
    if cfg.stochastic:
        from omega.agents.muzero.stochastic import StochasticMuZeroAgent

        return StochasticMuZeroAgent(cfg, encoder_cfg, num_actions, total_env_steps)
    return MuZeroAgent(cfg, encoder_cfg, num_actions, total_env_steps)

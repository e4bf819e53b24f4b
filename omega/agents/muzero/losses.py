"""MuZero's losses: pure functions of the network (a flax module), its params and a replay
batch.

The per-position pieces (cross-entropies to the targets, the consistency and policy-gradient
terms, the value error that sets the replay priority), the step weighting MuZero applies to
an unrolled model (the root counts 1, each unrolled step 1/K), the fresh value bootstrap,
and the MuZero loss itself split into weighted terms (:func:`loss_terms`), with the
diagnostics that read them. Stochastic MuZero's loss (:mod:`omega.agents.muzero.stochastic`)
is built from the same pieces.

Shapes: ``B`` batch, ``K`` unroll steps, ``A`` actions, ``D`` latent size, ``2S + 1``
support bins.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from omega.agents.base import Params
from omega.agents.muzero.config import MuZeroConfig, Support
from omega.agents.muzero.memory import start_memory
from omega.agents.muzero.networks import (
    MuZeroNetwork,
    logits_to_scalar,
    scalar_to_two_hot,
    scale_gradient,
)
from omega.replay import ReplayBatch

# ---------------------------------------------------------------------------------------------
# Per-position pieces (tested one by one)


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
                         batch: ReplayBatch, support: Support, normalize: bool = True,
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
    value = logits_to_scalar(root_value_logits, support)  # [B, P]
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
                  terminal_logits: jax.Array, batch: ReplayBatch, support: Support) -> Losses:
    """Masked per-position cross-entropies; logits [B, K+1, A], [B, K+1, 2S+1], [B, K, 2S+1]
    and [B, K] (binary)."""
    value_target = scalar_to_two_hot(batch.value_target, support)  # [B, K+1, 2S+1]
    reward_target = scalar_to_two_hot(batch.reward_target, support)  # [B, K, 2S+1]
    terminal = optax.sigmoid_binary_cross_entropy(terminal_logits, batch.terminal_target)
    return Losses(
        policy=cross_entropy(batch.policy_target, policy_logits) * batch.policy_mask,
        value=cross_entropy(value_target, value_logits) * batch.value_mask,
        reward=cross_entropy(reward_target, reward_logits) * batch.reward_mask,
        terminal=terminal * batch.reward_mask)


def value_error_and_priority(value_logits: jax.Array, reward_logits: jax.Array,
                             batch: ReplayBatch, support: Support,
                             reward_weight: float) -> tuple[jax.Array, jax.Array]:
    """The root value error [B] and the replay priority [B]: that error plus
    ``reward_weight`` times the unroll's largest reward error (logits [B, K+1, 2S+1] and
    [B, K, 2S+1])."""
    predicted = logits_to_scalar(value_logits[:, 0], support)  # [B]
    error = jnp.abs(batch.value_target[:, 0] - predicted)  # [B]
    if not reward_weight:
        return error, error
    reward = logits_to_scalar(reward_logits, support)  # [B, K]
    reward_error = jnp.max(jnp.abs(batch.reward_target - reward) * batch.reward_mask, -1)
    return error, error + reward_weight * reward_error


def effective_rank(x: jax.Array) -> jax.Array:
    """The effective rank (Roy & Vetterli 2007) of the centred rows x [B, D]: exp of the
    entropy of the normalised singular values; 1 for rows on a line, min(B, D) at most."""
    sv = jnp.linalg.svd(x - x.mean(0), compute_uv=False)
    p = sv / jnp.maximum(sv.sum(), 1e-12)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-30)), 0.0)))


# ---------------------------------------------------------------------------------------------
# Shared by MuZero and Stochastic MuZero


class UnrollTerms(NamedTuple):
    """The unweighted per-sample losses [B] of an unrolled model, each step-weighted: the
    root counts 1, each unrolled step 1/K (MuZero's gradient scaling of the losses), so the
    total does not grow with the unroll length."""

    policy: jax.Array
    value: jax.Array
    reward: jax.Array
    terminal: jax.Array
    entropy: jax.Array  # the prior's entropy, weighted like the policy loss


def step_weighted(losses: Losses, policy_logits: jax.Array, batch: ReplayBatch,
                  k: int) -> UnrollTerms:
    """:class:`UnrollTerms` of :func:`unroll_losses` (policy logits [B, K+1, A])."""
    step_weight = jnp.concatenate([jnp.ones(1), jnp.full(k, 1.0 / k)])  # [K+1]
    return UnrollTerms(policy=losses.policy @ step_weight, value=losses.value @ step_weight,
                       reward=losses.reward.sum(-1) / k, terminal=losses.terminal.sum(-1) / k,
                       entropy=policy_entropy(policy_logits, batch.policy_mask, step_weight))


def unroll_metrics(terms: UnrollTerms, error: jax.Array,
                   priority: jax.Array) -> dict[str, jax.Array]:
    """The logged batch means of the unroll's losses, the root value error, and the replay
    priority [B] (which the train step takes out of the metrics)."""
    return {"policy_loss": terms.policy.mean(), "value_loss": terms.value.mean(),
            "reward_loss": terms.reward.mean(), "terminal_loss": terms.terminal.mean(),
            "policy_entropy": terms.entropy.mean(), "value_error": error.mean(),
            "priority": priority}


def with_root(root: jax.Array, unrolled: jax.Array) -> jax.Array:
    """The root's prediction [B, ...] before the unrolled ones [K, B, ...] -> [B, K+1, ...]."""
    return jnp.concatenate([root[None], unrolled], 0).swapaxes(0, 1)


def flatten2(tree: Any) -> Any:
    """Merges the two leading axes of every leaf: [B, K, ...] -> [B*K, ...]."""
    return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def fresh_value_targets(network: Any, cfg: MuZeroConfig, boot_params: Params,
                        batch: ReplayBatch) -> ReplayBatch:
    """With ``fresh_bootstrap``, the batch with its n-step value targets [B, K+1]
    bootstrapped with ``boot_params``' value of the stored observations n steps on (without
    gradient), instead of the root values stored when acting; else the batch unchanged.
    ``network``: any MuZero network whose ``initial_inference(obs, first, memory)`` gives
    (latent, policy logits, value logits)."""
    if not cfg.fresh_bootstrap:
        return batch
    boot_obs = flatten2(batch.bootstrap_obs)  # [B*(K+1), ...]
    boot_first, boot_memory = None, None
    if batch.memory is not None:
        boot_first = flatten2(batch.memory.bootstrap_first)
        boot_memory = flatten2(batch.memory.bootstrap_memory)
    _, _, boot_logits = network.apply(
        jax.lax.stop_gradient(boot_params), boot_obs, boot_first, boot_memory,
        method=type(network).initial_inference)
    boot_value = logits_to_scalar(boot_logits, cfg.support).reshape(
        batch.value_partial.shape)  # [B, K+1]
    return batch._replace(value_target=jax.lax.stop_gradient(
        batch.value_partial + batch.bootstrap_discount * boot_value))


def score_unroll(network: Any, cfg: MuZeroConfig, boot_params: Params, batch: ReplayBatch,
                 root: tuple[jax.Array, jax.Array], unrolled: tuple[jax.Array, ...]
                 ) -> tuple[ReplayBatch, UnrollTerms, jax.Array, jax.Array]:
    """The losses of an unrolled model's predictions: ``root`` (policy logits [B, A], value
    logits [B, 2S+1]) and ``unrolled`` (policy, value, reward logits [K, B, ...], terminal
    logits [K, B]). -> (the batch with its value targets (:func:`fresh_value_targets`),
    the step-weighted losses, the root value error [B], the replay priority [B])."""
    logits, value_logits, reward_logits, terminal_logits = unrolled
    policy_logits = with_root(root[0], logits)  # [B, K+1, A]
    value_logits = with_root(root[1], value_logits)  # [B, K+1, 2S+1]
    reward_logits = reward_logits.swapaxes(0, 1)  # [B, K, 2S+1]
    terminal_logits = terminal_logits.swapaxes(0, 1)  # [B, K]
    batch = fresh_value_targets(network, cfg, boot_params, batch)
    losses = unroll_losses(policy_logits, value_logits, reward_logits, terminal_logits,
                           batch, cfg.support)
    error, priority = value_error_and_priority(value_logits, reward_logits, batch,
                                               cfg.support, cfg.priority_reward_weight)
    return batch, step_weighted(losses, policy_logits, batch, cfg.unroll_steps), error, priority


def real_predictions(network: Any, params: Params, batch: ReplayBatch, steps: int
                     ) -> tuple[jax.Array, jax.Array]:
    """Policy and value logits [B, steps, A], [B, steps, 2S+1] of the network on the real
    observations after the first ``steps`` unrolled steps (``batch.next_obs``)."""
    b = batch.action.shape[0]
    obs = flatten2(jax.tree_util.tree_map(lambda x: x[:, :steps], batch.next_obs))
    first, memory = None, None
    if batch.memory is not None:
        first = flatten2(batch.memory.next_first[:, :steps])
        memory = flatten2(jax.tree_util.tree_map(lambda x: x[:, :steps],
                                                 batch.memory.next_memory))
    _, logits, value_logits = network.apply(params, obs, first, memory,
                                            method=type(network).initial_inference)
    return logits.reshape(b, steps, -1), value_logits.reshape(b, steps, -1)


def policy_gradient(network: Any, cfg: MuZeroConfig, params: Params, batch: ReplayBatch,
                    logits0: jax.Array, value_logits0: jax.Array
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`policy_gradient_loss` at the first ``policy_gradient_steps`` positions: the
    start's predictions (``logits0`` [B, A], ``value_logits0``) and the network's on the
    next real observations. -> (loss [B], advantage [B, P], live positions [B, P])."""
    more = cfg.policy_gradient_steps - 1
    if not more:
        loss, advantage = policy_gradient_loss(logits0, value_logits0, batch, cfg.support,
                                               cfg.policy_gradient_normalize)
        return loss, advantage[:, None], policy_gradient_mask(batch, 1)
    logits, value_logits = real_predictions(network, params, batch, more)
    logits = jnp.concatenate([logits0[:, None], logits], 1)  # [B, P, A]
    value_logits = jnp.concatenate([value_logits0[:, None], value_logits], 1)
    position_mask = jnp.concatenate([jnp.ones_like(batch.next_obs_mask[:, :1]),
                                     batch.next_obs_mask[:, :more]], 1)  # [B, P]
    loss, advantage = policy_gradient_loss(logits, value_logits, batch, cfg.support,
                                           cfg.policy_gradient_normalize, position_mask)
    return loss, advantage, policy_gradient_mask(batch, cfg.policy_gradient_steps,
                                                 position_mask)


def policy_gradient_weight_at(cfg: MuZeroConfig, progress: jax.Array | None) -> jax.Array:
    """The policy-gradient term's weight at ``progress`` (the fraction of the run's train
    steps done): ``policy_gradient_weight``, faded linearly to 0 at
    ``policy_gradient_fade_until`` when that is on. ``progress`` None = the full weight."""
    weight = jnp.asarray(cfg.policy_gradient_weight, jnp.float32)
    if not cfg.policy_gradient_fade_until or progress is None:
        return weight
    return weight * jnp.clip(1.0 - progress / cfg.policy_gradient_fade_until, 0.0, 1.0)


def policy_gradient_term(network: Any, cfg: MuZeroConfig, params: Params, batch: ReplayBatch,
                         logits0: jax.Array, value_logits0: jax.Array,
                         progress: jax.Array | None = None
                         ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The weighted policy-gradient loss [B] (:func:`policy_gradient_weight_at`
    ``progress``) and its logged metrics: the batch mean, the mean |A| over the positions
    the term used (masked positions hold 0, which is not data) and the weight used."""
    pg, advantage, live = policy_gradient(network, cfg, params, batch, logits0, value_logits0)
    weight = policy_gradient_weight_at(cfg, progress)
    return weight * pg, {
        "policy_gradient_loss": pg.mean(),
        "advantage": jnp.abs(advantage).sum() / jnp.maximum(live.sum(), 1.0),
        "policy_gradient_weight": weight}


# ---------------------------------------------------------------------------------------------
# The MuZero loss


def consistency(network: MuZeroNetwork, params: Params, latents: jax.Array,
                batch: ReplayBatch) -> jax.Array:
    """The state-consistency loss [B] of the unrolled latents [B, K, D] against the
    representations of the observations they should stand for (``batch.next_obs``)."""
    b, k, d = latents.shape
    next_obs = flatten2(batch.next_obs)  # [B*K, ...]
    first, memory = None, None
    if batch.memory is not None:
        first, memory = flatten2(batch.memory.next_first), flatten2(batch.memory.next_memory)
    real = network.apply(params, next_obs, first, memory,
                         method=MuZeroNetwork.represent)  # [B*K, D]
    target = network.apply(params, real, False, method=MuZeroNetwork.project)
    online = network.apply(params, latents.reshape(b * k, d), True,
                           method=MuZeroNetwork.project)
    return consistency_loss(online.reshape(b, k, -1), target.reshape(b, k, -1),
                            batch.next_obs_mask)


def root_inference(network: MuZeroNetwork, cfg: MuZeroConfig, params: Params,
                   batch: ReplayBatch) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(latent [B, D], policy logits [B, A], value logits [B, 2S+1]) of each sequence's
    start, the representation starting from its memory (recurrent encoders)."""
    first, memory = None, None
    if batch.memory is not None:
        first, memory = batch.memory.first, start_memory(network, cfg, params, batch.memory)
    return network.apply(params, batch.obs, first, memory,
                         method=MuZeroNetwork.initial_inference)


def unroll(network: MuZeroNetwork, params: Params, latent: jax.Array, action: jax.Array
           ) -> tuple[jax.Array, ...]:
    """The model unrolled from ``latent`` [B, D] along the actions [B, K]: (reward logits,
    terminal logits, policy logits, value logits, latents), each [K, B, ...]."""

    def step(latent, action):
        next_latent, reward_logits, terminal_logit, logits, value_logits = (
            network.apply(params, latent, action, method=MuZeroNetwork.recurrent_inference))
        # MuZero halves the gradient into the dynamics at every step, so the total
        # gradient reaching the representation does not grow with the unroll length.
        return scale_gradient(next_latent, 0.5), (reward_logits, terminal_logit, logits,
                                                  value_logits, next_latent)

    _, out = jax.lax.scan(step, latent, jnp.swapaxes(action, 0, 1))
    return out


def loss_terms(network: MuZeroNetwork, cfg: MuZeroConfig, params: Params, batch: ReplayBatch,
               boot_params: Params, progress: jax.Array | None = None
               ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """The loss split into its weighted terms (name -> [B], summing to the per-sample
    loss) and the logged metrics (plus ``priority`` [B]); ``boot_params`` value the
    bootstrap observations; ``progress`` (the fraction of the run's train steps done)
    sets the faded weights (:func:`policy_gradient_weight_at`)."""
    k = cfg.unroll_steps
    chex.assert_shape(batch.action, (None, k))
    latent, logits0, value_logits0 = root_inference(network, cfg, params, batch)
    reward_logits, terminal_logits, logits, value_logits, latents = unroll(
        network, params, latent, batch.action)  # each [K, B, ...]
    batch, unrolled, error, priority = score_unroll(
        network, cfg, boot_params, batch, (logits0, value_logits0),
        (logits, value_logits, reward_logits, terminal_logits))
    terms = {"policy": cfg.policy_loss_weight * unrolled.policy,
             "value": cfg.value_loss_weight * unrolled.value,
             "reward": cfg.reward_loss_weight * unrolled.reward,
             "terminal": cfg.terminal_loss_weight * unrolled.terminal}
    if cfg.policy_entropy_weight > 0:
        terms["entropy"] = -cfg.policy_entropy_weight * unrolled.entropy
    extra = {}
    if cfg.policy_gradient_weight > 0:
        terms["policy_gradient"], metrics = policy_gradient_term(network, cfg, params, batch,
                                                                 logits0, value_logits0,
                                                                 progress)
        extra.update(metrics)
    if cfg.consistency_loss_weight > 0:
        term = consistency(network, params, latents.swapaxes(0, 1), batch)  # [B]
        terms["consistency"] = cfg.consistency_loss_weight * term
        extra["consistency_loss"] = term.mean()
    return terms, {**unroll_metrics(unrolled, error, priority), **extra}


def loss(network: MuZeroNetwork, cfg: MuZeroConfig, params: Params, batch: ReplayBatch,
         boot_params: Params, progress: jax.Array | None = None
         ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The batch's loss (the weighted mean of :func:`loss_terms`) and the logged metrics."""
    terms, aux = loss_terms(network, cfg, params, batch, boot_params, progress)
    return jnp.mean(batch.weight * sum(terms.values())), aux


def diagnostics(network: MuZeroNetwork, cfg: MuZeroConfig, params: Params, batch: ReplayBatch,
                boot_params: Params, progress: jax.Array | None = None
                ) -> dict[str, jax.Array]:
    """What decides whether each loss shapes the representation: the norm of each
    weighted loss term's gradient at the representation's params (``grad_norm_<term>``),
    and the effective rank (Roy & Vetterli 2007: exp of the entropy of the normalised
    singular values) of the batch's root latents, between 1 (collapsed) and D."""
    names = list(jax.eval_shape(
        lambda p: loss_terms(network, cfg, p, batch, boot_params, progress)[0], params))

    def term_means(p):
        terms, _ = loss_terms(network, cfg, p, batch, boot_params, progress)
        return jnp.stack([jnp.mean(batch.weight * terms[n]) for n in names])

    jac = jax.jacrev(term_means)(params)["params"]["representation"]  # leaves [T, ...]
    sq = sum(jnp.sum(jnp.square(x).reshape(len(names), -1), -1)
             for x in jax.tree_util.tree_leaves(jac))  # [T]
    out = {f"grad_norm_{n}": jnp.sqrt(sq[i]) for i, n in enumerate(names)}
    first, memory = None, None
    if batch.memory is not None:
        first, memory = batch.memory.first, start_memory(network, cfg, params, batch.memory)
    latent = network.apply(params, batch.obs, first, memory,
                           method=MuZeroNetwork.represent)  # [B, D]
    out["latent_effective_rank"] = effective_rank(latent)
    return out

"""Stochastic MuZero (Antonoglou et al., ICLR 2022): a learned model with chance nodes.

MuZero's dynamics is deterministic: when the same move can end in a pit or on a squeaky
board, it can only predict an average of the two, and the search then plans in a world
that does not exist. Stochastic MuZero splits a transition in two:

- afterstate dynamics: (latent, action) -> afterstate, the state after the move and before
  the environment's dice; afterstate prediction: afterstate -> (chance logits over a codebook
  of ``C`` outcomes, afterstate value Q);
- dynamics: (afterstate, chance code) -> (next latent, reward, terminal logit);
- a chance encoder: the real next observation -> a code, one-hot over the codebook (argmax
  forward, the gradient copied straight through backward), so the model learns which outcome
  happened; the afterstate's chance logits learn to predict the code (cross-entropy) and a
  commitment loss pulls the encoder's output towards its own one-hot code.

Search is ``mctx.stochastic_muzero_policy`` (pUCT over decision nodes; chance nodes are
expanded by sampling the predicted outcome distribution). With ``search: regularized`` the
action and the policy target come from the regularized policy over the root's Q-values
instead of the visit counts. Everything else (replay, n-step targets, fresh bootstrapping,
prioritised sampling, the train loop) is the MuZero agent's.

Shapes: ``B`` batch, ``K`` unroll steps, ``D`` latent size, ``A`` actions, ``C`` chance
outcomes, ``2S + 1`` support bins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import mctx

from omega.agents.base import ActOutput, Observation, Params
from omega.agents.muzero import agent as mz
from omega.agents.muzero.config import MuZeroConfig
from omega.agents.muzero.networks import (
    Prediction,
    Representation,
    logits_to_scalar,
    min_max_scale,
    num_bins,
    scalar_to_two_hot,
    scale_gradient,
)
from omega.models.encoders import EncoderConfig, make_encoder
from omega.replay import ReplayBatch

CODE_USAGE_TEMPERATURE = 0.1

# ---------------------------------------------------------------------------------------------
# Pure pieces


def straight_through_one_hot(encoding: jax.Array) -> jax.Array:
    """The chance encoder's output c_e [..., C] -> its nearest code, the one-hot of its argmax
    [..., C], forward; backward, the gradient is copied to c_e unchanged (straight-through, as
    in VQ-VAE and Stochastic MuZero). Copying it through a softmax instead would vanish as soon
    as the softmax saturates, and the codebook collapses onto one code."""
    one_hot = jax.nn.one_hot(jnp.argmax(encoding, axis=-1), encoding.shape[-1],
                             dtype=encoding.dtype)
    return encoding + jax.lax.stop_gradient(one_hot - encoding)


# ---------------------------------------------------------------------------------------------
# Networks


class GatedTransition(nn.Module):
    """(latent [B, D], condition [B, X]) -> (next latent [B, D], features [B, H]): an MLP whose
    output updates the latent through a learned gate (highway), min-max scaled."""

    hidden: int

    @nn.compact
    def __call__(self, latent: jax.Array, condition: jax.Array) -> tuple[jax.Array, jax.Array]:
        dim = latent.shape[-1]
        x = jnp.concatenate([latent, condition], -1)
        for i in range(2):
            x = nn.relu(nn.LayerNorm(name=f"norm_{i}")(nn.Dense(self.hidden, name=f"fc_{i}")(x)))
        candidate = nn.Dense(dim, name="candidate")(x)
        gate = jax.nn.sigmoid(nn.Dense(dim, bias_init=nn.initializers.constant(-1.0),
                                       name="gate")(x))
        return min_max_scale(latent + gate * (candidate - latent)), x


class StochasticMuZeroNetwork(nn.Module):
    encoder_cfg: EncoderConfig
    num_actions: int
    num_chance_outcomes: int
    latent_dim: int
    dynamics_hidden: int
    prediction_hidden: int
    support_size: int

    def setup(self):
        bins = num_bins(self.support_size)
        self.representation = Representation(self.encoder_cfg, self.latent_dim)
        self.prediction = Prediction(self.num_actions, self.prediction_hidden, bins)
        self.afterstate_dynamics = GatedTransition(self.dynamics_hidden)
        self.afterstate_hidden = nn.Dense(self.prediction_hidden)
        self.afterstate_norm = nn.LayerNorm()
        # Zero-initialised heads: a uniform chance prediction and Q = 0 at the start.
        self.chance_head = nn.Dense(self.num_chance_outcomes, kernel_init=nn.initializers.zeros)
        self.afterstate_value_head = nn.Dense(bins, kernel_init=nn.initializers.zeros)
        self.dynamics = GatedTransition(self.dynamics_hidden)
        self.reward_head = nn.Dense(bins, kernel_init=nn.initializers.zeros)
        self.terminal_head = nn.Dense(1, kernel_init=nn.initializers.zeros,
                                      bias_init=nn.initializers.constant(-4.0))
        self.chance_encoder = make_encoder(self.encoder_cfg)
        # Normalised features: observations that differ in one cell must start in different
        # codes often enough for the losses downstream to organise them.
        self.chance_encoder_norm = nn.LayerNorm()
        self.chance_encoder_head = nn.Dense(self.num_chance_outcomes)

    def initial_inference(self, obs: Mapping[str, jax.Array]
                          ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """obs -> (latent [B, D], policy logits [B, A], value logits [B, 2S+1])."""
        latent, _ = self.representation(obs)  # never recurrent (refused in __init__)
        logits, value_logits = self.prediction(latent)
        return latent, logits, value_logits

    def afterstate_inference(self, latent: jax.Array, action: jax.Array
                             ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(latent [B, D], action [B]) -> (afterstate [B, D], chance logits [B, C],
        afterstate value logits [B, 2S+1])."""
        afterstate, _ = self.afterstate_dynamics(latent,
                                                 jax.nn.one_hot(action, self.num_actions))
        x = nn.relu(self.afterstate_norm(self.afterstate_hidden(afterstate)))
        return afterstate, self.chance_head(x), self.afterstate_value_head(x)

    def chance_inference(self, afterstate: jax.Array, code: jax.Array
                         ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
        """(afterstate [B, D], code [B, C] one-hot) -> (next latent, reward logits, terminal
        logit [B], policy logits and value logits of the next latent)."""
        next_latent, x = self.dynamics(afterstate, code)
        reward_logits = self.reward_head(x)
        terminal_logit = self.terminal_head(x)[..., 0]
        logits, value_logits = self.prediction(next_latent)
        return next_latent, reward_logits, terminal_logit, logits, value_logits

    def encode_chance(self, obs: Mapping[str, jax.Array]) -> jax.Array:
        """The real observation after a transition [B, ...] -> chance logits [B, C]."""
        h, _ = self.chance_encoder(obs, None, None)
        return self.chance_encoder_head(self.chance_encoder_norm(h))

    def __call__(self, obs: Mapping[str, jax.Array], action: jax.Array):
        """Touches every submodule, for ``init``."""
        latent, _, _ = self.initial_inference(obs)
        afterstate, chance_logits, _ = self.afterstate_inference(latent, action)
        del chance_logits
        code = straight_through_one_hot(self.encode_chance(obs))
        return self.chance_inference(afterstate, code)


# ---------------------------------------------------------------------------------------------
# Search


def run_stochastic_search(params: Params, rng: jax.Array, root: mctx.RootFnOutput,
                          decision_fn: Any, chance_fn: Any, *, num_simulations: int,
                          pb_c_init: float, pb_c_base: float, dirichlet_alpha: float,
                          dirichlet_fraction: float, temperature: jax.Array | float,
                          greedy: bool, search: str = "muzero",
                          explore: jax.Array | float = 1.0) -> mz.SearchOutput:
    """One batched stochastic search. ``search="muzero"``: the visit distribution is the
    policy target and training actions are sampled from it with ``temperature``; greedy: no
    root noise and the most visited action (ties to the better Q). ``search="regularized"``:
    the regularized policy over the root's completed Q-values is target and action
    distribution (argmax when greedy). ``explore`` scales the root Dirichlet noise (0 when
    evaluating the sampled policy)."""
    rng, act_rng = jax.random.split(rng)
    out = mctx.stochastic_muzero_policy(
        params, rng, root, decision_fn, chance_fn, num_simulations,
        dirichlet_fraction=0.0 if greedy else dirichlet_fraction * explore,
        dirichlet_alpha=dirichlet_alpha, pb_c_init=pb_c_init, pb_c_base=pb_c_base,
        temperature=temperature)
    summary = out.search_tree.summary()  # decision children of the root: [N, A]
    if search == "regularized":
        q = mz.completed_qvalues(summary.qvalues, summary.visit_counts, summary.value)
        lam = mz.regularization_strength(summary.visit_counts, pb_c_init)
        pi = mz.regularized_policy(q, jax.nn.softmax(root.prior_logits), lam)
        action = (jnp.argmax(pi, axis=-1) if greedy
                  else jax.random.categorical(act_rng, jnp.log(pi), axis=-1))
        return mz.SearchOutput(action=action.astype(jnp.int32), search_policy=pi,
                               root_value=summary.value)
    if greedy:
        visits = summary.visit_counts
        most = visits == visits.max(axis=-1, keepdims=True)
        action = jnp.argmax(jnp.where(most, summary.qvalues, -jnp.inf), axis=-1)
    else:
        action = out.action
    return mz.SearchOutput(action=action.astype(jnp.int32), search_policy=out.action_weights,
                           root_value=summary.value)


# ---------------------------------------------------------------------------------------------
# Agent


class StochasticMuZeroAgent(mz.MuZeroAgent):
    """The MuZero agent with chance nodes in its model and its search."""

    supports_diagnostics = False  # its loss is not split into terms

    def __init__(self, cfg: MuZeroConfig, encoder_cfg: EncoderConfig, num_actions: int,
                 total_env_steps: int):
        # MuZeroConfig refuses search: gumbel with stochastic, and the base class a recurrent
        # encoder (omega.agents.muzero.config.check_encoder).
        super().__init__(cfg, encoder_cfg, num_actions, total_env_steps)
        self.network = StochasticMuZeroNetwork(
            encoder_cfg, self.num_actions, cfg.num_chance_outcomes, cfg.latent_dim,
            cfg.dynamics_hidden, cfg.prediction_hidden, cfg.support_size)

    loss_columns = mz.MuZeroAgent.loss_columns + (
        "afterstate_value_loss", "chance_loss", "commitment_loss", "code_usage_entropy",
        "codes_used")

    def _new_replay(self):
        replay = super()._new_replay()
        replay.with_next_obs = True  # the chance encoder sees the real next observations
        return replay

    # -- search callbacks (mctx) ---------------------------------------------------------------

    def _decision_fn(self, params: Params, rng: jax.Array, action: jax.Array,
                     latent: jax.Array) -> tuple[mctx.DecisionRecurrentFnOutput, jax.Array]:
        del rng
        afterstate, chance_logits, q_logits = self.network.apply(
            params, latent, action, method=StochasticMuZeroNetwork.afterstate_inference)
        out = mctx.DecisionRecurrentFnOutput(
            chance_logits=chance_logits,
            afterstate_value=logits_to_scalar(q_logits, self.cfg.support_size))
        return out, afterstate

    def _chance_fn(self, params: Params, rng: jax.Array, outcome: jax.Array,
                   afterstate: jax.Array) -> tuple[mctx.ChanceRecurrentFnOutput, jax.Array]:
        del rng
        s = self.cfg.support_size
        code = jax.nn.one_hot(outcome, self.cfg.num_chance_outcomes)
        next_latent, reward_logits, terminal_logit, logits, value_logits = self.network.apply(
            params, afterstate, code, method=StochasticMuZeroNetwork.chance_inference)
        out = mctx.ChanceRecurrentFnOutput(
            action_logits=logits, value=logits_to_scalar(value_logits, s),
            reward=logits_to_scalar(reward_logits, s),
            discount=self.cfg.gamma * (1.0 - jax.nn.sigmoid(terminal_logit)))
        return out, next_latent

    # -- jitted bodies -------------------------------------------------------------------------

    def _act_impl(self, params: mz.ActorParams, obs: Observation, rng: jax.Array,
                  greedy: bool) -> ActOutput:
        self.trace_counts["act"] += 1
        cfg = self.cfg
        latent, logits, value_logits = self.network.apply(
            params.net, obs, method=StochasticMuZeroNetwork.initial_inference)
        root = mctx.RootFnOutput(prior_logits=logits,
                                 value=logits_to_scalar(value_logits, cfg.support_size),
                                 embedding=latent)
        out = run_stochastic_search(
            params.net, rng, root, self._decision_fn, self._chance_fn,
            num_simulations=cfg.num_simulations, pb_c_init=cfg.pb_c_init,
            pb_c_base=cfg.pb_c_base, dirichlet_alpha=cfg.dirichlet_alpha,
            dirichlet_fraction=cfg.dirichlet_fraction, temperature=params.temperature,
            greedy=greedy, search=cfg.search, explore=params.explore)
        extras = {"search_policy": out.search_policy, "root_value": out.root_value}
        return ActOutput(action=out.action, extras=extras, carry=None)

    def _value_impl(self, params: mz.ActorParams, obs: Observation) -> jax.Array:
        self.trace_counts["value"] += 1
        _, _, value_logits = self.network.apply(
            params.net, obs, method=StochasticMuZeroNetwork.initial_inference)
        return logits_to_scalar(value_logits, self.cfg.support_size)

    def _real_predictions(self, params: Params, batch: ReplayBatch, steps: int
                          ) -> tuple[jax.Array, jax.Array]:
        b = batch.action.shape[0]
        obs = {key: v[:, :steps].reshape((b * steps,) + v.shape[2:])
               for key, v in batch.next_obs.items()}
        _, logits, value_logits = self.network.apply(
            params, obs, method=StochasticMuZeroNetwork.initial_inference)
        return logits.reshape(b, steps, -1), value_logits.reshape(b, steps, -1)

    def _loss(self, params: Params, batch: ReplayBatch, boot_params: Params | None = None
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
        cfg = self.cfg
        k = cfg.unroll_steps
        b = batch.action.shape[0]
        net = self.network
        latent, logits0, value_logits0 = net.apply(
            params, batch.obs, method=StochasticMuZeroNetwork.initial_inference)
        next_obs = {key: v.reshape((b * k,) + v.shape[2:])
                    for key, v in batch.next_obs.items()}  # [B*K, ...]
        encoder_logits = net.apply(params, next_obs,
                                   method=StochasticMuZeroNetwork.encode_chance)
        encoder_logits = encoder_logits.reshape(b, k, -1)  # [B, K, C]
        code = straight_through_one_hot(encoder_logits)  # [B, K, C]
        has_next = batch.next_obs_mask  # [B, K]

        def step(latent, inputs):
            action, encoded, real = inputs
            afterstate, chance_logits, q_logits = net.apply(
                params, latent, action, method=StochasticMuZeroNetwork.afterstate_inference)
            # Where the stored next observation is not this step's successor (an episode end),
            # the model takes its own most likely outcome, as the search would.
            predicted = jax.nn.one_hot(jnp.argmax(chance_logits, -1), cfg.num_chance_outcomes)
            code = jnp.where(real[:, None] > 0, encoded, jax.lax.stop_gradient(predicted))
            next_latent, reward_logits, terminal_logit, logits, value_logits = net.apply(
                params, afterstate, code, method=StochasticMuZeroNetwork.chance_inference)
            return scale_gradient(next_latent, 0.5), (chance_logits, q_logits, reward_logits,
                                                      terminal_logit, logits, value_logits)

        _, (chance_logits, q_logits, reward_logits, terminal_logits, logits, value_logits) = (
            jax.lax.scan(step, latent, (jnp.swapaxes(batch.action, 0, 1),
                                        jnp.swapaxes(code, 0, 1),
                                        jnp.swapaxes(has_next, 0, 1))))  # each [K, B, ...]
        policy_logits = jnp.concatenate([logits0[None], logits], 0).swapaxes(0, 1)
        value_logits = jnp.concatenate([value_logits0[None], value_logits], 0).swapaxes(0, 1)
        batch = self._fresh_value_targets(params if boot_params is None else boot_params,
                                          batch)
        losses = mz.unroll_losses(policy_logits, value_logits, reward_logits.swapaxes(0, 1),
                                  terminal_logits.swapaxes(0, 1), batch, cfg.support_size)
        # The afterstate value after a_k has the same expectation as the state value z_k
        # (whose n-step return starts with the reward of step k).
        q_target = scalar_to_two_hot(batch.value_target[:, :k], cfg.support_size)
        q_loss = mz.cross_entropy(q_target, q_logits.swapaxes(0, 1)) * \
            batch.reward_mask * batch.value_mask[:, :k]  # [B, K]
        chance_loss = mz.cross_entropy(jax.lax.stop_gradient(code),
                                       chance_logits.swapaxes(0, 1)) * has_next  # [B, K]
        # Commitment: the encoder's output stays close to the code it chose.
        commitment = jnp.sum(jnp.square(encoder_logits - jax.lax.stop_gradient(code)),
                             -1) * has_next

        # Codebook usage: the entropy of the batch's average code distribution. Without it
        # the codes collapse onto one (a deterministic model) before the losses downstream
        # can tell outcomes apart. The sharp softmax makes the average follow the argmax codes
        # (a plain softmax of outputs near one-hot codes is near uniform whatever they are).
        probs = jax.nn.softmax(encoder_logits / CODE_USAGE_TEMPERATURE, -1)  # [B, K, C]
        usage = jnp.sum(probs * has_next[..., None], (0, 1)) / jnp.maximum(has_next.sum(), 1.0)
        usage_entropy = -jnp.sum(usage * jnp.log(usage + 1e-8))

        step_weight = jnp.concatenate([jnp.ones(1), jnp.full(k, 1.0 / k)])  # [K+1]
        policy = losses.policy @ step_weight
        value = losses.value @ step_weight
        reward = losses.reward.sum(-1) / k
        terminal = losses.terminal.sum(-1) / k
        q = q_loss.sum(-1) / k
        chance = chance_loss.sum(-1) / k
        commit = commitment.sum(-1) / k
        entropy = mz.policy_entropy(policy_logits, batch.policy_mask, step_weight)
        per_sample = (cfg.policy_loss_weight * policy + cfg.value_loss_weight * value
                      + cfg.reward_loss_weight * reward + cfg.terminal_loss_weight * terminal
                      + cfg.afterstate_value_loss_weight * q + cfg.chance_loss_weight * chance
                      + cfg.commitment_loss_weight * commit
                      - cfg.policy_entropy_weight * entropy)
        extra = {}
        if cfg.policy_gradient_weight > 0:
            pg, metrics = self._policy_gradient_term(params, batch, logits0, value_logits0)
            per_sample = per_sample + cfg.policy_gradient_weight * pg
            extra.update(metrics)
        loss = jnp.mean(batch.weight * per_sample) - cfg.code_usage_weight * usage_entropy
        error, priority = mz.value_error_and_priority(
            value_logits, reward_logits.swapaxes(0, 1), batch, cfg.support_size,
            cfg.priority_reward_weight)
        aux = {"policy_loss": policy.mean(), "value_loss": value.mean(),
               "reward_loss": reward.mean(), "terminal_loss": terminal.mean(),
               "policy_entropy": entropy.mean(), "afterstate_value_loss": q.mean(),
               "chance_loss": chance.mean(),
               "commitment_loss": commit.mean(), "code_usage_entropy": usage_entropy,
               # How many codes the encoder uses in this batch: 1 means a deterministic model.
               "codes_used": jnp.sum(jnp.any(jax.nn.one_hot(
                   jnp.argmax(encoder_logits, -1), cfg.num_chance_outcomes)
                   * has_next[..., None] > 0, axis=(0, 1))).astype(jnp.float32),
               "value_error": error.mean(), "priority": priority, **extra}
        return loss, aux

    def _fresh_value_targets(self, params: Params, batch: ReplayBatch) -> ReplayBatch:
        if not self.cfg.fresh_bootstrap:
            return batch
        boot_obs = {key: v.reshape((-1,) + v.shape[2:]) for key, v in batch.bootstrap_obs.items()}
        _, _, boot_logits = self.network.apply(
            jax.lax.stop_gradient(params), boot_obs,
            method=StochasticMuZeroNetwork.initial_inference)
        boot_value = logits_to_scalar(boot_logits, self.cfg.support_size).reshape(
            batch.value_partial.shape)
        return batch._replace(value_target=jax.lax.stop_gradient(
            batch.value_partial + batch.bootstrap_discount * boot_value))

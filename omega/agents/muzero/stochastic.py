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
prioritised sampling, the train loop) is the MuZero agent's: the search, the shared loss
pieces and the train step come from :mod:`~omega.agents.muzero.search`,
:mod:`~omega.agents.muzero.losses` and :mod:`~omega.agents.muzero.optim`, which the MuZero
agent uses too, and the agent here overrides only what chance nodes change (the network, the
search callbacks, the loss).

Shapes: ``B`` batch, ``K`` unroll steps, ``D`` latent size, ``A`` actions, ``C`` chance
outcomes, ``2S + 1`` support bins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import mctx

from omega.agents.base import Carry, Observation, Params
from omega.agents.muzero import batches, losses
from omega.agents.muzero.agent import MuZeroAgent
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
from omega.agents.muzero.optim import ActorParams
from omega.agents.muzero.search import SearchOutput, make_root, run_stochastic_search
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

    def initial_inference(self, obs: Mapping[str, jax.Array], first: None = None,
                          memory: None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """obs -> (latent [B, D], policy logits [B, A], value logits [B, 2S+1]). ``first``
        and ``memory`` are always None (no encoder memory); they are there so that code
        shared with :class:`~omega.agents.muzero.networks.MuZeroNetwork` calls both alike."""
        del first, memory
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
# Loss


class ChanceTerms(NamedTuple):
    """Stochastic MuZero's own losses: per-sample [B] unless noted."""

    afterstate_value: jax.Array
    chance: jax.Array
    commitment: jax.Array
    usage_entropy: jax.Array  # [] the entropy of the batch's average code distribution
    codes_used: jax.Array  # [] float, how many codes the encoder uses in this batch


def chance_codes(network: StochasticMuZeroNetwork, params: Params, batch: ReplayBatch,
                 k: int) -> tuple[jax.Array, jax.Array]:
    """The chance encoder's output for the real observation after each unrolled step
    ([B, K, C]) and its code, one-hot with the gradient straight through ([B, K, C])."""
    b = batch.action.shape[0]
    next_obs = {key: v.reshape((b * k,) + v.shape[2:])
                for key, v in batch.next_obs.items()}  # [B*K, ...]
    encoder_logits = network.apply(params, next_obs,
                                   method=StochasticMuZeroNetwork.encode_chance)
    encoder_logits = encoder_logits.reshape(b, k, -1)  # [B, K, C]
    return encoder_logits, straight_through_one_hot(encoder_logits)


def unroll_with_chance(network: StochasticMuZeroNetwork, cfg: MuZeroConfig, params: Params,
                       latent: jax.Array, batch: ReplayBatch, code: jax.Array
                       ) -> tuple[jax.Array, ...]:
    """The model unrolled from ``latent`` [B, D] along the actions [B, K] and the encoded
    outcomes ``code`` [B, K, C]: (chance logits, afterstate value logits, reward logits,
    terminal logits, policy logits, value logits), each [K, B, ...]."""

    def step(latent, inputs):
        action, encoded, real = inputs
        afterstate, chance_logits, q_logits = network.apply(
            params, latent, action, method=StochasticMuZeroNetwork.afterstate_inference)
        # Where the stored next observation is not this step's successor (an episode end),
        # the model takes its own most likely outcome, as the search would.
        predicted = jax.nn.one_hot(jnp.argmax(chance_logits, -1), cfg.num_chance_outcomes)
        code = jnp.where(real[:, None] > 0, encoded, jax.lax.stop_gradient(predicted))
        next_latent, reward_logits, terminal_logit, logits, value_logits = network.apply(
            params, afterstate, code, method=StochasticMuZeroNetwork.chance_inference)
        # Halved like MuZero's dynamics gradient (losses.unroll).
        return scale_gradient(next_latent, 0.5), (chance_logits, q_logits, reward_logits,
                                                  terminal_logit, logits, value_logits)

    _, out = jax.lax.scan(step, latent, (jnp.swapaxes(batch.action, 0, 1),
                                         jnp.swapaxes(code, 0, 1),
                                         jnp.swapaxes(batch.next_obs_mask, 0, 1)))
    return out


def chance_terms(cfg: MuZeroConfig, batch: ReplayBatch, q_logits: jax.Array,
                 chance_logits: jax.Array, encoder_logits: jax.Array,
                 code: jax.Array) -> ChanceTerms:
    """The afterstate value, chance and commitment losses (logits [K, B, ...] from
    :func:`unroll_with_chance`, ``encoder_logits`` and ``code`` [B, K, C]) and the codebook
    usage; ``batch`` holds the value targets the train step uses."""
    k = cfg.unroll_steps
    has_next = batch.next_obs_mask  # [B, K]
    # The afterstate value after a_k has the same expectation as the state value z_k
    # (whose n-step return starts with the reward of step k).
    q_target = scalar_to_two_hot(batch.value_target[:, :k], cfg.support)
    q_loss = losses.cross_entropy(q_target, q_logits.swapaxes(0, 1)) * \
        batch.reward_mask * batch.value_mask[:, :k]  # [B, K]
    chance_loss = losses.cross_entropy(jax.lax.stop_gradient(code),
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
    # How many codes the encoder uses in this batch: 1 means a deterministic model.
    used = jnp.any(jax.nn.one_hot(jnp.argmax(encoder_logits, -1), cfg.num_chance_outcomes)
                   * has_next[..., None] > 0, axis=(0, 1))
    return ChanceTerms(afterstate_value=q_loss.sum(-1) / k, chance=chance_loss.sum(-1) / k,
                       commitment=commitment.sum(-1) / k,
                       usage_entropy=-jnp.sum(usage * jnp.log(usage + 1e-8)),
                       codes_used=jnp.sum(used).astype(jnp.float32))


def stochastic_loss(network: StochasticMuZeroNetwork, cfg: MuZeroConfig, params: Params,
                    batch: ReplayBatch, boot_params: Params,
                    progress: jax.Array | None = None
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The batch's loss and the logged metrics (plus ``priority`` [B]): MuZero's unroll
    losses (:func:`losses.score_unroll`) with the chance outcomes the encoder saw, plus
    :func:`chance_terms`; ``boot_params`` value the bootstrap observations; ``progress``
    weights the policy-gradient term (:func:`losses.policy_gradient_weight_at`)."""
    latent, logits0, value_logits0 = network.apply(
        params, batch.obs, method=StochasticMuZeroNetwork.initial_inference)
    encoder_logits, code = chance_codes(network, params, batch, cfg.unroll_steps)
    chance_logits, q_logits, reward_logits, terminal_logits, logits, value_logits = (
        unroll_with_chance(network, cfg, params, latent, batch, code))  # each [K, B, ...]
    batch, unrolled, error, priority = losses.score_unroll(
        network, cfg, boot_params, batch, (logits0, value_logits0),
        (logits, value_logits, reward_logits, terminal_logits))
    chance = chance_terms(cfg, batch, q_logits, chance_logits, encoder_logits, code)
    per_sample = (cfg.policy_loss_weight * unrolled.policy
                  + cfg.value_loss_weight * unrolled.value
                  + cfg.reward_loss_weight * unrolled.reward
                  + cfg.terminal_loss_weight * unrolled.terminal
                  + cfg.afterstate_value_loss_weight * chance.afterstate_value
                  + cfg.chance_loss_weight * chance.chance
                  + cfg.commitment_loss_weight * chance.commitment
                  - cfg.policy_entropy_weight * unrolled.entropy)
    extra = {}
    if cfg.policy_gradient_weight > 0:
        pg, extra = losses.policy_gradient_term(network, cfg, params, batch, logits0,
                                                value_logits0, progress)
        per_sample = per_sample + pg
    loss = jnp.mean(batch.weight * per_sample) - cfg.code_usage_weight * chance.usage_entropy
    return loss, {**losses.unroll_metrics(unrolled, error, priority),
                  "afterstate_value_loss": chance.afterstate_value.mean(),
                  "chance_loss": chance.chance.mean(),
                  "commitment_loss": chance.commitment.mean(),
                  "code_usage_entropy": chance.usage_entropy,
                  "codes_used": chance.codes_used, **extra}


# ---------------------------------------------------------------------------------------------
# Agent


class StochasticMuZeroAgent(MuZeroAgent):
    """The MuZero agent with chance nodes in its model and its search: it overrides the
    network, the search's root and callbacks, and the loss; the rest is MuZero's."""

    supports_diagnostics = False  # its loss is not split into terms

    loss_columns = MuZeroAgent.loss_columns + (
        "afterstate_value_loss", "chance_loss", "commitment_loss", "code_usage_entropy",
        "codes_used")

    def __init__(self, cfg: MuZeroConfig, encoder_cfg: EncoderConfig, num_actions: int,
                 total_env_steps: int):
        # MuZeroConfig refuses search: gumbel with stochastic, and the base class a recurrent
        # encoder (omega.agents.muzero.config.check_encoder).
        super().__init__(cfg, encoder_cfg, num_actions, total_env_steps)

    def _make_network(self) -> StochasticMuZeroNetwork:
        cfg = self.cfg
        return StochasticMuZeroNetwork(
            self.encoder_cfg, self.num_actions, cfg.num_chance_outcomes, cfg.latent_dim,
            cfg.dynamics_hidden, cfg.prediction_hidden, cfg.support_size)

    def _new_replay(self):
        # The chance encoder sees the real next observations.
        return batches.new_replay(self.cfg, next_obs=True)

    # -- search (mctx callbacks) ---------------------------------------------------------------

    def _decision_fn(self, params: Params, rng: jax.Array, action: jax.Array,
                     latent: jax.Array) -> tuple[mctx.DecisionRecurrentFnOutput, jax.Array]:
        del rng
        afterstate, chance_logits, q_logits = self.network.apply(
            params, latent, action, method=StochasticMuZeroNetwork.afterstate_inference)
        out = mctx.DecisionRecurrentFnOutput(
            chance_logits=chance_logits,
            afterstate_value=logits_to_scalar(q_logits, self.cfg.support))
        return out, afterstate

    def _chance_fn(self, params: Params, rng: jax.Array, outcome: jax.Array,
                   afterstate: jax.Array) -> tuple[mctx.ChanceRecurrentFnOutput, jax.Array]:
        del rng
        s = self.cfg.support
        code = jax.nn.one_hot(outcome, self.cfg.num_chance_outcomes)
        next_latent, reward_logits, terminal_logit, logits, value_logits = self.network.apply(
            params, afterstate, code, method=StochasticMuZeroNetwork.chance_inference)
        out = mctx.ChanceRecurrentFnOutput(
            action_logits=logits, value=logits_to_scalar(value_logits, s),
            reward=logits_to_scalar(reward_logits, s),
            discount=self.cfg.gamma * (1.0 - jax.nn.sigmoid(terminal_logit)))
        return out, next_latent

    def _root(self, net: Params, obs: Observation, first: jax.Array | None, memory: Carry
              ) -> tuple[mctx.RootFnOutput, Carry]:
        del first, memory  # never recurrent (refused in __init__)
        latent, logits, value_logits = self.network.apply(
            net, obs, method=StochasticMuZeroNetwork.initial_inference)
        return make_root(logits, value_logits, latent, self.cfg.support), None

    def _search(self, params: ActorParams, rng: jax.Array, root: mctx.RootFnOutput,
                greedy: bool) -> SearchOutput:
        return run_stochastic_search(
            params.net, rng, root, self._decision_fn, self._chance_fn,
            **self._search_options(), temperature=params.temperature, greedy=greedy,
            explore=params.explore)

    # -- loss ----------------------------------------------------------------------------------

    def _loss_fn(self, params: Params, batch: ReplayBatch, boot_params: Params,
                 progress: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        return stochastic_loss(self.network, self.cfg, params, batch, boot_params, progress)

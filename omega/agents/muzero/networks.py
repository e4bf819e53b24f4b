"""MuZero's three functions (Schrittwieser et al. 2020) and its value/reward transforms.

- representation: observation -> latent state, the experiment's encoder followed by a
  projection, min-max scaled to [0, 1] per state (as in MuZero) so that latents reached by
  the dynamics stay on the same scale as those from real observations. With a recurrent
  encoder it also reads the encoder memory ``M`` (the perceiver latents [B, L, E] carried
  from the previous step, reset to the learned initial latents where ``first`` is True) and
  returns the updated memory;
- dynamics: (latent, action) -> (next latent, reward, terminal logit); an MLP over the latent
  and the one-hot action whose output updates the latent through a learned gate (a highway
  layer), so an action that changes little can leave the latent nearly as it was. The
  terminal head predicts whether the transition ends the episode; the search discounts by
  ``gamma * (1 - p_terminal)``, so whatever the model imagines past a predicted terminal
  (where it was trained for at most ``K`` steps) does not count;
- prediction: latent -> (policy logits, value);
- with ``projection_dim`` > 0, a projection and a predictor head for the state-consistency
  loss (EfficientZero, SimSiam-style): latent -> projection (-> prediction).

Value and reward are categorical over the integers ``-S..S`` after the invertible
``h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x`` (rlax.signed_hyperbolic); targets are two-hot.

Shapes: ``B`` batch, ``D`` latent size, ``M`` the encoder memory ([B, L, E] perceiver latents), ``A`` actions, ``2S + 1`` support bins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import rlax

from omega.agents.muzero.config import Support
from omega.models.encoders import EncoderConfig, make_encoder

# ---------------------------------------------------------------------------------------------
# Transforms


def num_bins(support_size: int) -> int:
    return Support(support_size).bins


def scalar_to_two_hot(x: jax.Array, support: Support) -> jax.Array:
    """Scalars [...] -> two-hot distributions [..., 2S+1] over h(x) on the support."""
    h = rlax.signed_hyperbolic(x)
    return rlax.transform_to_2hot(h, -support.limit, support.limit, support.bins)


def logits_to_scalar(logits: jax.Array, support: Support) -> jax.Array:
    """Categorical logits [..., 2S+1] -> scalars [...]: the expected h, mapped back by h^-1."""
    # rlax.transform_from_2hot adds a leading axis to unbatched input; this keeps the rank.
    values = jnp.linspace(-support.limit, support.limit, support.bins)
    h = jnp.sum(jax.nn.softmax(logits, axis=-1) * values, axis=-1)
    return rlax.signed_parabolic(h)


def scale_gradient(x: jax.Array, scale: float) -> jax.Array:
    """Identity forward; multiplies the gradient by ``scale`` backward."""
    return x * scale + jax.lax.stop_gradient(x) * (1.0 - scale)


def min_max_scale(x: jax.Array) -> jax.Array:
    """Each latent [..., D] mapped to [0, 1] by its own min and max (MuZero's latent scaling)."""
    lo = jnp.min(x, axis=-1, keepdims=True)
    hi = jnp.max(x, axis=-1, keepdims=True)
    return (x - lo) / jnp.maximum(hi - lo, 1e-5)


# ---------------------------------------------------------------------------------------------
# Networks


class Representation(nn.Module):
    encoder_cfg: EncoderConfig
    latent_dim: int

    @nn.compact
    def __call__(self, obs: Mapping[str, jax.Array], first: jax.Array | None = None,
                 memory: Any = None) -> tuple[jax.Array, Any]:
        """obs (, first [B], memory M) -> (latent [B, D], next memory M or None)."""
        h, memory = make_encoder(self.encoder_cfg)(obs, first, memory)  # [B, F]
        return min_max_scale(nn.Dense(self.latent_dim, name="project")(h)), memory


class Dynamics(nn.Module):
    num_actions: int
    hidden: int
    bins: int
    # "shared": one reward head reads the hidden features of (latent, action). "per_action":
    # one head per action reads them and the taken action's head is used, so a reward that
    # flips with some latent feature depending on the action (go up if the latent says so,
    # down otherwise) is linear in that feature for each action, instead of an interaction
    # the hidden layers must discover first.
    reward_head: str = "shared"

    @nn.compact
    def __call__(self, latent: jax.Array,
                 action: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        dim = latent.shape[-1]
        x = jnp.concatenate([latent, jax.nn.one_hot(action, self.num_actions)], -1)  # [B, D+A]
        for i in range(2):
            x = nn.relu(nn.LayerNorm(name=f"norm_{i}")(nn.Dense(self.hidden, name=f"fc_{i}")(x)))
        candidate = nn.Dense(dim, name="candidate")(x)  # [B, D]
        # The gate starts mostly closed (bias -1): early on the latent changes gently.
        gate = jax.nn.sigmoid(nn.Dense(dim, bias_init=nn.initializers.constant(-1.0),
                                       name="gate")(x))
        next_latent = min_max_scale(latent + gate * (candidate - latent))  # [B, D]
        # Zero-initialised heads predict exactly 0 at the start (uniform over a symmetric
        # support), instead of arbitrary rewards the search would chase.
        if self.reward_head == "per_action":
            per_action = nn.Dense(self.num_actions * self.bins, kernel_init=nn.initializers.zeros,
                                  name="reward")(x).reshape(x.shape[0], self.num_actions, self.bins)
            reward_logits = jnp.take_along_axis(per_action, action[:, None, None], 1)[:, 0]
        else:
            reward_logits = nn.Dense(self.bins, kernel_init=nn.initializers.zeros,
                                     name="reward")(x)  # [B, 2S+1]
        # Episodes rarely end: start near p = 0.02 so the untrained search still looks ahead.
        terminal_logit = nn.Dense(1, kernel_init=nn.initializers.zeros,
                                  bias_init=nn.initializers.constant(-4.0),
                                  name="terminal")(x)[..., 0]  # [B]
        return next_latent, reward_logits, terminal_logit


class Prediction(nn.Module):
    num_actions: int
    hidden: int
    bins: int

    @nn.compact
    def __call__(self, latent: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(nn.LayerNorm()(nn.Dense(self.hidden)(latent)))
        # A near-uniform initial prior: the search, not the init, should pick the first actions.
        logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01),
                          name="policy")(x)  # [B, A]
        value_logits = nn.Dense(self.bins, kernel_init=nn.initializers.zeros,
                                name="value")(x)  # [B, 2S+1]
        return logits, value_logits


class ProjectionMLP(nn.Module):
    """Dense -> LayerNorm -> ReLU -> Dense: the consistency loss's projection and predictor."""

    hidden: int
    out: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.out)(nn.relu(nn.LayerNorm()(nn.Dense(self.hidden)(x))))


class MuZeroNetwork(nn.Module):
    encoder_cfg: EncoderConfig
    num_actions: int
    latent_dim: int
    dynamics_hidden: int
    prediction_hidden: int
    support_size: int
    # Width of the state-consistency projection (EfficientZero); 0: no projection heads, so
    # the params are those of plain MuZero.
    projection_dim: int = 0
    reward_head: str = "shared"  # see Dynamics

    def setup(self):
        bins = num_bins(self.support_size)
        self.representation = Representation(self.encoder_cfg, self.latent_dim)
        self.dynamics = Dynamics(self.num_actions, self.dynamics_hidden, bins, self.reward_head)
        self.prediction = Prediction(self.num_actions, self.prediction_hidden, bins)
        if self.projection_dim:
            self.projection = ProjectionMLP(self.prediction_hidden, self.projection_dim)
            self.predictor = ProjectionMLP(self.prediction_hidden, self.projection_dim)

    def represent(self, obs: Mapping[str, jax.Array], first: jax.Array | None = None,
                  memory: Any = None) -> jax.Array:
        """obs (, first [B], memory M) -> latent [B, D]."""
        return self.representation(obs, first, memory)[0]

    def encode(self, obs: Mapping[str, jax.Array], first: jax.Array | None,
               memory: Any) -> tuple[jax.Array, Any]:
        """obs, first [B], memory M -> (latent [B, D], the memory after obs)."""
        return self.representation(obs, first, memory)

    def predict(self, latent: jax.Array) -> tuple[jax.Array, jax.Array]:
        """latent [B, D] -> (policy logits [B, A], value logits [B, 2S+1])."""
        return self.prediction(latent)

    def project(self, latent: jax.Array, predict: bool) -> jax.Array:
        """latent [B, D] -> projection [B, P]; ``predict`` adds the predictor (the online
        branch of the consistency loss; the target branch is the projection alone)."""
        z = self.projection(latent)
        return self.predictor(z) if predict else z

    def initial_inference(self, obs: Mapping[str, jax.Array], first: jax.Array | None = None,
                          memory: Any = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """obs (, first [B], memory M) -> (latent [B, D], policy logits [B, A], value logits
        [B, 2S+1])."""
        latent, _ = self.representation(obs, first, memory)
        logits, value_logits = self.prediction(latent)
        return latent, logits, value_logits

    def recurrent_inference(self, latent: jax.Array, action: jax.Array
                            ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
        """(latent [B, D], action [B]) -> (next latent, reward logits, terminal logit [B],
        policy logits and value logits of the next latent)."""
        next_latent, reward_logits, terminal_logit = self.dynamics(latent, action)
        logits, value_logits = self.prediction(next_latent)
        return next_latent, reward_logits, terminal_logit, logits, value_logits

    def __call__(self, obs: Mapping[str, jax.Array], action: jax.Array,
                 first: jax.Array | None = None, memory: Any = None):
        """Touches every submodule, for ``init``."""
        latent, _, _ = self.initial_inference(obs, first, memory)
        out = self.recurrent_inference(latent, action)
        if self.projection_dim:
            self.project(latent, predict=True)
        return out

"""What several diagnostics share: the MuZero model's one-step Q, writing the JSON result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from omega.agents.muzero.config import Support
from omega.agents.muzero.networks import MuZeroNetwork, logits_to_scalar


class OneStep(NamedTuple):
    latent: jax.Array  # [1, D]
    logits: jax.Array  # prior logits [1, A]
    value_logits: jax.Array  # [1, bins]
    reward: jax.Array  # the model's one-step reward r̂(s, a) of every action [A]
    q: jax.Array  # r̂ + γ (1 − p_end) v̂(s') of every action [A]


def one_step(net: Any, params: Any, obs: dict, support: Support, gamma: float) -> OneStep:
    """The network at ``obs`` (one observation, batched to [1, ...]) and the model's one step
    ahead for every action. Call it under ``jax.jit``."""
    latent, logits, value_logits = net.apply(params, obs, None, None,
                                             method=MuZeroNetwork.initial_inference)
    num_actions = logits.shape[-1]
    _, reward_logits, end_logit, _, next_value_logits = net.apply(
        params, jnp.repeat(latent, num_actions, 0), jnp.arange(num_actions),
        method=MuZeroNetwork.recurrent_inference)
    reward = logits_to_scalar(reward_logits, support)
    q = reward + gamma * (1 - jax.nn.sigmoid(end_logit)) * logits_to_scalar(next_value_logits,
                                                                           support)
    return OneStep(latent, logits, value_logits, reward, q)


def one_step_q(net: Any, params: Any, obs: dict, support: Support, gamma: float) -> tuple:
    """(latent [1, D], prior logits [1, A], value logits [1, bins], Q [A]) of
    :func:`one_step`. Call it under ``jax.jit``."""
    out = one_step(net, params, obs, support, gamma)
    return out.latent, out.logits, out.value_logits, out.q


def write_json(path: Path, data: Any) -> None:
    """Writes ``data`` to ``path`` as indented JSON (making its folder) and says so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")

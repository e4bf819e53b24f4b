"""What several diagnostics share: the MuZero model's one-step Q, writing the JSON result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from omega.agents.muzero.config import Support
from omega.agents.muzero.networks import MuZeroNetwork, logits_to_scalar


def one_step_q(net: Any, params: Any, obs: dict, support: Support, gamma: float) -> tuple:
    """(latent [1, D], prior logits [1, A], value logits [1, bins], Q [A]) at ``obs`` (one
    observation, batched to [1, ...]), with the model's one-step
    Q(s, a) = r̂ + γ (1 − p_end) v̂(s') for every action a. Call it under ``jax.jit``."""
    latent, logits, value_logits = net.apply(params, obs, None, None,
                                             method=MuZeroNetwork.initial_inference)
    num_actions = logits.shape[-1]
    _, reward_logits, end_logit, _, next_value_logits = net.apply(
        params, jnp.repeat(latent, num_actions, 0), jnp.arange(num_actions),
        method=MuZeroNetwork.recurrent_inference)
    q = (logits_to_scalar(reward_logits, support) + gamma * (1 - jax.nn.sigmoid(end_logit))
         * logits_to_scalar(next_value_logits, support))
    return latent, logits, value_logits, q


def write_json(path: Path, data: Any) -> None:
    """Writes ``data`` to ``path`` as indented JSON (making its folder) and says so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")

"""REINFORCE (Williams 1992): a softmax policy over omega's encoder, trained on the
discounted returns of each rollout (normalised as a baseline). No critic, no replay."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from omega.agents.base import ActOutput, Trajectory
from omega.models.encoders import EncoderConfig, make_encoder


@dataclasses.dataclass(frozen=True)
class ReinforceConfig:  # the `reinforce:` config section; metadata = the loader's range checks
    learning_rate: float = dataclasses.field(default=1e-3, metadata={"min": 0.0})
    gamma: float = dataclasses.field(default=0.99, metadata={"min": 0.0, "max": 1.0})
    entropy_coef: float = dataclasses.field(default=0.01, metadata={"min": 0.0})
    rollout_length: int = dataclasses.field(default=32, metadata={"min": 1})


class Policy(nn.Module):
    encoder_cfg: EncoderConfig
    num_actions: int

    @nn.compact
    def __call__(self, obs: Any) -> jax.Array:
        h, _ = make_encoder(self.encoder_cfg)(obs)
        return nn.Dense(self.num_actions)(h)  # logits [B, A]


class ReinforceState(NamedTuple):
    params: Any
    opt_state: Any


class ReinforceAgent:
    """Implements :class:`omega.agents.base.Agent`."""

    def __init__(self, cfg: ReinforceConfig, encoder_cfg: EncoderConfig, num_actions: int):
        self.cfg, self.keys = cfg, encoder_cfg.used_keys()
        self.net = Policy(encoder_cfg, int(num_actions))
        self.optimizer = optax.adam(cfg.learning_rate)
        self._act = jax.jit(self._act_impl, static_argnums=3)
        self._learn = jax.jit(self._learn_impl)

    def _obs(self, obs: Any) -> dict[str, jax.Array]:
        return {k: jnp.asarray(v) for k, v in obs.items() if k in self.keys}

    def init(self, rng, obs_example, num_envs):
        params = self.net.init(rng, self._obs(obs_example))
        return ReinforceState(params, self.optimizer.init(params))

    def params(self, state):
        return state.params

    def initial_carry(self, num_envs):
        return None

    def _act_impl(self, params, obs, rng, greedy: bool):
        logits = self.net.apply(params, obs)
        action = jnp.argmax(logits, -1) if greedy else jax.random.categorical(rng, logits)
        return action.astype(jnp.int32)

    def act(self, params, obs, first, carry, rng, greedy=False):
        return ActOutput(self._act(params, self._obs(obs), rng, bool(greedy)), {}, None)

    def value(self, params, obs, carry):  # no critic: truncated episodes bootstrap 0
        return jnp.zeros(next(iter(obs.values())).shape[0], jnp.float32)

    def learn(self, state, trajectory: Trajectory, rng):
        obs = {k: v[:-1] for k, v in self._obs(trajectory.obs).items()}  # [T, N, ...]
        done = jnp.asarray(trajectory.terminated | trajectory.truncated, jnp.float32)
        return self._learn(state, obs, jnp.asarray(trajectory.action),
                           jnp.asarray(trajectory.reward), done)

    def _learn_impl(self, state, obs, action, reward, done):
        def discount(ret, step):  # returns to go, cut at episode ends
            r, d = step
            ret = r + self.cfg.gamma * ret * (1.0 - d)
            return ret, ret

        _, returns = jax.lax.scan(discount, jnp.zeros(reward.shape[1]), (reward, done),
                                  reverse=True)
        advantage = ((returns - returns.mean()) / (returns.std() + 1e-8)).reshape(-1)
        flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in obs.items()}

        def loss_fn(params):
            logp = jax.nn.log_softmax(self.net.apply(params, flat))
            taken = jnp.take_along_axis(logp, action.reshape(-1, 1), -1)[:, 0]
            entropy = -(jnp.exp(logp) * logp).sum(-1).mean()
            return -(taken * advantage).mean() - self.cfg.entropy_coef * entropy, entropy

        (loss, entropy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state)
        new = ReinforceState(optax.apply_updates(state.params, updates), opt_state)
        return new, {"loss": loss, "policy_entropy": entropy}

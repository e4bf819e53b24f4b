"""PPO with an actor-critic over :mod:`omega.models.encoders`, optionally with RND.

Three jitted functions, each built once in :class:`PPOAgent`: ``act`` (one call for all
envs, ``greedy`` static), ``value`` (bootstraps truncated episodes) and ``learn`` (GAE, then
``num_epochs`` x ``num_minibatches`` Adam steps as nested ``lax.scan``s).

Shapes: ``T`` rollout length, ``N`` envs, ``A`` actions, ``B`` a minibatch.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Mapping
from typing import NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import rlax

from omega.agents.base import ActOutput, Carry, Observation, Params, Trajectory
from omega.agents.parallel import DataParallel
from omega.agents.ppo.config import PPOConfig
from omega.models.encoders import (
    NUM_GLYPHS,
    Conv3x3,
    EncoderConfig,
    initial_carry,
    make_encoder,
)

# ---------------------------------------------------------------------------------------------
# Networks


class NetOutput(NamedTuple):
    logits: jax.Array  # [..., A]
    value: jax.Array  # [...]
    int_value: jax.Array  # [...] intrinsic (RND) value; zeros without RND


class ActorCritic(nn.Module):
    encoder_cfg: EncoderConfig
    num_actions: int
    intrinsic_value: bool = False

    def setup(self):
        self.encoder = make_encoder(self.encoder_cfg)
        # Small policy init: near-uniform initial policy (Andrychowicz et al. 2020).
        self.policy_head = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01))
        self.value_head = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))
        if self.intrinsic_value:
            self.int_value_head = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))

    def __call__(self, obs: Observation, first: jax.Array, carry: Carry) -> tuple[NetOutput, Carry]:
        h, carry = self.encoder(obs, first, carry)
        value = self.value_head(h)[..., 0]
        int_value = self.int_value_head(h)[..., 0] if self.intrinsic_value else jnp.zeros_like(value)
        return NetOutput(self.policy_head(h), value, int_value), carry


class RNDNetwork(nn.Module):
    """Glyph map [B, H, W] -> features [B, out]. The target is frozen at its random init; the
    predictor (one layer deeper, as in Burda et al.) learns to match it, so its error is large
    on rarely seen observations."""

    embed_dim: int
    hidden: int
    out_dim: int
    extra_layers: int = 0

    @nn.compact
    def __call__(self, glyphs: jax.Array) -> jax.Array:
        ids = jnp.clip(glyphs.astype(jnp.int32), 0, NUM_GLYPHS - 1)
        x = nn.Embed(NUM_GLYPHS, self.embed_dim)(ids)
        stride = 2 if glyphs.shape[-1] > 20 else 1  # the full 21x79 map
        x = nn.leaky_relu(Conv3x3(32, stride)(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden)(x))
        for _ in range(self.extra_layers):
            x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.out_dim)(x)


# ---------------------------------------------------------------------------------------------
# Pure loss pieces (tested one by one)


def gae(reward: jax.Array, discount: jax.Array, values: jax.Array, lam: float) -> jax.Array:
    """GAE advantages [T, N] from reward/discount [T, N] and values [T + 1, N]."""
    chex.assert_equal_shape([reward, discount])
    chex.assert_shape(values, (reward.shape[0] + 1, reward.shape[1]))
    fn = jax.vmap(rlax.truncated_generalized_advantage_estimation,
                  in_axes=(1, 1, None, 1), out_axes=1)
    return jax.lax.stop_gradient(fn(reward, discount, lam, values))


def extrinsic_advantages(
    reward: jax.Array, terminated: jax.Array, truncated: jax.Array, truncation_value: jax.Array,
    values: jax.Array, gamma: float, lam: float,
) -> tuple[jax.Array, jax.Array]:
    """(advantages, value targets), each [T, N]; ``values`` is [T + 1, N].

    At an episode end obs[t + 1] belongs to the next episode, so the trace is cut there
    (discount 0). A terminated step bootstraps from nothing; a truncated one from the value
    of its real final observation, folded into the reward: r + gamma * V(final).
    """
    terminated = terminated.astype(bool)
    bootstrap = truncated.astype(bool) & ~terminated
    reward = reward + gamma * jnp.where(bootstrap, truncation_value, 0.0)
    discount = gamma * (1.0 - (terminated | bootstrap).astype(jnp.float32))
    adv = gae(reward, discount, values, lam)
    return adv, adv + values[:-1]


def policy_loss(
    log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array, clip_eps: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped surrogate objective (as a loss to minimise) + approx_kl and clip_fraction."""
    log_ratio = (log_prob - old_log_prob).ravel()
    ratio = jnp.exp(log_ratio)
    loss = rlax.clipped_surrogate_pg_loss(ratio, advantages.ravel(), clip_eps)
    stats = {
        # Schulman's k3 estimator of KL(old || new): unbiased and never negative.
        "approx_kl": jnp.mean((ratio - 1.0) - log_ratio),
        "clip_fraction": jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32)),
    }
    return loss, stats


def value_loss(values: jax.Array, old_values: jax.Array, targets: jax.Array,
               clip_eps: float | None = None) -> jax.Array:
    """0.5 * mean squared error; with ``clip_eps`` the pessimistic PPO2 clipped variant."""
    loss = jnp.square(values - targets)
    if clip_eps is not None:
        clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
        loss = jnp.maximum(loss, jnp.square(clipped - targets))
    return 0.5 * jnp.mean(loss)


def entropy(logits: jax.Array) -> jax.Array:
    """Entropy of softmax(logits) [...] over the last axis."""
    log_p = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    return (x - x.mean()) / (x.std() + eps)


# ---------------------------------------------------------------------------------------------
# State


class RunningMeanStd(NamedTuple):
    mean: jax.Array  # []
    var: jax.Array  # []
    count: jax.Array  # []

    @staticmethod
    def create() -> RunningMeanStd:
        return RunningMeanStd(jnp.zeros(()), jnp.ones(()), jnp.full((), 1e-4))

    def update(self, x: jax.Array) -> RunningMeanStd:
        """Chan et al.'s parallel update with the moments of batch ``x``."""
        b_mean, b_var, b_count = x.mean(), x.var(), x.size
        delta = b_mean - self.mean
        count = self.count + b_count
        mean = self.mean + delta * b_count / count
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / count
        return RunningMeanStd(mean, m2 / count, count)


class RNDState(NamedTuple):
    target_params: Params  # frozen
    predictor_params: Params
    opt_state: optax.OptState
    return_acc: jax.Array  # [N] running discounted intrinsic return per env (non-episodic)
    return_stats: RunningMeanStd  # of those returns; intrinsic rewards are divided by the std


class PPOState(NamedTuple):
    params: Params
    opt_state: optax.OptState
    update_step: jax.Array  # [] int32, learn calls so far
    rnd: RNDState | tuple  # () without RND, so the pytree structure is fixed per config


class Batch(NamedTuple):
    """Per-step training data, leading [T, N] (sliced into minibatches)."""

    obs: Observation
    first: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    int_value: jax.Array
    advantage: jax.Array
    target: jax.Array
    int_target: jax.Array


# ---------------------------------------------------------------------------------------------
# Agent


class PPOAgent:
    """Implements :class:`omega.agents.base.Agent`."""

    def __init__(self, ppo_cfg: PPOConfig, encoder_cfg: EncoderConfig, num_actions: int,
                 total_updates: int):
        self.cfg = ppo_cfg
        self.encoder_cfg = encoder_cfg
        self.num_actions = int(num_actions)
        self.network = ActorCritic(encoder_cfg, self.num_actions, intrinsic_value=ppo_cfg.rnd)
        steps_per_update = ppo_cfg.num_epochs * ppo_cfg.num_minibatches
        if ppo_cfg.lr_schedule == "linear":
            self.lr_schedule = optax.linear_schedule(
                ppo_cfg.learning_rate, 0.0, max(1, total_updates) * steps_per_update)
        else:
            self.lr_schedule = optax.constant_schedule(ppo_cfg.learning_rate)
        # Indexed by learn calls: one weight per update, the same in all its minibatches.
        if ppo_cfg.entropy_schedule == "linear":
            self.entropy_schedule = optax.linear_schedule(
                ppo_cfg.entropy_coef, ppo_cfg.entropy_coef_final, max(1, total_updates))
        else:
            self.entropy_schedule = optax.constant_schedule(ppo_cfg.entropy_coef)
        self.optimizer = optax.chain(
            optax.clip_by_global_norm(ppo_cfg.max_grad_norm),
            optax.adam(self.lr_schedule, eps=ppo_cfg.adam_eps))
        if ppo_cfg.rnd:
            self.rnd_target = RNDNetwork(ppo_cfg.rnd_embed_dim, ppo_cfg.rnd_hidden,
                                         ppo_cfg.rnd_output_dim)
            self.rnd_predictor = RNDNetwork(ppo_cfg.rnd_embed_dim, ppo_cfg.rnd_hidden,
                                            ppo_cfg.rnd_output_dim, extra_layers=1)
            self.rnd_optimizer = optax.adam(ppo_cfg.rnd_lr)
        self.rnd_key = encoder_cfg.map_keys[0]  # RND reads the first map view
        self.trace_counts: collections.Counter[str] = collections.Counter()
        self.data_parallel: DataParallel | None = None
        # Jitted init: eager init would dispatch (and compile) every initializer op one by one.
        self._init = jax.jit(self._init_impl, static_argnums=2)
        self._act = jax.jit(self._act_impl, static_argnames="greedy")
        self._value = jax.jit(self._value_impl)
        self._learn = jax.jit(self._learn_impl)

    def use_data_parallel(self, data_parallel: DataParallel) -> None:
        """Learn data-parallel: state replicated, trajectories split along the env axis
        (:mod:`omega.agents.parallel`). Call before the first ``learn``."""
        if self.trace_counts["learn"]:
            raise RuntimeError("use_data_parallel must come before the first learn call")
        self.data_parallel = data_parallel

    def check_data_parallel(self, rollout_length: int, num_envs: int) -> None:
        """Clear errors for batch sizes the devices do not divide."""
        dp = self.data_parallel
        if dp is None:
            return
        dp.check_divisible(num_envs, "env.num_envs", f"use a multiple of {dp.size}")
        m = self.cfg.num_minibatches
        if self.encoder_cfg.recurrent:
            dp.check_divisible(num_envs // m, "envs per minibatch (env.num_envs / "
                               "ppo.num_minibatches)", "change either")
        else:
            dp.check_divisible(rollout_length * num_envs // m, "minibatch size "
                               "(ppo.rollout_length * env.num_envs / ppo.num_minibatches)",
                               "change one of them")

    # -- Agent protocol ------------------------------------------------------------------------

    def init(self, rng: jax.Array, obs_example: Observation, num_envs: int) -> PPOState:
        self.check_data_parallel(self.cfg.rollout_length, int(num_envs))
        return self._init(rng, self._filter(obs_example), int(num_envs))

    def params(self, state: PPOState) -> Params:
        return state.params

    def initial_carry(self, num_envs: int) -> Carry:
        return initial_carry(self.encoder_cfg, num_envs)

    def act(self, params: Params, obs: Observation, first: np.ndarray, carry: Carry,
            rng: jax.Array, greedy: bool = False) -> ActOutput:
        return self._act(params, self._filter(obs), first, carry, rng, greedy=bool(greedy))

    def value(self, params: Params, obs: Observation, carry: Carry) -> jax.Array:
        return self._value(params, self._filter(obs), carry)

    def learn(self, state: PPOState, trajectory: Trajectory,
              rng: jax.Array) -> tuple[PPOState, Mapping[str, jax.Array]]:
        trajectory = trajectory._replace(obs=self._filter(trajectory.obs))
        dp = self.data_parallel
        if dp is not None:
            self.check_data_parallel(*np.shape(trajectory.action))
            carry = trajectory.initial_carry  # [N, ...]; every other field is [T(+1), N, ...]
            trajectory = dp.shard(trajectory._replace(initial_carry=None), axis=1)
            trajectory = trajectory._replace(initial_carry=dp.shard(carry, axis=0))
            state, rng = dp.replicate((state, rng))
        return self._learn(state, trajectory, rng)

    # -- jitted bodies -------------------------------------------------------------------------

    def _filter(self, obs: Observation) -> Observation:
        # Unused keys would only cost host->device copies.
        return {k: v for k, v in obs.items() if k in self.encoder_cfg.used_keys()}

    def _init_impl(self, rng: jax.Array, obs: Observation, num_envs: int) -> PPOState:
        batch = next(iter(obs.values())).shape[0]
        net_key, target_key, pred_key = jax.random.split(rng, 3)
        params = self.network.init(net_key, obs, jnp.ones(batch, bool),
                                   initial_carry(self.encoder_cfg, batch))
        rnd: RNDState | tuple = ()
        if self.cfg.rnd:
            glyphs = obs[self.rnd_key]
            pred_params = self.rnd_predictor.init(pred_key, glyphs)
            rnd = RNDState(
                target_params=self.rnd_target.init(target_key, glyphs),
                predictor_params=pred_params,
                opt_state=self.rnd_optimizer.init(pred_params),
                return_acc=jnp.zeros(num_envs, jnp.float32),
                return_stats=RunningMeanStd.create())
        return PPOState(params=params, opt_state=self.optimizer.init(params),
                        update_step=jnp.zeros((), jnp.int32), rnd=rnd)

    def _act_impl(self, params: Params, obs: Observation, first: jax.Array, carry: Carry,
                  rng: jax.Array, greedy: bool) -> ActOutput:
        self.trace_counts["act"] += 1
        out, carry = self.network.apply(params, obs, first, carry)
        if greedy:
            action = jnp.argmax(out.logits, axis=-1)
        else:
            action = jax.random.categorical(rng, out.logits)
        log_prob = jnp.take_along_axis(jax.nn.log_softmax(out.logits), action[:, None], -1)[:, 0]
        extras = {"log_prob": log_prob, "value": out.value}
        if self.cfg.rnd:
            extras["int_value"] = out.int_value
        return ActOutput(action=action.astype(jnp.int32), extras=extras, carry=carry)

    def _value_impl(self, params: Params, obs: Observation, carry: Carry) -> jax.Array:
        self.trace_counts["value"] += 1
        batch = next(iter(obs.values())).shape[0]
        # The obs continues the episode the carry belongs to, so never reset here.
        out, _ = self.network.apply(params, obs, jnp.zeros(batch, bool), carry)
        return out.value

    def _unroll(self, params: Params, obs: Observation, first: jax.Array,
                carry: Carry) -> NetOutput:
        """Network outputs [T, N] over a time-major sequence [T, N, ...]."""
        if self.encoder_cfg.recurrent:
            def step(carry, inputs):
                o, f = inputs
                out, carry = self.network.apply(params, o, f, carry)
                return carry, out

            _, out = jax.lax.scan(step, carry, (obs, first))
            return out
        # Stateless: every step is independent, so one big batch is fastest.
        t, n = first.shape
        flat = jax.tree_util.tree_map(lambda x: x.reshape((t * n,) + x.shape[2:]), obs)
        out, _ = self.network.apply(params, flat, first.reshape(t * n), None)
        return jax.tree_util.tree_map(lambda x: x.reshape((t, n) + x.shape[1:]), out)

    def _rnd_error(self, rnd: RNDState, predictor_params: Params, glyphs: jax.Array) -> jax.Array:
        """Prediction error [B] of the predictor on glyph maps [B, H, W]: the novelty bonus."""
        target = jax.lax.stop_gradient(self.rnd_target.apply(rnd.target_params, glyphs))
        pred = self.rnd_predictor.apply(predictor_params, glyphs)
        return jnp.mean(jnp.square(pred - target), axis=-1)

    def _learn_impl(self, state: PPOState, traj: Trajectory,
                    rng: jax.Array) -> tuple[PPOState, dict[str, jax.Array]]:
        self.trace_counts["learn"] += 1
        cfg = self.cfg
        t, n = self._learn_shapes(traj)
        dp = self.data_parallel
        params = state.params

        last = self._bootstrap(params, traj)
        values = jnp.concatenate([traj.extras["value"], last.value[None]])  # [T + 1, N]
        advantage, target = extrinsic_advantages(
            traj.reward, traj.terminated, traj.truncated, traj.truncation_value, values,
            cfg.gamma, cfg.gae_lambda)

        metrics: dict[str, jax.Array] = {}
        rnd = state.rnd
        int_value = jnp.zeros((t, n))
        int_target = jnp.zeros((t, n))
        if cfg.rnd:
            advantage, int_value, int_target, rnd = self._add_intrinsic(
                advantage, rnd, traj, last, metrics)

        batch = Batch(
            obs=jax.tree_util.tree_map(lambda x: x[:-1], traj.obs), first=traj.first[:-1],
            action=traj.action, log_prob=traj.extras["log_prob"], value=traj.extras["value"],
            int_value=int_value, advantage=advantage, target=target, int_target=int_target)

        entropy_coef = jnp.asarray(self.entropy_schedule(state.update_step), jnp.float32)
        minibatch_step = functools.partial(self._minibatch_step, entropy_coef=entropy_coef)

        def epoch_step(carry, key):
            mbs, carries = self._minibatches(batch, traj.initial_carry, key)
            return jax.lax.scan(minibatch_step, carry, (mbs, carries))

        keys = jax.random.split(rng, cfg.num_epochs)
        (params, opt_state, rnd), stats = jax.lax.scan(
            epoch_step, (params, state.opt_state, rnd), keys)
        metrics.update({k: v.mean() for k, v in stats.items()})
        # The rate this update started with (a linear schedule decays within the update).
        metrics["learning_rate"] = jnp.asarray(
            self.lr_schedule(state.update_step * cfg.num_epochs * cfg.num_minibatches),
            jnp.float32)
        metrics["entropy_coef"] = entropy_coef
        new_state = PPOState(params=params, opt_state=opt_state,
                             update_step=state.update_step + 1, rnd=rnd)
        if dp is not None:
            new_state, metrics = jax.lax.with_sharding_constraint(
                (new_state, metrics), dp.replicated())
        return new_state, metrics

    # -- pieces of the learn step (traced inside ``_learn_impl``) -----------------------------

    def _learn_shapes(self, traj: Trajectory) -> tuple[int, int]:
        """``(T, N)`` of a trajectory; checks its shapes and that minibatches divide it."""
        cfg = self.cfg
        t, n = traj.action.shape
        chex.assert_shape(traj.first, (t + 1, n))
        chex.assert_shape([traj.reward, traj.terminated, traj.truncated, traj.truncation_value,
                           traj.extras["log_prob"], traj.extras["value"]], (t, n))
        recurrent = self.encoder_cfg.recurrent
        mb_axis_size = n if recurrent else t * n
        if mb_axis_size % cfg.num_minibatches:
            raise ValueError(
                f"num_minibatches ({cfg.num_minibatches}) must divide "
                f"{'num_envs' if recurrent else 'rollout_length * num_envs'} ({mb_axis_size})")
        return t, n

    def _bootstrap(self, params: Params, traj: Trajectory) -> NetOutput:
        """Network output [N] for obs[T], the bootstrap value; a recurrent net needs the carry
        built up over the rollout."""
        if self.encoder_cfg.recurrent:
            return jax.tree_util.tree_map(
                lambda x: x[-1], self._unroll(params, traj.obs, traj.first, traj.initial_carry))
        last_obs = jax.tree_util.tree_map(lambda x: x[-1], traj.obs)
        last, _ = self.network.apply(params, last_obs, traj.first[-1], None)
        return last

    def _add_intrinsic(self, advantage: jax.Array, rnd: RNDState, traj: Trajectory,
                       last: NetOutput, metrics: dict[str, jax.Array]
                       ) -> tuple[jax.Array, jax.Array, jax.Array, RNDState]:
        """RND: adds the intrinsic advantage to ``advantage``; returns it with the intrinsic
        values and targets [T, N] and the RND state with updated return statistics. Puts
        the intrinsic reward means into ``metrics``."""
        cfg = self.cfg
        t, n = traj.action.shape
        # Reward for reaching obs[t + 1], by the predictor before this update.
        next_glyphs = traj.obs[self.rnd_key][1:]
        int_reward = self._rnd_error(
            rnd, rnd.predictor_params, next_glyphs.reshape((t * n,) + next_glyphs.shape[2:])
        ).reshape(t, n)

        def accumulate(acc, r):
            acc = acc * cfg.rnd_gamma + r
            return acc, acc

        return_acc, returns = jax.lax.scan(accumulate, rnd.return_acc, int_reward)
        stats = rnd.return_stats.update(returns)
        int_reward_norm = int_reward / jnp.sqrt(stats.var + 1e-8)
        int_value = traj.extras["int_value"]
        int_values = jnp.concatenate([int_value, last.int_value[None]])
        # Non-episodic: novelty in the next episode is still worth heading for.
        int_adv = gae(int_reward_norm, jnp.full((t, n), cfg.rnd_gamma), int_values,
                      cfg.gae_lambda)
        int_target = int_adv + int_value
        advantage = advantage + cfg.rnd_coef * int_adv
        rnd = rnd._replace(return_acc=return_acc, return_stats=stats)
        metrics["intrinsic_reward_mean"] = int_reward.mean()
        metrics["intrinsic_reward_normalized_mean"] = int_reward_norm.mean()
        return advantage, int_value, int_target, rnd

    def _loss(self, params: Params, mb: Batch, carry: Carry, entropy_coef: jax.Array):
        """PPO loss of one minibatch, and its stats."""
        cfg = self.cfg
        if self.encoder_cfg.recurrent:
            out = self._unroll(params, mb.obs, mb.first, carry)
        else:
            out, _ = self.network.apply(params, mb.obs, mb.first, None)
        log_prob = jnp.take_along_axis(
            jax.nn.log_softmax(out.logits), mb.action[..., None], -1)[..., 0]
        adv = normalize(mb.advantage) if cfg.normalize_advantages else mb.advantage
        pg_loss, stats = policy_loss(log_prob, mb.log_prob, adv, cfg.clip_eps)
        v_clip = cfg.clip_eps if cfg.clip_value_loss else None
        v_loss = value_loss(out.value, mb.value, mb.target, v_clip)
        if cfg.rnd:
            v_loss = v_loss + value_loss(out.int_value, mb.int_value, mb.int_target, v_clip)
        ent = entropy(out.logits).mean()
        loss = pg_loss + cfg.value_coef * v_loss - entropy_coef * ent
        return loss, dict(stats, policy_loss=pg_loss, value_loss=v_loss, entropy=ent)

    def _rnd_loss(self, predictor_params: Params, rnd: RNDState, glyphs: jax.Array):
        return self._rnd_error(rnd, predictor_params, glyphs).mean()

    def _minibatch_step(self, carry, mb_and_carry, entropy_coef: jax.Array):
        """One Adam step on a minibatch (and one RND predictor step): the scan body."""
        params, opt_state, rnd = carry
        mb, mb_carry = mb_and_carry
        grads, stats = jax.grad(self._loss, has_aux=True)(params, mb, mb_carry,
                                                          entropy_coef)
        stats["grad_norm"] = optax.global_norm(grads)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if self.cfg.rnd:
            glyphs = mb.obs[self.rnd_key]
            glyphs = glyphs.reshape((-1,) + glyphs.shape[-2:])
            rnd_loss, rnd_grads = jax.value_and_grad(self._rnd_loss)(
                rnd.predictor_params, rnd, glyphs)
            rnd_updates, rnd_opt = self.rnd_optimizer.update(rnd_grads, rnd.opt_state)
            rnd = rnd._replace(
                predictor_params=optax.apply_updates(rnd.predictor_params, rnd_updates),
                opt_state=rnd_opt)
            stats["rnd_loss"] = rnd_loss
        return (params, opt_state, rnd), stats

    def _minibatches(self, batch: Batch, initial_carry: Carry, key: jax.Array):
        """One epoch's shuffle of ``batch`` [T, N, ...] into ``num_minibatches`` minibatches
        (leading axis), with their initial carries (None for a stateless net)."""
        t, n = batch.action.shape
        num_mb = self.cfg.num_minibatches
        recurrent = self.encoder_cfg.recurrent
        if recurrent:
            # Whole env columns, so each minibatch is a set of complete sequences.
            perm = jax.random.permutation(key, n)

            def split(x):  # [T, N, ...] -> [M, T, N / M, ...]
                x = jnp.take(x, perm, axis=1).reshape((t, num_mb, n // num_mb) + x.shape[2:])
                return jnp.swapaxes(x, 0, 1)

            mbs = jax.tree_util.tree_map(split, batch)
            carries = jax.tree_util.tree_map(
                lambda x: jnp.take(x, perm, axis=0).reshape((num_mb, n // num_mb) + x.shape[1:]),
                initial_carry)
        else:
            perm = jax.random.permutation(key, t * n)

            def split(x):  # [T, N, ...] -> [M, T * N / M, ...]
                x = x.reshape((t * n,) + x.shape[2:])[perm]
                return x.reshape((num_mb, t * n // num_mb) + x.shape[1:])

            mbs = jax.tree_util.tree_map(split, batch)
            carries = None
        dp = self.data_parallel
        if dp is not None:
            # Each device keeps its share of every minibatch (the shuffle would otherwise
            # leave the layout to the compiler); the loss mean then all-reduces.
            mbs = dp.constrain(mbs, axis=2 if recurrent else 1)
            carries = dp.constrain(carries, axis=1)
        return mbs, carries


def make_ppo_agent(ppo_cfg: PPOConfig, encoder_cfg: EncoderConfig, num_actions: int,
                   total_updates: int) -> PPOAgent:
    """A PPO agent; ``total_updates`` (learn calls) sets the length of the linear lr schedule."""
    return PPOAgent(ppo_cfg, encoder_cfg, num_actions, total_updates)

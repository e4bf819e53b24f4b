"""MuZero's learner state and its update: the immutable state a checkpoint holds
(:class:`MuZeroState`), what an actor gets (:class:`ActorParams`), the optimiser built from
the config (with the params' moving average and the target network as optax transforms in
its state), the visit-count temperature schedule, and the pure train step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from omega.agents.base import Params
from omega.agents.muzero.config import MuZeroConfig
from omega.replay import ReplayBatch


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


def make_optimizer(cfg: MuZeroConfig, total_train_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimiser and its learning-rate schedule (over ``total_train_steps``)."""
    if cfg.lr_schedule == "linear":
        lr_schedule = optax.linear_schedule(cfg.learning_rate, 0.0, total_train_steps)
    elif cfg.lr_schedule == "cosine":
        lr_schedule = optax.cosine_decay_schedule(cfg.learning_rate, total_train_steps)
    else:
        lr_schedule = optax.constant_schedule(cfg.learning_rate)
    transforms = [optax.clip_by_global_norm(cfg.max_grad_norm),
                  optax.adam(lr_schedule, eps=cfg.adam_eps)]
    if cfg.eval_params_ema > 0:  # off: the optimiser state keeps its older structure
        transforms.append(params_ema(cfg.eval_params_ema))
    if cfg.target_update_interval > 0:  # likewise
        transforms.append(target_params(cfg.target_update_interval))
    return optax.chain(*transforms), lr_schedule


def target_network(opt_state: optax.OptState) -> Params:
    """The target network's params (``target_update_interval`` > 0)."""
    found = find_state(opt_state, TargetParamsState)
    if found is None:
        raise TypeError("the optimiser state has no target network; was it made by an "
                        "agent with the same target_update_interval?")
    return found.target


def bootstrap_params(cfg: MuZeroConfig, params: Params, opt_state: optax.OptState) -> Params:
    """What values the bootstrap observations: the target network when there is one."""
    return target_network(opt_state) if cfg.target_update_interval else params


def temperature_at(schedule: tuple[tuple[float, float], ...], progress: jax.Array) -> jax.Array:
    """The temperature of the last schedule entry whose fraction is <= ``progress``."""
    fractions = jnp.asarray([f for f, _ in schedule], jnp.float32)
    temps = jnp.asarray([t for _, t in schedule], jnp.float32)
    idx = jnp.sum(progress >= fractions) - 1
    return temps[jnp.clip(idx, 0, len(schedule) - 1)]


LossFn = Callable[[Params, ReplayBatch, Params], tuple[jax.Array, dict[str, jax.Array]]]


def train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
               lr_schedule: optax.Schedule, boot_params: Params, params: Params,
               opt_state: optax.OptState, step: jax.Array, batch: ReplayBatch
               ) -> tuple[Params, optax.OptState, dict[str, Any], jax.Array]:
    """One gradient step of ``loss_fn(params, batch, boot_params) -> (loss, aux)``, aux
    holding the logged metrics and ``priority`` [B]: -> (params, opt_state, metrics,
    priority)."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, boot_params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    priority = aux.pop("priority")
    metrics = dict(aux, loss=loss, grad_norm=optax.global_norm(grads),
                   learning_rate=jnp.asarray(lr_schedule(step), jnp.float32))
    return params, opt_state, metrics, priority

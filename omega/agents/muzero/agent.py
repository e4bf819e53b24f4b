"""MuZero (Schrittwieser et al. 2020): batched MCTS with mctx over a learned model, trained
from a replay buffer.

Acting is one jitted call for all envs: the representation encodes every observation, then
``mctx.muzero_policy`` (pUCT, ``search: muzero``) or ``mctx.gumbel_muzero_policy`` (``search:
gumbel``) searches ``num_simulations`` steps with the dynamics and prediction functions;
``search: regularized`` runs the pUCT tree and then acts with, and learns towards, the
regularized policy of Grill et al. (2020)
(:func:`~omega.agents.muzero.search.regularized_policy`). With pUCT, training actions are
sampled from the visit counts with a temperature that follows ``temperature_schedule`` over the
training budget (the temperature travels with the params the actor gets, :class:`ActorParams`),
after root Dirichlet noise; with Gumbel, exploration is the Gumbel noise of sequential halving.
Greedy acting (evaluation) adds no noise: the most visited action (pUCT) or the deterministic
halving winner (Gumbel). ``act`` hands the learner the search policy (``search_policy`` [N, A]:
visit distribution or improved policy) and the search's root value (``root_value`` [N]).

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
(:func:`~omega.agents.muzero.losses.consistency_loss`). With ``policy_gradient_weight`` > 0 the
prior also follows the real returns of the actions taken (Muesli's policy-gradient term,
:func:`~omega.agents.muzero.losses.policy_gradient_loss`), not only the search's improved
policy. With ``reanalyze_fraction`` > 0, that fraction of each batch's sequences first gets
fresh search policies and root values from a noise-free search with the current params, written
back to the replay (reanalyze, Schrittwieser et al. 2021). On the Ray backend, reanalyze can
instead run in separate Ray actors (``distributed.num_reanalyze_workers``) through the same
pieces: :meth:`MuZeroAgent.sample_reanalyze_batch`, :meth:`MuZeroAgent.search_targets` and
:meth:`MuZeroAgent.write_search_targets`.

Memory: with a recurrent encoder (``model.recurrent: true``) the representation also reads
and updates the encoder memory (the carry): ``act`` resets it where ``first`` is True,
encodes the observation with it and returns the updated memory, and hands the memory it
started from to the replay (``extras["memory"]``), which stores it per step next to the
observation. A train step starts the representation from the stored memory at the sequence
start, or, with ``burn_in_steps`` > 0, re-encodes the stored observations before it (no
gradient, clipped at the episode start) from the memory stored there; bootstrap, consistency
and reanalyze observations are encoded with their stored memories. With ``refresh_memory``
each train step then re-encodes its sequences with the new params and writes the memories
that follow each start back to the replay (:func:`omega.agents.muzero.memory.memory_refresh`).

Checkpoints and resume: :class:`MuZeroState` (params, optimiser state, counters) is what a
checkpoint holds. The replay buffer is saved next to it (:meth:`MuZeroAgent.replay_state`,
written by the training loop as ``replay_<env_steps>.msgpack``) and loaded on resume
(:meth:`MuZeroAgent.restore_replay`), so a resumed run trains again at once; the resumed
envs start new episodes, so each env's stream in the replay ends at its newest stored step.

The agent is a thin adapter over pure pieces: it holds the config, the network, the
optimiser, the host-side replay and the jit boundaries (built once, one per hot path) and
calls :mod:`~omega.agents.muzero.search` (the searches), :mod:`~omega.agents.muzero.losses`
(the losses), :mod:`~omega.agents.muzero.optim` (state, optimiser, the train step),
:mod:`~omega.agents.muzero.memory` (the encoder memory), :mod:`~omega.agents.muzero.reanalyze`
and :mod:`~omega.agents.muzero.batches` (the replay side). The replay changes only in
:meth:`MuZeroAgent.learn`'s add, sample and write-back steps.

Shapes: ``N`` envs, ``T`` rollout length, ``A`` actions, ``B`` batch, ``K`` unroll steps,
``D`` latent size, ``2S + 1`` support bins.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import optax

from omega.agents.base import ActOutput, Carry, Observation, Params, Trajectory
from omega.agents.muzero import batches, losses, memory, reanalyze
from omega.agents.muzero.config import MuZeroConfig, check_encoder
from omega.agents.muzero.networks import MuZeroNetwork, logits_to_scalar
from omega.agents.muzero.optim import (
    ActorParams,
    MuZeroState,
    ParamsEMAState,
    bootstrap_params,
    find_state,
    make_optimizer,
    target_network,
    temperature_at,
    train_step,
)
from omega.agents.muzero.reanalyze import ReanalyzeBatch, Reanalyzed
from omega.agents.muzero.search import SearchOutput, make_root, run_search
from omega.agents.parallel import DataParallel
from omega.models.encoders import EncoderConfig, initial_carry
from omega.replay import MemoryBatch, ReplayBatch, ReplayBuffer

__all__ = ["ActorParams", "MuZeroAgent", "MuZeroState", "ReanalyzeBatch"]


class MuZeroAgent:
    """Implements :class:`omega.agents.base.Agent` (see the module docstring)."""

    # The train-step metrics, logged as NaN while the replay warms up so that metrics.csv has
    # the same columns from its first row on.
    loss_columns: tuple[str, ...] = ("loss", "policy_loss", "value_loss", "reward_loss",
                                     "terminal_loss", "policy_entropy", "value_error",
                                     "grad_norm", "learning_rate")

    # Whether :meth:`_diagnostics_impl` applies (it reads :func:`losses.loss_terms`).
    supports_diagnostics: bool = True

    def __init__(self, cfg: MuZeroConfig, encoder_cfg: EncoderConfig, num_actions: int,
                 total_env_steps: int):
        check_encoder(cfg, encoder_cfg)
        self.cfg = cfg
        self.recurrent = bool(encoder_cfg.recurrent)
        self.encoder_cfg = encoder_cfg
        self.num_actions = int(num_actions)
        self.total_env_steps = max(1, int(total_env_steps))
        self.network = self._make_network()
        self.total_train_steps = max(1, int(
            cfg.replay_ratio * max(0, self.total_env_steps - cfg.warmup_steps) / cfg.batch_size))
        self.optimizer, self.lr_schedule = make_optimizer(cfg, self.total_train_steps)
        self.replay = self._new_replay()
        self.trace_counts: collections.Counter[str] = collections.Counter()
        self.data_parallel: DataParallel | None = None
        self._last_metrics: dict[str, float] = {}
        # The jit boundaries, one per hot path, built once.
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

    def _make_network(self) -> Any:
        cfg = self.cfg
        return MuZeroNetwork(
            self.encoder_cfg, self.num_actions, cfg.latent_dim, cfg.dynamics_hidden,
            cfg.prediction_hidden, cfg.support_size,
            projection_dim=cfg.latent_dim if cfg.consistency_loss_weight > 0 else 0,
            reward_head=cfg.reward_head)

    def _new_replay(self) -> ReplayBuffer:
        cfg = self.cfg
        return batches.new_replay(cfg, next_obs=(cfg.consistency_loss_weight > 0
                                                 or cfg.policy_gradient_steps > 1))

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
        noise; when not greedy, actions are sampled from the search policy (visit counts, the
        improved policy, or pi_bar) at ``eval_temperature``."""
        net = self.averaged_params(state) if average else state.params
        return ActorParams(net=net,
                           temperature=jnp.asarray(self.cfg.eval_temperature, jnp.float32),
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
        """Adds the rollout to the replay, then runs the train steps it pays for: each one
        samples a batch (:meth:`_sample`: reanalyze and its write-back happen there), runs
        the pure jitted update, and writes what the update found back to the replay
        (:meth:`_write_back`). Those three methods and :func:`batches.add_trajectory` are
        where the replay changes."""
        t, n = trajectory.action.shape
        extras = trajectory.extras
        chex.assert_shape(extras["search_policy"], (t, n, self.num_actions))
        chex.assert_shape(extras["root_value"], (t, n))
        batches.add_trajectory(self.replay, trajectory, self._filter(trajectory.obs),
                               self.recurrent, rng)
        credit, num_steps = batches.owed_train_steps(self.cfg, self.replay,
                                                     float(state.update_credit), t, n)
        params, opt_state, train_steps = state.params, state.opt_state, state.train_steps
        if self.data_parallel is not None:
            params, opt_state, train_steps = self.data_parallel.replicate(
                (params, opt_state, train_steps))
        step_count = int(state.train_steps)
        step_metrics, diagnostics, fresh = [], [], []
        for _ in range(num_steps):
            batch, reanalyzed = self._sample(params, opt_state)
            if reanalyzed is not None:
                fresh.append(reanalyzed)
            device_batch = batches.device_batch(self.cfg, batch, self.data_parallel)
            if self._diagnose_now(step_count):
                diagnostics.append(self._diagnostics(params, opt_state, train_steps,
                                                     device_batch))
            params, opt_state, metrics, priority = self._train_step(
                params, opt_state, train_steps, device_batch)
            self._write_back(params, batch, priority)
            train_steps = train_steps + 1
            step_count += 1
            step_metrics.append(metrics)
        self._update_last_metrics(step_metrics, diagnostics, fresh)
        new_state = MuZeroState(
            params=params, opt_state=opt_state, train_steps=train_steps,
            env_steps=state.env_steps + t * n,
            update_credit=jnp.asarray(credit - num_steps, jnp.float32))
        return new_state, self._learn_metrics(state, train_steps, extras, fresh)

    # -- the replay side of learn --------------------------------------------------------------

    def _sample(self, params: Params, opt_state: optax.OptState
                ) -> tuple[ReplayBatch, Reanalyzed | None]:
        """A batch for the next train step. With reanalyze in learn, a fraction of its
        sequences first get fresh search targets (with the target network when
        ``reanalyze_with_target``), written to the replay before the batch is built from it,
        and put back afterwards unless ``reanalyze_write_back``."""
        cfg = self.cfg
        if not self.reanalyze_in_learn:
            return self.replay.sample(cfg.batch_size), None
        starts = self.replay.sample_starts(cfg.batch_size)
        search_params = params
        if cfg.target_update_interval and cfg.reanalyze_with_target:
            search_params = self.target_network(opt_state)
        fresh = self._reanalyze(search_params, starts)
        batch = self.replay.sample(cfg.batch_size, starts=starts)
        if fresh.replaced is not None:  # no write-back: the stored targets return
            self.replay.set_search_targets(fresh.env, fresh.time, *fresh.replaced)
        return batch, fresh

    def _write_back(self, params: Params, batch: ReplayBatch, priority: jax.Array) -> None:
        """What a train step on ``batch`` changes in the replay: the sampled starts' new
        priorities (prioritised replay) and the refreshed memories (``refresh_memory``)."""
        if self.cfg.prioritized:
            self.replay.update_priorities(batch.index, np.asarray(priority))
        if self.cfg.refresh_memory:
            self._refresh(params, batch)

    def _reanalyze(self, params: Params, starts: tuple[np.ndarray, np.ndarray, np.ndarray]
                   ) -> Reanalyzed:
        """Fresh search targets for a random ``reanalyze_fraction`` of the sequences starting
        at ``starts`` (env [B], time [B], weight [B]), written to the replay (see
        :class:`Reanalyzed` for what comes back). The search is :meth:`search_targets`
        (greedy, noise-free), the one remote reanalyze workers run, with ``params``.
        """
        cfg = self.cfg
        positions = reanalyze.reanalyze_positions(self.replay, starts, cfg.reanalyze_fraction)
        if positions is None:
            return reanalyze.nothing_reanalyzed()
        envs, times = positions
        kept = None
        if not cfg.reanalyze_write_back:
            kept = self.replay.search_targets_at(envs, times)
        kls = []
        size = min(cfg.reanalyze_batch_size, self._reanalyze_positions_bound())
        for batch in reanalyze.reanalyze_batches(self.replay, envs, times, size,
                                                 self.recurrent):
            extras = self._search_extras(params, batch)
            self.replay.set_search_targets(batch.env, batch.time, extras["search_policy"],
                                           extras["root_value"])
            kls.append(extras["target_kl"])
        return Reanalyzed(envs, times, kept, np.concatenate(kls))

    def _reanalyze_positions_bound(self) -> int:
        """The most unroll positions one train step can reanalyze: its sequences' K + 1 steps
        each. The learner pads its searches to this (when under ``reanalyze_batch_size``),
        one shape that compiles once, rather than to ``reanalyze_batch_size``: padded roots
        cost as much search as real ones (78 real of 256 at the shipped recipe's 13 sequences).
        """
        sequences = round(self.cfg.reanalyze_fraction * self.cfg.batch_size)
        return max(1, sequences * (self.cfg.unroll_steps + 1))

    def _refresh(self, params: Params, batch: ReplayBatch) -> None:
        """Writes back the memories after each of the batch's sequences' K + 1 observations,
        encoded with ``params`` (:func:`memory.memory_refresh`)."""
        self.replay.set_memory(*memory.memory_refresh(
            self.replay, self._refresh_memory, params, batch, self.cfg.unroll_steps))

    # -- learn's metrics -----------------------------------------------------------------------

    def _diagnose_now(self, step_count: int) -> bool:
        interval = self.cfg.diagnostics_interval
        return bool(interval and self.supports_diagnostics and step_count % interval == 0)

    def _update_last_metrics(self, step_metrics: list[dict[str, jax.Array]],
                             diagnostics: list[dict[str, jax.Array]],
                             fresh: list[Reanalyzed]) -> None:
        """The train-step metrics kept between learn calls: the mean over this call's steps,
        NaN columns while the replay warms up, the newest diagnostics."""
        cfg = self.cfg
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
                                          advantage=float("nan"),
                                          policy_gradient_weight=float("nan"))
            if self.reanalyze_in_learn:
                self._last_metrics["target_kl_reanalyzed"] = float("nan")
        if diagnostics:  # kept until the next ones, so every row has the newest
            self._last_metrics.update(
                {k: float(v) for k, v in jax.device_get(diagnostics[-1]).items()})
        if sum(len(f.env) for f in fresh):
            self._last_metrics["target_kl_reanalyzed"] = float(np.mean(np.concatenate(
                [f.target_kl for f in fresh])))

    def _learn_metrics(self, state: MuZeroState, train_steps: jax.Array,
                       extras: Mapping[str, Any], fresh: list[Reanalyzed]) -> dict[str, float]:
        """What learn logs: the kept train-step metrics, the replay, and the acting
        search's statistics over the rollout (``state``: the state learn started from)."""
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
            metrics["reanalyzed_steps"] = float(sum(len(f.env) for f in fresh))
        return metrics

    # -- reanalyze, also for remote workers ----------------------------------------------------

    def reanalyze_batches(self, env: np.ndarray, time: np.ndarray) -> list[ReanalyzeBatch]:
        """The live replay steps (env [M], time [M]) in batches of ``reanalyze_batch_size``
        with their observations (and memories); the last is padded to that size (one shape,
        so the search compiles once)."""
        return reanalyze.reanalyze_batches(self.replay, env, time,
                                           self.cfg.reanalyze_batch_size, self.recurrent)

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
        return reanalyze.search_extras(self._act, self._reanalyze_key, net, batch)

    def write_search_targets(self, env: np.ndarray, time: np.ndarray, search_policy: np.ndarray,
                             root_value: np.ndarray) -> int:
        """Writes reanalyzed targets back to the replay for the steps still live (those
        evicted since they were sampled are skipped); returns how many were written."""
        return self.replay.set_search_targets_if_live(env, time, search_policy, root_value)

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
        s = self.cfg.support
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

    def _search_options(self) -> dict[str, Any]:
        """The pUCT options every search takes from the config."""
        cfg = self.cfg
        return dict(num_simulations=cfg.num_simulations, pb_c_init=cfg.pb_c_init,
                    pb_c_base=cfg.pb_c_base, dirichlet_alpha=cfg.dirichlet_alpha,
                    dirichlet_fraction=cfg.dirichlet_fraction, search=cfg.search)

    def _root(self, net: Params, obs: Observation, first: jax.Array | None, memory: Carry
              ) -> tuple[mctx.RootFnOutput, Carry]:
        """The search's root (prior, value, latent) for each obs, and the memory after it."""
        latent, next_memory = self.network.apply(net, obs, first, memory,
                                                 method=MuZeroNetwork.encode)
        logits, value_logits = self.network.apply(net, latent, method=MuZeroNetwork.predict)
        return make_root(logits, value_logits, latent, self.cfg.support), next_memory

    def _search(self, params: ActorParams, rng: jax.Array, root: mctx.RootFnOutput,
                greedy: bool) -> SearchOutput:
        cfg = self.cfg
        return run_search(
            params.net, rng, root, self._recurrent_fn, **self._search_options(),
            temperature=params.temperature, greedy=greedy, explore=params.explore,
            max_considered_actions=cfg.max_considered_actions, gumbel_scale=cfg.gumbel_scale,
            gumbel_value_scale=cfg.gumbel_value_scale,
            gumbel_rescale_values=cfg.gumbel_rescale_values, gumbel_q_floor=cfg.gumbel_q_floor,
            gumbel_q_stats=cfg.gumbel_q_stats)

    def _act_impl(self, params: ActorParams, obs: Observation, rng: jax.Array,
                  greedy: bool, first: jax.Array | None = None,
                  memory: Carry = None) -> ActOutput:
        """``first`` [N] and ``memory`` (the carry before obs) with a recurrent encoder."""
        self.trace_counts["act"] += 1
        root, next_memory = self._root(params.net, obs, first, memory)
        out = self._search(params, rng, root, greedy)
        extras = {"search_policy": out.search_policy, "root_value": out.root_value}
        if out.q_spread is not None:  # the search's diagnostics, where it has them
            extras.update(q_spread=out.q_spread, target_kl=out.target_kl)
        if memory is not None:
            extras["memory"] = memory  # what the replay stores: the memory before obs
        return ActOutput(action=out.action, extras=extras, carry=next_memory)

    def _value_impl(self, params: ActorParams, obs: Observation,
                    memory: Carry = None) -> jax.Array:
        self.trace_counts["value"] += 1
        # The obs continues the episode the memory belongs to (a time limit's final obs), so
        # nothing resets.
        _, _, value_logits = self.network.apply(params.net, obs, None, memory,
                                                method=type(self.network).initial_inference)
        return logits_to_scalar(value_logits, self.cfg.support)  # [N]

    def _refresh_memory_impl(self, params: Params, memory_batch: MemoryBatch, obs: Observation,
                             first: jax.Array) -> jax.Array:
        self.trace_counts["refresh"] += 1
        return memory.refreshed_memories(self.network, self.cfg, params, memory_batch, obs,
                                         first)

    def _start_memory(self, params: Params, memory_batch: MemoryBatch) -> Carry:
        return memory.start_memory(self.network, self.cfg, params, memory_batch)

    def _loss_fn(self, params: Params, batch: ReplayBatch, boot_params: Params,
                 progress: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The loss this agent trains with (:func:`losses.loss`); ``progress`` is the
        fraction of the run's train steps done (None: the full weights)."""
        return losses.loss(self.network, self.cfg, params, batch, boot_params, progress)

    def _progress(self, step: jax.Array) -> jax.Array:
        """The fraction of the run's train steps done before train step ``step``."""
        return jnp.asarray(step, jnp.float32) / self.total_train_steps

    def _loss(self, params: Params, batch: ReplayBatch, boot_params: Params | None = None
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The batch's loss and the logged metrics (plus ``priority`` [B]); ``boot_params``
        (default: ``params``) value the bootstrap observations."""
        return self._loss_fn(params, batch, params if boot_params is None else boot_params)

    def _loss_terms(self, params: Params, batch: ReplayBatch, boot_params: Params
                    ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        """:func:`losses.loss_terms`: the loss split into its weighted terms."""
        return losses.loss_terms(self.network, self.cfg, params, batch, boot_params)

    def _policy_gradient(self, params: Params, batch: ReplayBatch, logits0: jax.Array,
                         value_logits0: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """:func:`losses.policy_gradient`."""
        return losses.policy_gradient(self.network, self.cfg, params, batch, logits0,
                                      value_logits0)

    def _diagnostics_impl(self, params: Params, opt_state: optax.OptState, step: jax.Array,
                          batch: ReplayBatch) -> dict[str, jax.Array]:
        """:func:`losses.diagnostics` (the bootstrap valued and the terms weighted as train
        step ``step`` values and weights them)."""
        self.trace_counts["diagnostics"] += 1
        return losses.diagnostics(self.network, self.cfg, params, batch,
                                  bootstrap_params(self.cfg, params, opt_state),
                                  self._progress(step))

    def target_network(self, opt_state: optax.OptState) -> Params:
        """The target network's params (``target_update_interval`` > 0)."""
        return target_network(opt_state)

    def _train_step_impl(self, params: Params, opt_state: optax.OptState, step: jax.Array,
                         batch: ReplayBatch) -> tuple[Params, optax.OptState, dict[str, Any],
                                                      jax.Array]:
        self.trace_counts["train"] += 1
        loss_fn = functools.partial(self._loss_fn, progress=self._progress(step))
        return train_step(loss_fn, self.optimizer, self.lr_schedule,
                          bootstrap_params(self.cfg, params, opt_state), params, opt_state,
                          step, batch)

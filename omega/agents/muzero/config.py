"""MuZero hyperparameters. Defaults are sized for small MiniHack rooms on a CPU."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, float | None]:
    return {"min": lo, "max": hi}  # read by omega.config's validation


class Support(NamedTuple):
    """Where the reward and value heads' 2S + 1 categorical bins lie on the h(x) axis:
    ``-size * step, ..., 0, ..., size * step``. A target x is two-hot between the two bins
    around h(x), so a reward much smaller than ``step`` in h gets a sliver of one bin's mass
    (MuZero's unit bins: a 0.01 bonus, h = 0.005, is 0.5% of bin 1)."""

    size: int
    step: float = 1.0

    @property
    def bins(self) -> int:
        return 2 * self.size + 1

    @property
    def limit(self) -> float:
        return self.size * self.step


@dataclasses.dataclass(frozen=True)
class MuZeroConfig:
    # Networks (the representation is the experiment's `model:` encoder + a projection).
    latent_dim: int = dataclasses.field(default=64, metadata=_range(2))
    dynamics_hidden: int = dataclasses.field(default=128, metadata=_range(1))
    prediction_hidden: int = dataclasses.field(default=128, metadata=_range(1))
    # Value and reward are categorical over 2S + 1 bins after h(x): at -S..S times
    # support_step. Unit steps (MuZero's) resolve a 0.01 shaped reward (h = 0.005) as 0.5% of
    # one bin's mass; smaller steps resolve it better over a shorter range (h up to S * step).
    support_size: int = dataclasses.field(default=10, metadata=_range(1))
    support_step: float = dataclasses.field(default=1.0, metadata=_range(1e-3))
    # Search: "muzero" is pUCT with visit-count policy targets (mctx.muzero_policy); "gumbel"
    # is Gumbel MuZero (mctx.gumbel_muzero_policy): sequential halving at the root and the
    # completed-Q improved policy as the target, which still improves the policy when the
    # simulations are few compared with the actions; "regularized" searches like "muzero" but
    # acts with, and learns towards, the regularized policy pi_bar of Grill et al. (2020), the
    # policy that pUCT's visit counts only approximate (and poorly with few simulations).
    search: Literal["muzero", "gumbel", "regularized"] = "muzero"
    max_considered_actions: int = dataclasses.field(default=16, metadata=_range(1))  # gumbel
    gumbel_scale: float = dataclasses.field(default=1.0, metadata=_range(0.0))  # gumbel
    # gumbel: the improved policy is softmax(prior logits + (50 + max visits) * value_scale *
    # Q), with Q min-max normalised over the root's actions when rescale is on (mctx's
    # defaults). Normalising turns tiny Q differences of an untrained model into a full push.
    gumbel_value_scale: float = dataclasses.field(default=0.1, metadata=_range(0.0))
    gumbel_rescale_values: bool = True
    # gumbel: the smallest Q spread the min-max normalisation divides by (mctx: 1e-8). With
    # 0.01 (EfficientZero V2, LightZero) a spread far below 0.01, which in a sparse-reward
    # room is model noise, pushes the prior by a fraction of a logit instead of the full push.
    gumbel_q_floor: float = dataclasses.field(default=1e-8, metadata=_range(1e-12))
    # gumbel: the min and max that normalise Q: "root" (mctx), over the node's completed
    # Q-values; "tree" (EfficientZero V2), over every Q-value and node value in the tree, so
    # the root's spread is measured against what the whole search saw.
    gumbel_q_stats: Literal["root", "tree"] = "root"
    num_simulations: int = dataclasses.field(default=16, metadata=_range(1))
    pb_c_init: float = dataclasses.field(default=1.25, metadata=_range(0.0))
    pb_c_base: float = dataclasses.field(default=19652.0, metadata=_range(1.0))
    dirichlet_alpha: float = dataclasses.field(default=0.3, metadata=_range(0.0))
    dirichlet_fraction: float = dataclasses.field(default=0.25, metadata=_range(0.0, 1.0))
    # (fraction of total_env_steps, temperature) pairs: from each fraction on, actions are
    # sampled from visit counts ** (1 / temperature). The first fraction must be 0.
    temperature_schedule: tuple[tuple[float, float], ...] = ((0.0, 1.0), (0.5, 0.5),
                                                             (0.75, 0.25))
    gamma: float = dataclasses.field(default=0.99, metadata=_range(0.0, 1.0))
    # Acting
    rollout_length: int = dataclasses.field(default=8, metadata=_range(1))  # T per learn call
    # Replay
    replay_size: int = dataclasses.field(default=100_000, metadata=_range(1))  # env steps
    replay_max_age: int | None = dataclasses.field(default=None, metadata=_range(1))
    warmup_steps: int = dataclasses.field(default=2_000, metadata=_range(0))
    prioritized: bool = True
    priority_alpha: float = dataclasses.field(default=0.6, metadata=_range(0.0))
    priority_beta: float = dataclasses.field(default=0.4, metadata=_range(0.0, 1.0))
    # Adds this times the largest |reward target - predicted reward| of the unroll to the
    # priority, so that starts whose rewards the model still gets wrong (rare, decisive
    # steps) are sampled more than the value error alone would.
    priority_reward_weight: float = dataclasses.field(default=0.0, metadata=_range(0.0))
    success_fraction: float | None = dataclasses.field(default=None, metadata=_range(0.0, 1.0))
    # Learning
    unroll_steps: int = dataclasses.field(default=5, metadata=_range(1))  # K
    td_steps: int = dataclasses.field(default=10, metadata=_range(1))  # n
    # Bootstrap the n-step value targets with the current network's value of the stored
    # observation (no gradient) instead of the root value the search stored when acting,
    # which can be as old as the replay.
    fresh_bootstrap: bool = True
    # A target network (DQN, EfficientZero, LightZero): a copy of the params refreshed every
    # this many train steps. With it the value bootstraps (fresh_bootstrap) and, with
    # reanalyze_with_target, reanalyze's searches read the copy rather than the params being
    # trained, so targets do not chase the network they train. 0 = off.
    target_update_interval: int = dataclasses.field(default=0, metadata=_range(0))
    # With target_update_interval > 0: reanalyze searches with the target network (a lagged
    # model, as EfficientZero V2 does) instead of the current params.
    reanalyze_with_target: bool = True
    # Reanalyze writes its fresh targets back to the replay (Reanalyse, MuZero Unplugged), so
    # later batches read them too; off, they replace the stored ones in this batch only
    # (EfficientZero V1), so a stored step never accumulates pushes from successive priors.
    reanalyze_write_back: bool = True
    # Every this many train steps, log per-loss gradient norms at the representation and the
    # effective rank of the root latents (one extra backward pass per loss term). 0 = off.
    diagnostics_interval: int = dataclasses.field(default=100, metadata=_range(0))
    # Recurrent encoder (model.recurrent: true) only: before each sampled sequence, re-encode
    # up to this many stored observations (no gradient, from the memory stored that many
    # steps earlier, never past the episode start), so the start memory comes from the
    # current params rather than the acting ones. 0: start from the stored memory.
    burn_in_steps: int = dataclasses.field(default=0, metadata=_range(0))
    # Backpropagate through the burn-in re-encoding (truncated BPTT over burn_in_steps): the
    # only way the encoder learns what to write to its memory. Without it the memory before a
    # sequence start carries no gradient, so what the encoder keeps from earlier steps is
    # never trained (only how it reads what is kept).
    burn_in_gradient: bool = False
    # Recurrent encoder only: after each train step, re-encode every sampled sequence's K + 1
    # observations with the new params from its start memory and write the memories that
    # follow back to the replay (stored-state refresh, as in R2D2), so stored memories do not
    # stay as old as the params that acted.
    refresh_memory: bool = False
    batch_size: int = dataclasses.field(default=128, metadata=_range(1))
    # Sampled sequences (batch_size x train steps) per env step added, after warm-up.
    replay_ratio: float = dataclasses.field(default=0.5, metadata=_range(0.0))
    learning_rate: float = dataclasses.field(default=1e-3, metadata=_range(0.0))
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    adam_eps: float = dataclasses.field(default=1e-8, metadata=_range(0.0))
    # Evaluation (omega eval, and so the benchmark scripts' end-of-run eval) acts with an exponential moving
    # average of the params, ema <- decay * ema + (1 - decay) * params after every train step
    # (kept in the optimiser state, so it is checkpointed and resumed); acting in training
    # keeps the current params. With a constant learning rate the params of a run that has
    # learned still jump from step to step, and the eval reads whichever step came last.
    # 0 = off (evaluation uses the current params).
    eval_params_ema: float = dataclasses.field(default=0.0, metadata=_range(0.0, 0.99999))
    # Sampled evaluation (eval.greedy false) draws actions from the search policy ** (1 / T)
    # (pUCT: the visit counts; Gumbel: the improved policy; the regularized search samples
    # pi_bar as it is):
    # 1 samples the policy itself; towards 0 it approaches its argmax. Training acting is
    # untouched (pUCT: temperature_schedule; Gumbel: the Gumbel noise).
    eval_temperature: float = dataclasses.field(default=1.0, metadata=_range(0.01))
    max_grad_norm: float = dataclasses.field(default=5.0, metadata=_range(0.0))
    policy_loss_weight: float = dataclasses.field(default=1.0, metadata=_range(0.0))
    # A bonus for the prior's entropy (root and unrolled steps, weighted like the policy
    # loss). The Gumbel improved policy is always sharper than the prior it starts from, so
    # training on fresh targets (reanalyze) compounds the push towards a deterministic
    # policy; the bonus bounds that (the fixed point is a softmax of push / weight). 0 = off.
    policy_entropy_weight: float = dataclasses.field(default=0.0, metadata=_range(0.0))
    # Muesli's policy-gradient term (Hessel et al. 2021): -rho * A * log prior(a) at each
    # sequence start, A = the n-step return target minus the value (divided by its batch
    # standard deviation, as PPO does), rho the truncated importance weight against the
    # stored search policy. It lets real returns raise the prior of a decisive action the
    # model does not yet tell apart from its look-alikes; logged as policy_gradient_loss and
    # advantage (mean |A| before normalising). 0 = off.
    policy_gradient_weight: float = dataclasses.field(default=0.0, metadata=_range(0.0))
    # Divide the policy-gradient advantages by their batch standard deviation (off: raw A).
    policy_gradient_normalize: bool = True
    # How many positions of each sampled sequence the policy-gradient term uses: 1 = the
    # start only; P > 1 adds the real observations of the next P - 1 steps (each encoded
    # afresh, so the prior that acts learns from them), P times the real-return signal per
    # batch at the cost of encoding them. At most unroll_steps; the term averages over them.
    policy_gradient_steps: int = dataclasses.field(default=1, metadata=_range(1))
    # Fades the policy-gradient term out: its weight falls linearly from
    # policy_gradient_weight at the first train step to 0 at this fraction of the run's train
    # steps (and stays 0 after), so the real returns drive the prior early and the search's
    # improved policy alone shapes it late. 0 = off (a constant weight).
    policy_gradient_fade_until: float = dataclasses.field(default=0.0, metadata=_range(0.0, 1.0))
    value_loss_weight: float = dataclasses.field(default=0.25, metadata=_range(0.0))
    reward_loss_weight: float = dataclasses.field(default=1.0, metadata=_range(0.0))
    terminal_loss_weight: float = dataclasses.field(default=1.0, metadata=_range(0.0))
    # How the dynamics predicts the reward: "shared" (one head over the hidden features of the
    # latent and the action) or "per_action" (one head per action, the taken one's used; a
    # reward whose sign depends on the action and on something remembered is then linear in
    # the latent per action). Not with stochastic: true.
    reward_head: Literal["shared", "per_action"] = "shared"
    # Self-supervised state consistency (EfficientZero): the latent after k dynamics steps is
    # pulled towards the representation of the real observation k steps later. 0 = off.
    consistency_loss_weight: float = dataclasses.field(default=0.0, metadata=_range(0.0))
    # Reanalyze (Schrittwieser et al. 2021): this fraction of each sampled batch gets fresh
    # search policies and root values from the current params (a noise-free search over the
    # stored observations), written back to the replay before the batch is built. 0 = off.
    reanalyze_fraction: float = dataclasses.field(default=0.0, metadata=_range(0.0, 1.0))
    reanalyze_batch_size: int = dataclasses.field(default=256, metadata=_range(1))  # per search
    # Stochastic MuZero (chance nodes: afterstate dynamics and prediction, a chance encoder
    # over a codebook of num_chance_outcomes one-hot codes); searches with
    # mctx.stochastic_muzero_policy, so search must be "muzero" or "regularized".
    stochastic: bool = False
    num_chance_outcomes: int = dataclasses.field(default=8, metadata=_range(2))
    afterstate_value_loss_weight: float = dataclasses.field(default=0.25,
                                                            metadata=_range(0.0))
    chance_loss_weight: float = dataclasses.field(default=1.0, metadata=_range(0.0))
    commitment_loss_weight: float = dataclasses.field(default=1.0, metadata=_range(0.0))
    # Rewards using many codes (the entropy of the batch's average code distribution).
    code_usage_weight: float = dataclasses.field(default=0.1, metadata=_range(0.0))

    @property
    def support(self) -> Support:
        return Support(self.support_size, self.support_step)

    def __post_init__(self):
        if self.search not in ("muzero", "gumbel", "regularized"):
            raise ValueError("search must be 'muzero', 'gumbel' or 'regularized', got "
                             f"{self.search!r}")
        if self.policy_gradient_steps > self.unroll_steps:
            raise ValueError(f"policy_gradient_steps ({self.policy_gradient_steps}) must be at "
                             f"most unroll_steps ({self.unroll_steps}): the sequences hold "
                             "that many taken actions")
        if self.stochastic and self.consistency_loss_weight > 0:
            raise ValueError("consistency_loss_weight > 0 is not available with stochastic: true "
                             "(the chance model has no projection heads); set it to 0")
        if self.stochastic and self.search == "gumbel":
            raise ValueError("stochastic: true searches with chance nodes (pUCT); set search to "
                             "'muzero' or 'regularized' (there is no Gumbel search with chance "
                             "nodes)")
        if self.gumbel_q_stats not in ("root", "tree"):
            raise ValueError("gumbel_q_stats must be 'root' or 'tree', got "
                             f"{self.gumbel_q_stats!r}")
        if self.reward_head not in ("shared", "per_action"):
            raise ValueError("reward_head must be 'shared' or 'per_action', got "
                             f"{self.reward_head!r}")
        if self.stochastic and self.reward_head != "shared":
            raise ValueError("reward_head: per_action is not available with stochastic: true "
                             "(the afterstate dynamics has its own reward head); use 'shared'")
        if self.lr_schedule not in ("constant", "linear", "cosine"):
            raise ValueError("lr_schedule must be 'constant', 'linear' or 'cosine', got "
                             f"{self.lr_schedule!r}")
        schedule = self.temperature_schedule
        if not schedule or schedule[0][0] != 0.0:
            raise ValueError("temperature_schedule must start with a [0.0, temperature] pair")
        fractions = [f for f, _ in schedule]
        if fractions != sorted(fractions) or any(not 0.0 <= f <= 1.0 for f in fractions):
            raise ValueError("temperature_schedule fractions must rise from 0 to at most 1, got "
                             f"{fractions}")
        if any(t < 0.0 for _, t in schedule):
            raise ValueError("temperature_schedule temperatures must be >= 0")
        if self.warmup_steps > self.replay_size:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be <= replay_size "
                             f"({self.replay_size}), or training never starts")
        if self.replay_max_age is not None and self.warmup_steps > self.replay_max_age:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be <= replay_max_age "
                             f"({self.replay_max_age}), or training never starts")


def check_encoder(cfg: MuZeroConfig, encoder: Any) -> None:
    """Raises ``ValueError`` for MuZero settings the encoder config (``model:``) rules out:
    the one place these are checked (the config loader and the agents call it)."""
    if cfg.stochastic and encoder.recurrent:
        raise ValueError("config key 'model.recurrent' must be false with muzero.stochastic: "
                         "true (the chance model does not thread the encoder memory)")
    if cfg.burn_in_steps and not encoder.recurrent:
        raise ValueError("config key 'muzero.burn_in_steps' needs model.recurrent: true (there "
                         "is no encoder memory to burn in); set it to 0")
    if cfg.burn_in_gradient and not cfg.burn_in_steps:
        raise ValueError("config key 'muzero.burn_in_gradient' needs muzero.burn_in_steps > 0 "
                         "(the gradient runs through the burn-in); set burn_in_steps or drop it")
    if cfg.refresh_memory and not encoder.recurrent:
        raise ValueError("config key 'muzero.refresh_memory' needs model.recurrent: true "
                         "(there is no encoder memory to refresh); set it to false")

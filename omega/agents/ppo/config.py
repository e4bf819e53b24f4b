"""PPO hyperparameters. Defaults solve MiniHack-Room-5x5 (16 envs) in well under 100k steps."""

from __future__ import annotations

import dataclasses
from typing import Literal


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, float | None]:
    return {"min": lo, "max": hi}  # read by omega.config's validation


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    learning_rate: float = dataclasses.field(default=5e-4, metadata=_range(0.0))
    lr_schedule: Literal["constant", "linear"] = "constant"  # linear: anneal to 0 at the end
    adam_eps: float = dataclasses.field(default=1e-5, metadata=_range(0.0))
    max_grad_norm: float = dataclasses.field(default=0.5, metadata=_range(0.0))
    gamma: float = dataclasses.field(default=0.99, metadata=_range(0.0, 1.0))
    gae_lambda: float = dataclasses.field(default=0.95, metadata=_range(0.0, 1.0))
    clip_eps: float = dataclasses.field(default=0.2, metadata=_range(0.0))
    clip_value_loss: bool = False  # clip the value change to clip_eps like the policy ratio
    value_coef: float = dataclasses.field(default=0.5, metadata=_range(0.0))
    entropy_coef: float = dataclasses.field(default=0.01, metadata=_range(0.0))
    # linear: the entropy bonus's weight goes from entropy_coef at the first update to
    # entropy_coef_final at the budget (train.total_env_steps), so the policy explores early
    # and settles late; constant: entropy_coef throughout (entropy_coef_final must stay 0).
    entropy_schedule: Literal["constant", "linear"] = "constant"
    entropy_coef_final: float = dataclasses.field(default=0.0, metadata=_range(0.0))
    num_epochs: int = dataclasses.field(default=4, metadata=_range(1))
    # Non-recurrent: T*N must divide by it; recurrent (whole env columns): N must.
    num_minibatches: int = dataclasses.field(default=4, metadata=_range(1))
    normalize_advantages: bool = True  # per minibatch
    rollout_length: int = dataclasses.field(default=64, metadata=_range(1))  # T
    # Random network distillation (Burda et al. 2018): a novelty bonus for exploration.
    rnd: bool = False
    rnd_coef: float = dataclasses.field(default=0.5, metadata=_range(0.0))  # int adv weight
    rnd_gamma: float = dataclasses.field(default=0.99, metadata=_range(0.0, 1.0))
    rnd_lr: float = dataclasses.field(default=3e-4, metadata=_range(0.0))
    rnd_embed_dim: int = dataclasses.field(default=16, metadata=_range(1))
    rnd_hidden: int = dataclasses.field(default=256, metadata=_range(1))
    rnd_output_dim: int = dataclasses.field(default=64, metadata=_range(1))

    def __post_init__(self):
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError(f"lr_schedule must be 'constant' or 'linear', got {self.lr_schedule!r}")
        if self.entropy_schedule not in ("constant", "linear"):
            raise ValueError("entropy_schedule must be 'constant' or 'linear', got "
                             f"{self.entropy_schedule!r}")
        if self.entropy_schedule == "constant" and self.entropy_coef_final != 0.0:
            raise ValueError("entropy_coef_final is only used with entropy_schedule: linear; "
                             "set ppo.entropy_schedule: linear or drop entropy_coef_final")

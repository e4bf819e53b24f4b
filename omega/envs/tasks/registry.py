"""gymnasium registration of the task ids."""

from __future__ import annotations

import gymnasium as gym
from minihack.envs import register as _minihack_register

# Entry points name the package (``omega.envs.tasks:OmegaMemory``), which re-exports
# the env classes of ``omega.envs.tasks.envs``.
_MODULE = __package__

def _task_specs() -> dict[str, tuple[str, dict]]:
    specs = {
        "Omega-RandomRoom-v0": ("OmegaRandomRoom", {}),
        "Omega-RandomRoom-5x5-v0": ("OmegaRandomRoom", {"size": 5}),
        "Omega-RandomRoom-10x10-v0": ("OmegaRandomRoom", {"size": 10}),
        "Omega-Memory-v0": ("OmegaMemory", {}),
    }
    for k in range(4, 12):
        specs[f"Omega-Memory-K{k}-v0"] = ("OmegaMemory", {"k": k})
    specs["Omega-CreditAssignment-v0"] = ("OmegaCreditAssignment", {})
    specs["Omega-Retreat-v0"] = ("OmegaRetreat", {})
    specs["Omega-StochasticTrap-v0"] = ("OmegaStochasticTrap", {})
    specs["Omega-AvoidFuzzyBear-v0"] = ("OmegaAvoidFuzzyBear", {})
    return specs


#: All ids registered by this module.
TASK_IDS: tuple[str, ...] = tuple(_task_specs())


def register_tasks() -> tuple[str, ...]:
    """Register all task ids with gymnasium (idempotent).  Returns the ids."""
    for env_id, (cls_name, kwargs) in _task_specs().items():
        if env_id in gym.envs.registry:
            continue
        # minihack's register disables gymnasium's OrderEnforcing wrapper, as
        # for MiniHack's own ids (it breaks NLE's seed() calls).
        _minihack_register(
            id=env_id, entry_point=f"{_MODULE}:{cls_name}", kwargs=dict(kwargs)
        )
    return TASK_IDS

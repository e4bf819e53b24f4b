"""Data-parallel learning over several devices of one kind (``omega run --device gpu:all``).

A 1-D :class:`jax.sharding.Mesh` over the devices, with one axis, ``batch``. The learner
state (params, optimiser state, counters) is replicated on every device; a training batch
(PPO's trajectory, MuZero's replay batch) is split along its env/batch axis, each device
holding ``1 / D`` of it. Nothing else changes: ``jit`` compiles the same update for the
sharded inputs and inserts the collectives itself (a loss averaged over the sharded batch
becomes per-device partial sums plus an all-reduce, so its gradient is the average over all
devices). The update is therefore the single-device one, up to float summation order.

Acting stays on one device (:meth:`DataParallel.for_acting`): one ``act`` call per env group
is too small to be worth splitting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from omega.errors import OmegaError

BATCH_AXIS = "batch"


class DataParallel:
    """Placement of learner state (replicated) and batches (split) on a device mesh."""

    def __init__(self, devices: Sequence[jax.Device]):
        if not devices:
            raise OmegaError("data parallelism needs at least one device")
        kinds = {d.platform for d in devices}
        if len(kinds) > 1:
            raise OmegaError(f"data parallelism needs devices of one kind, got {sorted(kinds)}")
        self.devices = tuple(devices)
        self.mesh = Mesh(np.asarray(self.devices), (BATCH_AXIS,))

    @property
    def size(self) -> int:
        return len(self.devices)

    def __repr__(self) -> str:
        return f"DataParallel({self.size} x {self.devices[0].platform})"

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def split(self, axis: int) -> NamedSharding:
        """Arrays split along ``axis`` (the env/batch axis), the other axes whole."""
        return NamedSharding(self.mesh, PartitionSpec(*(None,) * axis, BATCH_AXIS))

    def replicate(self, tree: Any) -> Any:
        return jax.device_put(tree, self.replicated())

    def shard(self, tree: Any, axis: int) -> Any:
        """Every leaf of ``tree`` split along ``axis`` over the devices."""
        return jax.device_put(tree, self.split(axis))

    def constrain(self, tree: Any, axis: int) -> Any:
        """Inside ``jit``: keep ``tree``'s leaves split along ``axis`` (e.g. after a shuffle,
        which would otherwise leave the layout to the compiler)."""
        return jax.lax.with_sharding_constraint(tree, self.split(axis))

    def for_acting(self, tree: Any) -> Any:
        """A copy of (replicated) params on the first device, for the actor."""
        return jax.device_put(tree, self.devices[0])

    def check_divisible(self, size: int, what: str, fix: str) -> None:
        if size % self.size:
            raise OmegaError(f"{what} ({size}) must be divisible by the number of devices "
                             f"({self.size}) for data-parallel learning; {fix}")

"""Replay buffers (host-side numpy): sequences with n-step targets for model-based agents."""

from omega.replay.buffer import MemoryBatch, ReplayBatch, ReplayBuffer, nstep_value_targets

__all__ = ["MemoryBatch", "ReplayBatch", "ReplayBuffer", "nstep_value_targets"]

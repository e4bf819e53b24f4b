"""Replay buffers (host-side numpy): sequences with n-step targets for model-based agents."""

from omega.replay.buffer import ReplayBatch, ReplayBuffer, nstep_value_targets

__all__ = ["ReplayBatch", "ReplayBuffer", "nstep_value_targets"]

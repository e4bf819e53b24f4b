"""Checkpoints: one msgpack file per save (flax serialization, never pickle).

A checkpoint holds the learner state (params, optimiser state, counters), the loop's step
counters, its PRNG key and the config hash. An agent with a replay buffer (MuZero) also has
its replay saved with each checkpoint, in ``replay_<env_steps>.msgpack`` next to
``ckpt_<env_steps>.msgpack`` (numpy arrays in msgpack, also never pickle); only the newest
is kept. Files are written to a temp file and renamed, so a killed run never leaves a
half-written checkpoint or replay behind (the temp file of a killed write is removed by the
next ``omega run``: :func:`remove_stale_temp_files`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import serialization

from omega.errors import CheckpointError
from omega.training.files import FILE_MODE, atomic_write_bytes  # noqa: F401  (re-exported)

FORMAT_VERSION = 1
REPLAY_FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d{12})\.msgpack$")
_REPLAY_NAME = re.compile(r"^replay_(\d{12})\.msgpack$")
# atomic_write_bytes's temp files for checkpoints and replays.
_TEMP_NAME = re.compile(r"^\.(ckpt|replay)_\d{12}\.msgpack.*\.tmp$")


class LoopState(NamedTuple):
    """Everything the training loop needs to resume, besides the agent state."""

    env_steps: int
    updates: int
    episodes: int
    rng: np.ndarray  # uint32 [2] PRNG key data


def checkpoint_path(ckpt_dir: Path, env_steps: int) -> Path:
    return Path(ckpt_dir) / f"ckpt_{env_steps:012d}.msgpack"


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if _NAME.match(p.name))


def hash_matches(stored: Any, config_hash: str) -> bool:
    """Whether a stored config hash is ``config_hash``, or its legacy form
    (:class:`omega.config.ConfigHash`): experiments made before only the active agent's
    section was hashed keep resuming."""
    return stored == str(config_hash) or stored == getattr(config_hash, "legacy", None)


def off_cadence(steps: Sequence[int], every: int) -> set[int]:
    """The env steps among ``steps`` of checkpoints written off a run's cadence ``every``: on
    a signal, or at the end of a run stopped early. A cadence checkpoint is the first in its
    ``every``-long interval of env steps past the first (the run saves on its first update at
    or past each multiple of ``every``), so any other is off the cadence."""
    first_in_interval: dict[int, int] = {}
    for s in sorted(int(s) for s in steps):
        first_in_interval.setdefault(s // every, s)
    return {int(s) for s in steps if s < every or first_in_interval[int(s) // every] != s}


def checkpoints_to_prune(steps: Sequence[int], keep: int, every: int | None = None) -> list[int]:
    """The env steps of the checkpoints to delete so that ``keep`` of ``steps`` remain.

    The newest always stays: a run resumes from it. With ``every``, the run's checkpoint
    cadence, a checkpoint that is not the first in its ``every``-long interval of env steps
    was written off the cadence (on a signal, or at the end of a run stopped early) and goes
    before any cadence checkpoint: stopping and resuming a run does not push out the cadence
    checkpoints, which are the points of its learning curve (benchmarks/eval_curve.py, the
    suite's curves). Within each kind the oldest go first."""
    steps = sorted(set(int(s) for s in steps))
    excess = len(steps) - max(int(keep), 1)
    if excess <= 0:
        return []
    older = steps[:-1]
    off = off_cadence(older, every) if every else set()
    return sorted(sorted(older, key=lambda s: (s not in off, s))[:excess])


def save_checkpoint(ckpt_dir: Path, agent_state: Any, loop: LoopState, config_hash: str,
                    keep: int = 3, every: int | None = None) -> Path:
    """Writes the checkpoint at ``loop.env_steps`` (atomically), then deletes older ones
    until ``keep`` remain (:func:`checkpoints_to_prune`; ``every`` is the run's cadence)."""
    payload = {
        "format_version": FORMAT_VERSION,
        "config_hash": str(config_hash),
        "loop": {
            "env_steps": int(loop.env_steps),
            "updates": int(loop.updates),
            "episodes": int(loop.episodes),
            "rng": np.asarray(loop.rng, np.uint32),
        },
        "agent": serialization.to_state_dict(jax.device_get(agent_state)),
    }
    path = checkpoint_path(ckpt_dir, loop.env_steps)
    atomic_write_bytes(path, serialization.msgpack_serialize(payload))
    by_steps = {checkpoint_steps(p): p for p in list_checkpoints(ckpt_dir)}
    for steps in checkpoints_to_prune(list(by_steps), keep, every):
        by_steps[steps].unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, agent_template: Any, config_hash: str) -> tuple[Any, LoopState]:
    """Restores a checkpoint into the structure of ``agent_template``."""
    path = Path(path)
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
        if not isinstance(payload, dict) or "agent" not in payload:
            raise ValueError("missing agent state")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint '{path}' not found") from None
    except Exception as e:  # msgpack raises a zoo of types on garbage input
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt ({type(e).__name__}); delete it to resume from "
            "the previous one") from None
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint '{path}' has format {payload.get('format_version')!r}, this omega "
            f"reads format {FORMAT_VERSION}; use the omega version that wrote it")
    stored_hash = payload.get("config_hash")
    if not hash_matches(stored_hash, config_hash):
        raise CheckpointError(
            f"checkpoint '{path}' was written with a different config (hash {stored_hash}, "
            f"now {config_hash}); restore the experiment's config.yaml or start a new "
            "experiment with 'omega make'")
    try:
        agent_state = serialization.from_state_dict(agent_template, payload["agent"])
        _check_shapes(agent_template, agent_state)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint '{path}' does not match the agent's structure ({e}); it was written "
            "by another agent or model config") from None
    loop = payload["loop"]
    return agent_state, LoopState(
        env_steps=int(loop["env_steps"]), updates=int(loop["updates"]),
        episodes=int(loop["episodes"]), rng=np.asarray(loop["rng"], np.uint32))


def _check_shapes(template: Any, restored: Any) -> None:
    def check(path, a, b):
        if np.shape(a) != np.shape(b):
            raise ValueError(f"{jax.tree_util.keystr(path)}: shape {np.shape(b)} != {np.shape(a)}")

    jax.tree_util.tree_map_with_path(check, template, restored)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    ckpts = list_checkpoints(ckpt_dir)
    return ckpts[-1] if ckpts else None


def checkpoint_steps(path: Path) -> int:
    """The env steps in a checkpoint's (or replay's) file name."""
    return int(Path(path).stem.split("_")[-1])


# ---------------------------------------------------------------------------------------------
# Replays (agents that learn from a replay buffer)


def replay_path(ckpt_dir: Path, env_steps: int) -> Path:
    return Path(ckpt_dir) / f"replay_{env_steps:012d}.msgpack"


def list_replays(ckpt_dir: Path) -> list[Path]:
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if _REPLAY_NAME.match(p.name))


def save_replay(ckpt_dir: Path, env_steps: int, replay: dict[str, Any],
                config_hash: str) -> Path:
    """Writes a replay's :meth:`~omega.replay.ReplayBuffer.state_dict` (numpy arrays and
    numbers) for the checkpoint at ``env_steps``, atomically."""
    payload = {"format_version": REPLAY_FORMAT_VERSION, "config_hash": str(config_hash),
               "env_steps": int(env_steps), "replay": replay}
    path = replay_path(ckpt_dir, env_steps)
    atomic_write_bytes(path, serialization.msgpack_serialize(payload))
    return path


def prune_replays(ckpt_dir: Path, keep_steps: int) -> list[Path]:
    """Deletes every replay file but the one of the checkpoint at ``keep_steps``."""
    removed = []
    for path in list_replays(ckpt_dir):
        if checkpoint_steps(path) != keep_steps:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def load_replay(path: Path, config_hash: str) -> dict[str, Any]:
    """A replay file's state dict; :class:`CheckpointError` when it is corrupt or was
    written with another config."""
    path = Path(path)
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
        if not isinstance(payload, dict) or not isinstance(payload.get("replay"), dict):
            raise ValueError("missing replay")
    except FileNotFoundError:
        raise CheckpointError(f"replay file '{path}' not found") from None
    except Exception as e:  # msgpack raises a zoo of types on garbage input
        raise CheckpointError(
            f"replay file '{path}' is corrupt ({type(e).__name__}); delete it to resume "
            "with an empty replay") from None
    if payload.get("format_version") != REPLAY_FORMAT_VERSION:
        raise CheckpointError(
            f"replay file '{path}' has format {payload.get('format_version')!r}, this omega "
            f"reads format {REPLAY_FORMAT_VERSION}; delete it to resume with an empty replay")
    if not hash_matches(payload.get("config_hash"), config_hash):
        raise CheckpointError(
            f"replay file '{path}' was written with a different config (hash "
            f"{payload.get('config_hash')}, now {config_hash}); restore the experiment's "
            "config.yaml or delete the file to resume with an empty replay")
    return payload["replay"]


def remove_stale_temp_files(ckpt_dir: Path) -> list[Path]:
    """Deletes the temp files of checkpoint and replay writes that a killed run left behind.
    Call only while no other run writes to ``ckpt_dir`` (under the experiment's lock)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    stale = sorted(p for p in ckpt_dir.iterdir() if _TEMP_NAME.match(p.name))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale

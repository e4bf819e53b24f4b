"""The experiment directory: what ``omega make`` creates and every other command reads.

Layout::

    DIR/
      config.yaml        the resolved config (every key, defaults filled in)
      checkpoints/       ckpt_<env_steps>.msgpack, the newest few
      episodes/          NLE ttyrec recordings, env_<i>/nle.<pid>.<n>.ttyrec3.bz2
      metrics.csv        one row per log interval, first column env_steps
      tb/                TensorBoard event files
      eval/              JSON written by 'omega eval --json' when given a bare name
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from omega.config import ExperimentConfig, config_to_yaml, load_config
from omega.errors import OmegaError

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
EPISODE_DIR = "episodes"
METRICS_FILE = "metrics.csv"
TB_DIR = "tb"
RUN_OUTPUTS = (CHECKPOINT_DIR, EPISODE_DIR, METRICS_FILE, TB_DIR, "wandb")


def make_experiment(config_path: str | Path, output_dir: str | Path) -> Path:
    """Validates the config and creates the experiment dir; refuses an existing one."""
    cfg = load_config(config_path)
    out = Path(output_dir)
    if out.exists():
        raise OmegaError(f"output dir '{out}' already exists; choose a new --output-dir "
                         "(or 'omega run --dir' it to continue that experiment)")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build it under a temp name and rename, so a failure leaves nothing half-made.
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
    try:
        (tmp / CONFIG_FILE).write_text(config_to_yaml(cfg))
        (tmp / CHECKPOINT_DIR).mkdir()
        (tmp / EPISODE_DIR).mkdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_experiment(exp_dir: str | Path) -> ExperimentConfig:
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise OmegaError(f"experiment dir '{exp_dir}' not found; create it with "
                         "'omega make --config FILE --output-dir DIR'")
    if not (exp_dir / CONFIG_FILE).is_file():
        raise OmegaError(f"'{exp_dir}' has no {CONFIG_FILE}; it is not an omega experiment "
                         "(create one with 'omega make')")
    return load_config(exp_dir / CONFIG_FILE)


def cleanup_experiment(exp_dir: str | Path, keep_checkpoint: bool = False) -> list[str]:
    """Deletes what runs produced, keeping config.yaml (and optionally the last checkpoint)."""
    exp_dir = Path(exp_dir)
    load_experiment(exp_dir)
    removed = []
    for name in RUN_OUTPUTS:
        path = exp_dir / name
        if not path.exists():
            continue
        if name == CHECKPOINT_DIR and keep_checkpoint:
            from omega.training.checkpoint import list_checkpoints

            for old in list_checkpoints(path)[:-1]:
                old.unlink()
                removed.append(str(old))
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(str(path))
    (exp_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
    (exp_dir / EPISODE_DIR).mkdir(exist_ok=True)
    return removed


def recorded_episodes(exp_dir: str | Path) -> list[Path]:
    """Recorded episode files, oldest first."""
    root = Path(exp_dir) / EPISODE_DIR
    files = [p for p in root.rglob("*.ttyrec*") if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime, str(p)))


def prune_episodes(exp_dir: str | Path, max_files: int) -> int:
    """Keeps the newest ``max_files`` recordings; returns how many were deleted."""
    files = recorded_episodes(exp_dir)
    doomed = files[:-max_files] if len(files) > max_files else []
    for path in doomed:
        path.unlink(missing_ok=True)
    return len(doomed)

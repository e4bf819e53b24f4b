"""Metrics sinks: ``metrics.csv`` and TensorBoard always, Weights & Biases on request."""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omega.errors import OmegaError


class CsvLogger:
    """Appends rows to a CSV file; the first column is always ``env_steps``.

    A column that appears later rewrites the file with the wider header, so the file is
    always a valid CSV for pandas or a spreadsheet.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.columns: list[str] = []
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                self.columns = next(csv.reader(f), [])

    def truncate_after(self, env_steps: int) -> None:
        """Drops rows logged after ``env_steps`` (work lost when a run was killed)."""
        if not self.path.exists():
            return
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if float(r["env_steps"]) <= env_steps]
        self._rewrite(rows)

    def _rewrite(self, rows: list[Mapping[str, Any]]) -> None:
        """Replaces the file (temp file + rename: a failed write leaves the old one)."""
        tmp = self.path.with_suffix(".csv.tmp")
        try:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def write(self, row: Mapping[str, Any]) -> None:
        row = {"env_steps": row["env_steps"], **row}
        new = [k for k in row if k not in self.columns]
        if new:
            old_rows = []
            if self.path.exists() and self.columns:
                with self.path.open(newline="") as f:
                    old_rows = list(csv.DictReader(f))
            columns = self.columns + new if self.columns else list(row)
            self.columns, old_columns = columns, self.columns
            try:
                self._rewrite(old_rows)
            except BaseException:
                self.columns = old_columns
                raise
        line = io.StringIO()
        csv.DictWriter(line, fieldnames=self.columns, extrasaction="ignore").writerow(
            {k: _fmt(v) for k, v in row.items()})
        # One write of the whole row; a failed one (a full disk) is cut off again, so the
        # file never ends in half a row.
        data = memoryview(line.getvalue().encode())
        with self.path.open("ab", buffering=0) as f:
            end = f.seek(0, os.SEEK_END)
            try:
                while data:
                    data = data[f.write(data):]
            except BaseException as e:
                f.truncate(end)
                if isinstance(e, OSError) and e.filename is None:
                    e.filename = str(self.path)
                raise


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


class MetricsLogger:
    """Fans a row of scalars out to CSV, TensorBoard and (optionally) W&B."""

    def __init__(self, exp_dir: Path, use_wandb: bool = False, wandb_cfg: Any = None,
                 run_name: str | None = None, config: Mapping[str, Any] | None = None):
        exp_dir = Path(exp_dir)
        self.csv = CsvLogger(exp_dir / "metrics.csv")
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(exp_dir / "tb"))
        self.wandb_run = None
        if use_wandb:
            self.wandb_run = _init_wandb(exp_dir, wandb_cfg, run_name, config)

    def write(self, row: Mapping[str, Any]) -> None:
        self.csv.write(row)
        step = int(row["env_steps"])
        for key, value in row.items():
            if key != "env_steps" and isinstance(value, (int, float)) and not math.isnan(value):
                self.tb.add_scalar(key, value, step)
        if self.wandb_run is not None:
            self.wandb_run.log(dict(row), step=step)

    def close(self) -> None:
        self.tb.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _init_wandb(exp_dir: Path, wandb_cfg: Any, run_name: str | None,
                config: Mapping[str, Any] | None):
    try:
        import wandb
    except ImportError:
        raise OmegaError("--wandb needs the wandb package; install it with "
                         "pip install 'omega[wandb]'") from None
    mode = getattr(wandb_cfg, "mode", "offline")
    if mode == "online" and not sys.stdin.isatty() and not os.environ.get("WANDB_API_KEY"):
        # wandb would prompt for a key; with no terminal to answer, log offline instead.
        print("omega: WANDB_API_KEY is not set and stdin is not a terminal; "
              "logging to W&B in offline mode (sync later with 'wandb sync')", file=sys.stderr)
        mode = "offline"
    return wandb.init(project=getattr(wandb_cfg, "project", "omega"),
                      entity=getattr(wandb_cfg, "entity", None), mode=mode,
                      dir=str(exp_dir), name=run_name, config=dict(config or {}),
                      resume="allow", id=run_name)

"""Progress output: a live bar on a terminal, one line per log interval otherwise."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any


def _fmt(x: float, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


class Progress:
    def __init__(self, total: int, start: int = 0, out=None):
        out = out if out is not None else sys.stdout
        self.total, self.out = total, out
        self._t0, self._s0 = time.perf_counter(), start
        self._bar = None
        if getattr(out, "isatty", lambda: False)():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[sps]} steps/s"), TextColumn("return {task.fields[ret]}"),
                TextColumn("success {task.fields[succ]}"), TimeRemainingColumn(),
                refresh_per_second=4)
            self._task = self._bar.add_task("train", total=total, completed=start,
                                            sps="-", ret="-", succ="-")
            self._bar.start()

    def update(self, env_steps: int, recent: Iterable[tuple[float, int, bool]]) -> None:
        if self._bar is None:
            return
        recent = list(recent)
        ret = sum(r for r, _, _ in recent) / len(recent) if recent else math.nan
        succ = sum(s for _, _, s in recent) / len(recent) if recent else math.nan
        sps = (env_steps - self._s0) / max(time.perf_counter() - self._t0, 1e-9)
        self._bar.update(self._task, completed=env_steps, sps=f"{sps:,.0f}",
                         ret=_fmt(ret, ".2f"), succ=_fmt(succ, ".2f"))

    def log(self, row: Mapping[str, Any]) -> None:
        if self._bar is not None:
            return
        print(f"[{row['env_steps']:>10,}/{self.total:,}] "
              f"{_fmt(row.get('env_steps_per_s', math.nan), ',.0f')} steps/s  "
              f"return {_fmt(row.get('episode_return', math.nan), '.3f')}  "
              f"success {_fmt(row.get('success_rate', math.nan), '.2f')}  "
              f"length {_fmt(row.get('episode_length', math.nan), '.1f')}",
              file=self.out, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

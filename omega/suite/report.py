"""A suite's summary: one row per entry (config) over its seeds, and learning-curve plots.

Works on the results files alone (``results/**/seed*.json``, ``baselines/*.json``), so the
results page (``benchmarks/results_page.py``) builds the same rows from results copied
into the repository.

The 95% CI of an entry's eval success is the Wilson score interval over all its final eval
episodes (100 per seed, pooled over the seeds); the per-seed values show the spread between
seeds, which that interval does not.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omega.training.evaluate import wilson_ci95
from omega.training.files import FILE_MODE

SOLVED = 0.9


def read_results(out: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(run results, random-policy baselines by env id) found under a suite output dir."""
    results = [json.loads(p.read_text()) for p in sorted((out / "results").rglob("seed*.json"))]
    baselines = {}
    for p in sorted((out / "baselines").glob("*.json")):
        data = json.loads(p.read_text())
        baselines[data["env_id"]] = data
    return results, baselines


def entry_rows(entries: Iterable[dict[str, Any]], results: list[dict[str, Any]],
               baselines: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per entry ({name, agent_type, env_id, config, budget, seeds}) with its runs'
    results; ``spec_hashes`` (optional, per seed) keep out results of another config."""
    rows = []
    for entry in entries:
        hashes = entry.get("spec_hashes") or {}
        runs = []
        for seed in entry["seeds"]:
            match = [r for r in results if r.get("name") == entry["name"] and r["seed"] == seed
                     and (seed not in hashes or r.get("spec_hash") == hashes[seed])]
            if not match:
                continue
            r = match[-1]
            final = r.get("final") or {}
            runs.append({
                "seed": seed, "status": r.get("status", "done"), "spec_hash": r.get("spec_hash"),
                "success_rate": final.get("success_rate"),
                "success_rate_ci95": final.get("success_rate_ci95"),
                "successes": sum(bool(s) for s in final.get("successes", [])),
                "episodes": len(final.get("successes", [])),
                "mean_return": final.get("mean_return"),
                "endings": final.get("ending_counts"),
                "env_steps": r.get("env_steps"),
                "steps_to_success_0.9": r.get("steps_to_success_0.9"),
                "train_wall_s": r.get("train_wall_s"), "eval_wall_s": r.get("eval_wall_s"),
                "killed_segments": r.get("killed_segments", 0),
                "host": r.get("host", {}), "gif": r.get("gif"), "curve": r.get("curve", []),
            })
        rates = [x["success_rate"] for x in runs if x["success_rate"] is not None]
        k = sum(x["successes"] for x in runs)
        n = sum(x["episodes"] for x in runs)
        base = baselines.get(entry["env_id"])
        rows.append({
            **{key: entry[key] for key in ("name", "agent_type", "env_id", "config", "budget")},
            "seeds": list(entry["seeds"]), "runs": runs,
            "success_mean": sum(rates) / len(rates) if rates else None,
            "success_ci95": list(wilson_ci95(k, n)) if n else None,
            "random_success": base["eval"]["success_rate"] if base else None,
            "random_return": base["eval"]["mean_return"] if base else None,
        })
    return rows


def suite_entries(suite: Any) -> list[dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for run in suite.runs:
        e = entries.setdefault(run.name, {
            "name": run.name, "agent_type": run.agent_type, "env_id": run.env_id,
            "config": run.config_file, "budget": run.budget, "seeds": [], "spec_hashes": {}})
        e["seeds"].append(run.seed)
        e["spec_hashes"][run.seed] = run.spec_hash
    return list(entries.values())


def fmt_steps(n: int | None) -> str:
    if n is None:
        return "–"
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1e6:g}M"
    if n >= 1000:
        return f"{n / 1000:.0f}k" if n % 1000 == 0 or n >= 100_000 else f"{n / 1000:.1f}k"
    return str(n)


def fmt_minutes(seconds: list[float]) -> str:
    mins = sorted(s / 60 for s in seconds if s is not None)
    if not mins:
        return "–"
    lo, hi = mins[0], mins[-1]
    f = (lambda x: f"{x:.1f}") if hi < 10 else (lambda x: f"{x:.0f}")
    return f"{f(lo)} min" if f(lo) == f(hi) else f"{f(lo)}–{f(hi)} min"


def row_cells(row: dict[str, Any]) -> dict[str, str]:
    """The markdown cells of a row (shared by the summary and the results page)."""
    runs = row["runs"]
    done = [r for r in runs if r["success_rate"] is not None]
    if not done:
        missing = "not run" if not runs else "no evaluation"
        return {"success": missing, "per_seed": "–", "ci": "–", "steps": "–", "wall": "–",
                "failures": "–"}
    per_seed = ", ".join(f"{r['success_rate']:.2f}" + (" (diverged)" if r["status"] ==
                                                       "diverged" else "") for r in done)
    if len(done) < len(row["seeds"]):
        per_seed += f" ({len(done)} of {len(row['seeds'])} seeds)"
    lo, hi = row["success_ci95"]
    steps = ", ".join(fmt_steps(r["steps_to_success_0.9"]) if r["steps_to_success_0.9"]
                      is not None else "not reached" for r in done)
    return {"success": f"{row['success_mean']:.2f}", "per_seed": per_seed,
            "ci": f"[{lo:.2f}, {hi:.2f}]", "steps": steps,
            "wall": fmt_minutes([r["train_wall_s"] for r in done]),
            "failures": fmt_failures([r.get("endings") for r in done])}


_FAILURE_WORDS = {"died": "died", "time_limit": "time limit", "ended": "other ending"}


def fmt_failures(counts: list[dict[str, int] | None]) -> str:
    """How the failed eval episodes of the runs' last evaluations end, pooled over seeds:
    e.g. 'died 43, time limit 9' ('–' where an evaluation predates the endings)."""
    if not counts or any(c is None for c in counts):
        return "–"
    total = {k: sum(c.get(k, 0) for c in counts) for k in _FAILURE_WORDS}
    parts = [f"{word} {total[k]}" for k, word in _FAILURE_WORDS.items() if total[k]]
    return ", ".join(parts) if parts else "none"


def summary_markdown(name: str, rows: list[dict[str, Any]], plot_dir: str | None = None) -> str:
    lines = [f"# Suite {name}", "",
             "Eval success of each run's last checkpoint on the suite's fixed eval episodes; "
             "95% CI: Wilson interval over the episodes of all seeds. Env steps to 0.9: the "
             "first evaluated checkpoint with eval success >= 0.9. Wall: training only, per "
             "run. Failed episodes: how the last evaluations' unsolved episodes end, all "
             "seeds together.", "",
             "| task | agent | entry | budget | eval success | per seed | 95% CI | failed "
             "episodes | env steps to 0.9 | wall per run | random policy |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        c = row_cells(row)
        rnd = "–" if row["random_success"] is None else f"{row['random_success']:.2f}"
        lines.append(f"| {row['env_id']} | {row['agent_type']} | `{row['name']}` | "
                     f"{fmt_steps(row['budget'])} | {c['success']} | {c['per_seed']} | "
                     f"{c['ci']} | {c['failures']} | {c['steps']} | {c['wall']} | {rnd} |")
    if plot_dir is not None:
        lines += ["", "## Learning curves", ""]
        for env_id in dict.fromkeys(r["env_id"] for r in rows):
            lines.append(f"![{env_id}]({plot_dir}/{env_id}.png)")
    return "\n".join(lines) + "\n"


def _aggregate(curves: list[list[dict[str, Any]]]) -> tuple[list, list, list, list]:
    """Mean env steps, mean / min / max success per checkpoint index over the runs."""
    n = max((len(c) for c in curves), default=0)
    xs, mean, lo, hi = [], [], [], []
    for i in range(n):
        pts = [c[i] for c in curves if len(c) > i]
        ys = [p["success_rate"] for p in pts]
        xs.append(sum(p["env_steps"] for p in pts) / len(pts))
        mean.append(sum(ys) / len(ys))
        lo.append(min(ys))
        hi.append(max(ys))
    return xs, mean, lo, hi


def plot_task(env_id: str, rows: list[dict[str, Any]], path: Path) -> bool:
    """Eval success against env steps for every entry on ``env_id``: the mean over seeds
    as a line, the band from the lowest to the highest seed, the random policy dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["env_id"] == env_id]
    curves = [(r, [run["curve"] for run in r["runs"] if run["curve"]]) for r in rows]
    if not any(c for _, c in curves):
        return False
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for row, cs in curves:
        if not cs:
            continue
        xs, mean, lo, hi = _aggregate(cs)
        label = f"{row['name']} ({len(cs)} seed{'s' if len(cs) > 1 else ''})"
        (line,) = ax.plot(xs, mean, marker="o", markersize=3, label=label)
        if len(cs) > 1:
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    randoms = {r["random_success"] for r in rows if r["random_success"] is not None}
    for value in randoms:
        ax.axhline(value, color="grey", linestyle="--", linewidth=1,
                   label=f"random policy ({value:.2f})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval success")
    ax.set_title(env_id, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp.png")
    os.close(fd)
    try:
        fig.savefig(tmp)
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def _atomic_text(path: Path, text: str) -> None:
    from omega.training.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


def write_summary(suite: Any) -> dict[str, Any]:
    """summary.json, summary.md and plots/<env id>.png of a suite's output dir, from the
    results there (runs not finished yet show as 'not run')."""
    out = suite.output_dir
    results, baselines = read_results(out)
    rows = entry_rows(suite_entries(suite), results, baselines)
    plot_dir = out / "plots"
    plots = sum(plot_task(env_id, rows, plot_dir / f"{env_id}.png")
                for env_id in dict.fromkeys(r["env_id"] for r in rows))
    finished = sum(len(r["runs"]) for r in rows)
    summary = {
        "suite": suite.name, "suite_file": str(suite.path),
        "eval": {"episodes": suite.eval_episodes, "seed": suite.eval_seed},
        "runs_planned": len(suite.runs), "runs_finished": finished,
        "rows": [{k: v for k, v in r.items()} for r in rows],
        "baselines": {k: {"success_rate": v["eval"]["success_rate"],
                          "mean_return": v["eval"]["mean_return"],
                          "success_rate_ci95": v["eval"]["success_rate_ci95"]}
                      for k, v in baselines.items()},
    }
    for row in summary["rows"]:
        for run in row["runs"]:
            run.pop("curve", None)
    md = summary_markdown(suite.name, rows, "plots")
    _atomic_text(out / "summary.json", json.dumps(summary, indent=2, default=_nan) + "\n")
    _atomic_text(out / "summary.md", md)
    return {"markdown": out / "summary.md", "json": out / "summary.json", "plots": plots,
            "plot_dir": plot_dir}


def _nan(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    raise TypeError(f"not JSON serialisable: {x!r}")

"""Writes docs/results.md (and the README's results extract) from a suite's results JSON.

    # after 'omega suite configs/suites/original.yaml' (or part of it):
    python benchmarks/results_page.py --collect experiments/suites/original
    # regenerate from the results already copied into the repository:
    python benchmarks/results_page.py

``--collect DIR`` first copies the suite output's results (``DIR/results/**/seed*.json``)
and random-policy baselines (``DIR/baselines/*.json``) into ``--data`` (default
``benchmarks/results/suite_original/``), and one GIF per solved entry into
``docs/results/gifs/``. The page is then built from ``--data`` alone: one row per entry of
the suite file (rows without results say "not run"), learning curves drawn from the results
into ``docs/results/plots/``, the GIFs, and links to the experiment log in docs/experiments/.
The README's block between ``<!-- results:begin -->`` and ``<!-- results:end -->`` is
replaced by a short extract: one row per task.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import textwrap
from pathlib import Path

import yaml

from omega.envs import SUCCESS_FROM_REWARD_PREFIXES
from omega.suite.report import (
    entry_rows,
    fmt_steps,
    plot_task,
    row_cells,
    suite_entries,
)
from omega.suite.spec import load_suite
from omega.training.checkpoint import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
OBSERVATIONS = "observations.yaml"
EXPERIMENTS = [
    ("env_step_rate.md", "the vectorised env's step rate"),
    ("ppo_throughput.md", "PPO's training throughput against the raw env (`omega bench`)"),
    ("ppo_learning.md", "PPO learning results on Room-5x5, Room-Random-15x15, River-Narrow, "
                        "Corridor-R2"),
    ("muzero_learning.md", "MuZero learning results: Room-5x5, Room-Random-15x15, "
                           "River-Narrow, KeyRoom-S5, search speed"),
    ("muzero_extensions.md", "MuZero extensions: Stochastic MuZero, search policies, "
                             "reanalyze, the consistency loss, the replay ratio"),
    ("muzero_memory.md", "recurrent memory on the memory task"),
    ("nethack_score.md", "the full game: NetHackScore-v0, PPO against the random agent"),
    ("ray_backend.md", "the Ray backend against the single-process loop"),
    ("muzero_resume.md", "a MuZero run killed and resumed with the replay saved with its "
                         "checkpoint"),
    ("muzero_targets.md", "MuZero's targets: Q normalisation, reanalyze write-back, a target "
                          "network, considered actions, the consistency loss"),
    ("reward_shaping.md", "reward shaping: a kill bonus and an episodic cell bonus "
                          "(CorridorBattle, Room-Ultimate-15x15, Corridor-R2, MazeWalk)"),
    ("visited_cells.md", "the visited cells in the observation (`visited_crop`)"),
    ("ppo_late_collapse.md", "PPO's late collapse on short tasks and the learning-rate decay "
                             "that prevents it"),
    ("memento.md", "Memento-Short-F2: the waiting trap, reward and entropy settings"),
    ("minihack_step_penalty.md", "MiniHack's step penalty and the waiting trap (KeyRoom-S5, "
                                 "MazeWalk, Room-Ultimate-15x15, Corridor-R2), PPO and MuZero"),
    ("muzero_exploration.md", "MuZero on the cell-bonus exploration tasks (MazeWalk-15x15, "
                              "Corridor-R2): what its model predicts, and three changes tried"),
]


def collect(suite_dir: Path, data: Path, gif_dir: Path) -> None:
    n = 0
    for src in sorted((suite_dir / "results").rglob("seed*.json")):
        dst = data / "results" / src.relative_to(suite_dir / "results")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        n += 1
        result = json.loads(src.read_text())
        gif = result.get("gif")
        target = gif_dir / (result["name"].replace("/", "__") + ".gif")
        if gif and (suite_dir / gif).is_file() and not target.exists():
            gif_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(suite_dir / gif, target)
    for src in sorted((suite_dir / "baselines").glob("*.json")):
        dst = data / "baselines" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        n += 1
    print(f"results_page: copied {n} results file(s) from {suite_dir} into {data}")


def read_data(data: Path) -> tuple[list[dict], dict[str, dict]]:
    results = [json.loads(p.read_text()) for p in sorted((data / "results").rglob("seed*.json"))]
    baselines = {}
    for p in sorted((data / "baselines").glob("*.json")):
        b = json.loads(p.read_text())
        baselines[b["env_id"]] = b
    return results, baselines


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _repo(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def machines(results: list[dict], baselines: dict[str, dict]) -> str:
    hosts: dict[str, dict] = {}
    for r in results:
        h = r.get("host") or {}
        entry = hosts.setdefault(h.get("host", "?"), {"cpus": h.get("cpus"), "loads": [],
                                                      "jobs": set()})
        if h.get("load_avg"):
            entry["loads"].append(h["load_avg"][0])
        entry["jobs"].add(h.get("jobs"))
    parts = []
    for name, h in hosts.items():
        load = (f", 1-minute load average {min(h['loads']):.1f}–{max(h['loads']):.1f} when runs "
                "finished" if h["loads"] else "")
        jobs = ", ".join(str(j) for j in sorted(j for j in h["jobs"] if j))
        parts.append(f"{h['cpus']} CPU cores ({name}{load}; runs at a time: {jobs or '?'})")
    return "; ".join(parts)


def clock_note(suite, results: list[dict], baselines: dict[str, dict]) -> str:
    """How the runs stand to NetHack's clock: it reads the moon phase, Friday the 13th and
    the time of day from the wall clock unless ``env.options.fix_moon_phase`` is set, so a
    seed can play differently on another date."""
    fixed = sum(bool((r.config["env"].get("options") or {}).get("fix_moon_phase"))
                for r in suite.runs)
    dates = sorted({d["finished"][:10] for d in (*results, *baselines.values())
                    if d.get("finished")})
    how = ("every run keeps the clock (`fix_moon_phase` off in every config's `env.options`)"
           if fixed == 0 else
           f"{fixed} of {len(suite.runs)} runs set `env.options: {{fix_moon_phase: true}}` "
           "(moon phase and time of day from the seed); the others keep the clock")
    when = (f"; the results here finished on {', '.join(dates)} (each results JSON has its "
            "time)" if dates else "")
    return ("- *The clock*: NetHack reads the wall clock (moon phase, Friday the 13th, night), "
            "so an episode seed can play differently on another date: " + how + when + ".")


def penalty_note(suite) -> str | None:
    """Which configs turn off MiniHack's -0.01 for an action that takes no game time
    (``env.options.penalty_step``): their training reward differs from the task's default,
    their success does not."""
    changed = sorted({run.name for run in suite.runs
                      if (run.config["env"].get("options") or {}).get("penalty_step") is not None})
    if not changed:
        return None
    names = ", ".join(f"`{name}`" for name in changed)
    return ("- *MiniHack's step penalty*: MiniHack takes 0.01 from the reward for every action "
            "that uses no game time (walking into a wall, picking up where nothing lies, "
            "applying with nothing to apply). " + names
            + (" sets" if len(changed) == 1 else " set") + " `env.options.penalty_step` "
            "(see each config's comment for why); success is what it is for the other rows, "
            "only the training reward (and the return) changes.")


def shaping_note(suite) -> str | None:
    """Which configs train on a shaped reward (``env.reward_shaping``): their training reward
    (and eval return) differ from the task's, their success does not."""
    shaped = {}
    for run in suite.runs:
        keys = {k: v for k, v in (run.config["env"].get("reward_shaping") or {}).items() if v}
        if keys:
            shaped[run.name] = ", ".join(f"{k} {v:g}" for k, v in sorted(keys.items()))
    if not shaped:
        return None
    names = "; ".join(f"`{name}` ({how})" for name, how in sorted(shaped.items()))
    return ("- *Reward shaping*: " + names + " train on the task's reward plus "
            "`env.reward_shaping` terms (see each config's comment for why; "
            "docs/configuration.md says what each pays). Success is the task's; the return "
            "includes the shaping.")


def actions_note(suite) -> str | None:
    """Which configs act with more than the task's own actions (``env.extra_actions``,
    ``env.action_set: full``)."""
    added = {}
    for run in suite.runs:
        env = run.config["env"]
        extra = env.get("extra_actions") or []
        if env.get("action_set", "default") != "default":
            added[run.name] = f"action_set {env['action_set']}"
        elif extra:
            added[run.name] = "+ " + ", ".join(extra)
    if not added:
        return None
    names = "; ".join(f"`{name}` ({how})" for name, how in sorted(added.items()))
    return ("- *Actions*: " + names + " act with more than the task's own actions "
            "(`env.extra_actions`: NetHack commands added after them; see each config's "
            "comment for why).")


def read_observations(data: Path) -> dict[str, str]:
    """``data/observations.yaml``: entry name -> what its recordings show (written by whoever
    watched them; the page quotes it under the row's numbers)."""
    path = data / OBSERVATIONS
    if not path.is_file():
        return {}
    notes = yaml.safe_load(path.read_text()) or {}
    if not isinstance(notes, dict) or not all(isinstance(v, str) for v in notes.values()):
        raise SystemExit(f"results_page: {path} must map entry names to text")
    return notes


def misses(rows: list[dict], observations: dict[str, str]) -> list[str]:
    """The rows whose finished runs fall short of 0.9: their numbers and what they do."""
    lines = []
    for row in rows:
        finals = [run["success_rate"] for run in row["runs"]
                  if run.get("success_rate") is not None]
        if not finals or sum(finals) / len(finals) >= 0.9:
            continue
        c = row_cells(row)
        seen = observations.get(row["name"], "Not yet looked at in its recordings.")
        lines.append(f"- **{row['env_id']}, {row['agent_type']}** (`{row['name']}`): eval "
                     f"success {c['success']}; failed episodes: {c['failures']}. {seen}")
    return lines


def page(suite, rows: list[dict], results: list[dict], baselines: dict[str, dict],
         out: Path, plot_dir: Path, gif_dir: Path, data: Path) -> str:
    done = sum(len(r["runs"]) for r in rows)
    tasks = list(dict.fromkeys(r["env_id"] for r in rows))
    lines = [
        "# Results",
        "",
        "<!-- Generated by benchmarks/results_page.py from "
        f"{_repo(data)}/; do not edit by hand. -->",
        "",
        f"The original's task suite, `{_repo(suite.path)}`: "
        f"{len(tasks)} tasks, PPO and MuZero on each, every run evaluated at "
        f"{suite.checkpoints} checkpoints on {suite.eval_episodes} fixed eval episodes (seeds "
        f"{suite.eval_seed}–{suite.eval_seed + suite.eval_episodes - 1}), and a uniformly "
        "random policy on the same episodes. Reproduce it and this page with:",
        "",
        "```bash",
        f"omega suite {_repo(suite.path)} --jobs 2",
        f"python benchmarks/results_page.py --collect {suite.output_dir.as_posix()}",
        "```",
        "",
        f"**Status: {done} of {len(suite.runs)} runs finished; the random policy measured on "
        f"{sum(t in baselines for t in tasks)} of {len(tasks)} tasks.** Rows without a "
        "finished run say \"not run\".",
        "",
        "How to read the table:",
        "",
        "- *Eval success*: the share of the eval episodes the run's last checkpoint solves, in "
        "each config's eval mode (PPO samples from its policy, MuZero from its search policy "
        "without exploration noise); the mean over seeds, each seed's value, and the 95% "
        "Wilson interval over the eval episodes of all seeds pooled (it does not include the "
        "spread between seeds: read the per-seed values for that).",
        "- *Success means what the task rewards.* MiniHack's end status says \"successful\" "
        "whenever an episode reaches one of a level's endings, right or wrong: on "
        "Memento-Short-F2 a uniformly random policy scores 1.00 by it and 0.27 by the final "
        "reward (30 episodes from seed 1000000 with the env's 5000-step limit, mean return "
        "-2.73). On the tasks that can end with a penalty (" + ", ".join(f"`{p}*`" for p in SUCCESS_FROM_REWARD_PREFIXES)
        + ") a success is an episode that ends with a final reward > 0 (docs/environments.md).",
        "- *Failed episodes*: how the unsolved episodes of the last evaluations end, all seeds "
        "together: *died* (NetHack's death), *time limit* (cut off by the episode's step "
        "limit), *other ending* (the task ended it otherwise, e.g. the wrong exit); the "
        "recordings of a run's GIF episodes show more (`omega eval --record`).",
        "- *Env steps to 0.9*: the env steps of the first evaluated checkpoint with eval "
        "success >= 0.9, per seed.",
        "- *Wall per run*: training only (evaluation not included), on "
        + (machines(results, baselines) if results else "the machine each run reports in "
           "its results JSON")
        + ". A load average above the core count means other jobs shared the cores (on the "
        "project's 2-core machines other trainings usually run alongside), so wall times are "
        "rough and comparable only within one session.",
        "- *Random policy*: a uniformly random policy on the same eval episodes, with the "
        "task set up as the first config that names it sets it up (its time limit included).",
        clock_note(suite, results, baselines),
        *filter(None, [penalty_note(suite), shaping_note(suite), actions_note(suite)]),
        "",
        "| task | agent | config | budget | eval success | per seed | 95% CI | failed episodes "
        "| env steps to 0.9 | wall per run | random policy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    stale = False
    for row in rows:
        c = row_cells(row)
        rnd = "–" if row["random_success"] is None else f"{row['random_success']:.2f}"
        cfg = f"[`{row['name']}`](../configs/{row['config'].removeprefix('../')})"
        if any(run.get("stale") for run in row["runs"]):
            cfg += " †"
            stale = True
        lines.append(f"| {row['env_id']} | {row['agent_type']} | {cfg} | "
                     f"{fmt_steps(row['budget'])} | {c['success']} | {c['per_seed']} | {c['ci']} "
                     f"| {c['failures']} | {c['steps']} | {c['wall']} | {rnd} |")
    if stale:
        lines += ["", "† measured with an earlier version of the config (or of the suite's "
                  "settings) than the one shipped now; rerun the suite in a new output dir to "
                  "measure the current one."]
    missed = misses(rows, read_observations(data))
    if missed:
        lines += ["", "## Misses: what the agent does instead", "",
                  "Every finished row below 0.9, with how its eval episodes end and what its "
                  f"recorded eval episodes show (`{_repo(data / OBSERVATIONS)}`, from `omega "
                  "eval --record DIR --episodes N` on the run's last checkpoint and `omega play "
                  "--file DIR`).", ""] + missed
    plotted = [t for t in tasks if (plot_dir / f"{t}.png").is_file()
               and any(r["runs"] for r in rows if r["env_id"] == t)]
    lines += ["", "## Learning curves", "",
              "Eval success against env steps: per config the mean over its seeds (line) and "
              "the band from the lowest to the highest seed; the random policy dashed.", ""]
    if plotted:
        lines += [f"![{t}]({_rel(plot_dir / (t + '.png'), out.parent)})" for t in plotted]
    else:
        lines.append("None yet: no run of the suite has finished.")
    gifs = [(r, gif_dir / (r["name"].replace("/", "__") + ".gif")) for r in rows]
    gifs = [(r, g) for r, g in gifs if g.is_file()]
    lines += ["", "## Episodes", "",
              "One episode of the trained agent per solved task and agent (last eval success "
              ">= 0.9): its last checkpoint plays the first 10 eval seeds, recorded by `omega "
              "eval --record`, and the first episode it solves is drawn by `omega play --gif`.",
              ""]
    if gifs:
        for r, g in gifs:
            lines += [f"**{r['env_id']}, {r['agent_type']}** (`{r['name']}`)", "",
                      f"![{r['name']}]({_rel(g, out.parent)})", ""]
    else:
        lines.append("None yet: no task is solved by a finished run.")
    lines += ["", "## Experiment log", "",
              "The experiments behind the configs and the agents, with their commands and raw "
              "numbers, one file per topic (docs/experiments/; its "
              "[README](experiments/README.md) says what each found):", ""]
    lines += [f"- [{name}](experiments/{name}): {what}" for name, what in EXPERIMENTS]
    return "\n".join(wrap(lines)).rstrip() + "\n"


def wrap(lines: list[str], width: int = 96) -> list[str]:
    """Wraps prose lines and '- ' bullets (tables, code, headings and comments stay)."""
    out: list[str] = []
    code = False
    for line in lines:
        if line.startswith("```"):
            code = not code
        if code or not line or line.startswith(("|", "#", "<!--", "!", "```")):
            out.append(line)
        elif line.startswith("- "):
            out.extend(textwrap.wrap(line, width, subsequent_indent="  ",
                                     break_on_hyphens=False, break_long_words=False))
        else:
            out.extend(textwrap.wrap(line, width, break_on_hyphens=False,
                                     break_long_words=False))
    return out


def readme_extract(rows: list[dict]) -> str:
    tasks = list(dict.fromkeys(r["env_id"] for r in rows))
    lines = [BEGIN,
             "Eval success on 100 fixed episodes (seeds 1000000–1000099) of the original's "
             "task suite (`configs/suites/original.yaml`: PPO at 1M, MuZero at 500k env steps; "
             "the mean over seeds), beside a uniformly random policy. Generated by "
             "`benchmarks/results_page.py`; per-seed values, 95% CIs, env steps to 0.9, wall "
             "times, learning curves and GIFs: [docs/results.md](docs/results.md).",
             "",
             "| task | PPO | MuZero | random policy |",
             "|---|---|---|---|"]
    for task in tasks:
        cells = []
        for agent in ("ppo", "muzero"):
            sel = [r for r in rows if r["env_id"] == task and r["agent_type"] == agent]
            done = [r for r in sel if r["success_mean"] is not None]
            if not done:
                cells.append("not run")
                continue
            r = done[0]
            n = len([x for x in r["runs"] if x["success_rate"] is not None])
            cells.append(f"{r['success_mean']:.2f} ({n} seed{'s' if n > 1 else ''})")
        rnd = next((r["random_success"] for r in rows if r["env_id"] == task
                    and r["random_success"] is not None), None)
        cells.append("–" if rnd is None else f"{rnd:.2f}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines.append(END)
    return "\n".join(wrap(lines))


def write_text(path: Path, text: str) -> None:
    """Atomically, keeping the file's permissions (new files: 0644)."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    atomic_write_bytes(path, text.encode())
    path.chmod(mode)


def render(suite_file: Path, data: Path, out: Path, assets: Path,
           plot: bool = False) -> tuple[str, str]:
    """(the results page, the README's results block) from the results in ``data``; with
    ``plot`` the learning curves are drawn into ``assets/plots`` first."""
    plot_dir, gif_dir = assets / "plots", assets / "gifs"
    suite = load_suite(suite_file)
    results, baselines = read_data(data)
    entries = suite_entries(suite)
    current = {(e["name"], seed): h for e in entries for seed, h in e.pop("spec_hashes").items()}
    rows = entry_rows(entries, results, baselines)
    for row in rows:  # results of a config that changed since they were made
        for run in row["runs"]:
            run["stale"] = run.get("spec_hash") != current.get((row["name"], run["seed"]))
    if plot:
        for task in dict.fromkeys(r["env_id"] for r in rows):
            plot_task(task, rows, plot_dir / f"{task}.png")
    return (page(suite, rows, results, baselines, out, plot_dir, gif_dir, data),
            readme_extract(rows))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", type=Path, default=ROOT / "configs/suites/original.yaml",
                   help="the suite file whose entries are the rows")
    p.add_argument("--collect", type=Path, default=None, metavar="SUITE_OUTPUT_DIR",
                   help="first copy results, baselines and GIFs from a suite's output dir")
    p.add_argument("--data", type=Path, default=ROOT / "benchmarks/results/suite_original")
    p.add_argument("--out", type=Path, default=ROOT / "docs/results.md")
    p.add_argument("--assets", type=Path, default=ROOT / "docs/results",
                   help="plots/ and gifs/ for the page")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = p.parse_args(argv)
    data, out, assets = args.data.resolve(), args.out.resolve(), args.assets.resolve()
    if args.collect is not None:
        if not args.collect.is_dir():
            p.error(f"--collect: '{args.collect}' is not a directory (a suite's output dir)")
        collect(args.collect, data, assets / "gifs")
    text, block = render(args.suite.resolve(), data, out, assets, plot=True)
    write_text(out, text)
    print(f"results_page: wrote {out}")
    readme = args.readme.read_text()
    if BEGIN in readme and END in readme:
        start, end = readme.index(BEGIN), readme.index(END) + len(END)
        write_text(args.readme, readme[:start] + block + readme[end:])
        print(f"results_page: updated the results extract in {args.readme}")
    else:
        print(f"results_page: {args.readme} has no {BEGIN} ... {END} block; not updated")


if __name__ == "__main__":
    main()

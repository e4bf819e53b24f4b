"""The ``omega`` command: make, run, eval, play, cleanup, bench, suite, envs.

Every error prints one line (``omega: error: ...``) and exits with a code that says what
kind (``omega.errors``): 2 a problem the user can fix, 3 a file that could not be read or
written, 4 training diverged; a run stopped by SIGINT / SIGTERM exits 130 / 143.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import textwrap
from pathlib import Path

from omega.errors import EXIT_IO, IOFailure, OmegaError, describe_os_error

EXAMPLES = """\
examples:
  omega make --config configs/ppo/room_5x5.yaml --output-dir experiments/room5
  omega run --dir experiments/room5            # trains; resumes if it has a checkpoint
  omega run --dir experiments/room5 --device gpu:all   # data-parallel over all GPUs
  omega run --dir experiments/room5 --backend ray --num-actors 2   # Ray actors + learner
  omega eval --dir experiments/room5 --episodes 100 --seed 0 --json eval.json
  omega play --file experiments/room5 --gif episode.gif   # newest recorded episode
  omega suite configs/suites/quick.yaml --jobs 2   # train + evaluate a suite, resumably
  omega envs                                   # list the environment ids
"""


def _add_make(sub) -> None:
    p = sub.add_parser("make", help="create an experiment dir from a config file",
                       description="Validate a YAML config and create a new experiment dir "
                                   "holding the resolved config. Refuses an existing dir.")
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/ppo/room_5x5.yaml")
    p.add_argument("--output-dir", required=True, help="experiment dir to create (must not exist)")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="train (resumes from the newest checkpoint)",
                       description="Train the experiment's agent. Resumes from the newest "
                                   "checkpoint in DIR/checkpoints when there is one (MuZero: "
                                   "with the replay saved with it). Ctrl-C or SIGTERM saves a "
                                   "checkpoint and exits (130 / 143). One run per dir at a "
                                   "time: a second one exits 2 naming the first.")
    p.add_argument("--dir", required=True, help="experiment dir made by 'omega make'")
    p.add_argument("--device", default="cpu",
                   help="cpu (default), gpu or gpu:N: one device; gpu:all (or cpu:all): "
                        "data-parallel learning over every visible device of that kind")
    p.add_argument("--steps", type=int, default=None,
                   help="total env steps to train to (default: train.total_env_steps); "
                        "the learning-rate and temperature schedules still follow "
                        "train.total_env_steps, so past it they stay at their last values")
    p.add_argument("--wandb", action="store_true",
                   help="also log to Weights & Biases (mode from the config's wandb.mode, "
                        "offline by default; never prompts without a terminal)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local (default): one process acts and learns in turn; ray: Ray "
                        "actors act, this process learns (needs pip install "
                        "'omega[distributed]'; docs/distributed.md)")
    p.add_argument("--address", default=None,
                   help="with --backend ray: the Ray cluster to join (e.g. ray://HOST:10001 "
                        "or HOST:6379); default: start a local Ray")
    p.add_argument("--num-actors", type=int, default=None,
                   help="with --backend ray: Ray actors, each with env.num_envs envs "
                        "(default: distributed.num_actors; MuZero learns from rounds of one "
                        "rollout per actor)")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate the newest checkpoint on fixed seeds",
                       description="Play N episodes with seeds S, S+1, ..., S+N-1 using the "
                                   "newest checkpoint (greedy or sampled actions as eval.greedy "
                                   "says, unless --greedy or --sample is given) and "
                                   "report mean return, success rate and mean length with 95% "
                                   "confidence intervals.")
    p.add_argument("--dir", required=True, help="experiment dir")
    p.add_argument("--episodes", type=int, default=None, help="episodes (default: eval.episodes)")
    p.add_argument("--seed", type=int, default=None, help="first seed (default: eval.seed)")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--checkpoint", default=None, help="a checkpoint file (default: newest)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--greedy", dest="greedy", action="store_const", const=True, default=None,
                      help="argmax actions (default: eval.greedy of the config)")
    mode.add_argument("--sample", dest="greedy", action="store_const", const=False,
                      help="sample actions from the policy")
    p.add_argument("--current-params", action="store_true",
                   help="MuZero with muzero.eval_params_ema > 0: act with the params of the "
                        "last train step instead of their moving average")
    p.add_argument("--num-simulations", type=int, default=None, metavar="SIMS",
                   help="MuZero only: search with this many simulations per action "
                        "(default: muzero.num_simulations the run trained with)")
    p.add_argument("--device", default="cpu", help="cpu (default), gpu or gpu:N")
    p.add_argument("--record", default=None, metavar="DIR",
                   help="also write every episode as an NLE ttyrec, DIR/seed<S>.ttyrec3.bz2 "
                        "(a new or empty dir); replay one with 'omega play --file'")


def _add_play(sub) -> None:
    p = sub.add_parser("play", help="replay a recorded episode in the terminal or as a GIF",
                       description="Replay one episode of an NLE ttyrec recording (a file "
                                   "can hold several), without NetHack's quit and end-of-game "
                                   "screens. FILE may be an experiment dir (or a dir of 'omega "
                                   "eval --record'): its newest recording with a finished "
                                   "episode is used.")
    p.add_argument("--file", required=True,
                   help="a .ttyrec3.bz2 file, an experiment dir or an 'omega eval --record' dir")
    p.add_argument("--episode", type=int, default=None, metavar="K",
                   help="the K-th episode in the file, from 1 (default: the newest finished "
                        "one)")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed factor (default 1)")
    p.add_argument("--gif", default=None, help="write an animated GIF here instead of playing")
    p.add_argument("--fps", type=float, default=8.0, help="GIF frames per second (default 8)")
    p.add_argument("--max-frames", type=int, default=500, help="GIF frame cap; longer episodes are sampled evenly (default 500)")


def _add_cleanup(sub) -> None:
    p = sub.add_parser("cleanup", help="delete a run's outputs, keep its config",
                       description="Delete the files runs wrote into an experiment dir made "
                                   "by 'omega make' (checkpoints, replays, recordings, "
                                   "metrics.csv, TensorBoard and W&B files, known by name), "
                                   "keeping config.yaml and every other file, so it can be run "
                                   "afresh. Lists them and asks first.")
    p.add_argument("--dir", required=True, help="experiment dir")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the newest checkpoint (and its replay)")
    p.add_argument("--yes", action="store_true",
                   help="delete without asking (needed when stdin is not a terminal)")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="training throughput vs the raw env step rate",
                       description="Measure, in one run, the random-action step rate of the "
                                   "config's vectorised env and the end-to-end training step "
                                   "rate of its agent (first update excluded); print both and "
                                   "their ratio.")
    p.add_argument("--config", required=True, help="YAML config")
    p.add_argument("--steps", type=int, default=20_000, help="env steps per measurement")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--async-learning", action="store_true",
                   help="train with train.async_learning on, whatever the config says")


def _add_suite(sub) -> None:
    p = sub.add_parser(
        "suite", help="train and evaluate every (config, seed) of a suite file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Train every (config, seed) run a suite file names to its budget, evaluate each "
            "kept checkpoint on the suite's fixed eval episodes, evaluate a uniformly random "
            "policy on each task, and write per-run results JSON, a summary table (markdown "
            "and JSON) and learning-curve plots. Every entry is validated first: a bad one "
            "stops the suite before anything trains. Running it again redoes nothing "
            "finished and resumes killed runs from their checkpoints. A progress line says "
            "how many runs are done, running and left.", 79),
        epilog="suite file format and output layout: docs/suites.md\n"
               "examples:\n"
               "  omega suite configs/suites/quick.yaml               # one run at a time\n"
               "  omega suite configs/suites/original.yaml --jobs 2\n"
               "  omega suite configs/suites/original.yaml --backend ray --address HOST:6379\n"
               "  omega suite configs/suites/original.yaml --only 'ppo/*' --jobs 2   # PPO's rows\n"
               "  omega suite configs/suites/original.yaml --dry-run     # list the runs")
    p.add_argument("suite", metavar="SUITE.yaml", help="suite file, e.g. configs/suites/quick.yaml")
    p.add_argument("--output-dir", default=None,
                   help="where runs and results go (default: the suite's output_dir, or "
                        "experiments/suites/<name>)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="runs at a time: local processes (default 1); with --backend ray the "
                        "Ray tasks in flight (default: all, Ray queues them by free CPUs)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local (default): runs are processes on this machine; ray: each run is "
                        "a Ray task (pip install 'omega[distributed]'; the output dir must be "
                        "on a file system every node shares; docs/suites.md)")
    p.add_argument("--address", default=None,
                   help="with --backend ray: the Ray cluster to join (HOST:PORT of 'ray start "
                        "--head', or ray://HOST:10001); default: start a local Ray")
    p.add_argument("--cpus-per-run", type=float, default=1.0, metavar="C",
                   help="with --backend ray: the CPUs each run's Ray task asks for (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default), gpu or gpu:N, for every run")
    p.add_argument("--baselines-only", action="store_true",
                   help="only evaluate the random policy on each task (no training)")
    p.add_argument("--only", action="append", default=[], metavar="PATTERN",
                   help="run only the runs whose entry name or run id matches this glob, e.g. "
                        "'ppo/*' or 'muzero/corridor_battle/seed1'; several patterns: "
                        "repeat the flag or separate them with commas (the random baselines "
                        "always run, and the summary lists every entry)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the suite and list its runs and their state; run nothing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omega", description="Train reinforcement-learning agents (PPO, MuZero, random) on NetHack and MiniHack.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from omega import __version__

    parser.add_argument("--version", action="version", version=f"omega {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_make(sub)
    _add_run(sub)
    _add_eval(sub)
    _add_play(sub)
    _add_cleanup(sub)
    _add_bench(sub)
    _add_suite(sub)
    sub.add_parser("envs", help="list the environment ids",
                   description="List every NetHack, MiniHack and omega env id.")
    return parser


def cmd_make(args) -> int:
    from omega.training.experiment import make_experiment

    out = make_experiment(args.config, args.output_dir)
    print(f"omega: created experiment {out} (config: {out / 'config.yaml'}); "
          f"train it with 'omega run --dir {out}'")
    return 0


def cmd_run(args) -> int:
    if args.steps is not None and args.steps <= 0:
        raise OmegaError(f"--steps must be a positive number of env steps, got {args.steps}")
    if args.backend != "ray":
        for flag, value in (("--address", args.address), ("--num-actors", args.num_actors)):
            if value is not None:
                raise OmegaError(f"{flag} needs --backend ray")
    if args.num_actors is not None and args.num_actors < 1:
        raise OmegaError(f"--num-actors must be >= 1, got {args.num_actors}")
    try:
        if args.backend == "ray":
            from omega.training.distributed import train_distributed

            train_distributed(args.dir, device=args.device, total_env_steps=args.steps,
                              use_wandb=args.wandb, address=args.address,
                              num_actors=args.num_actors)
        else:
            from omega.training.loop import train

            train(args.dir, device=args.device, total_env_steps=args.steps,
                  use_wandb=args.wandb)
    except KeyboardInterrupt as e:
        return 128 + getattr(e, "signum", signal.SIGINT)
    except OSError as e:
        raise IOFailure(f"{describe_os_error(e)}; the checkpoints and metrics.csv rows written "
                        f"before are intact, and 'omega run --dir {args.dir}' resumes from the "
                        "newest checkpoint") from None
    return 0


def cmd_eval(args) -> int:
    import jax

    from omega.training.device import resolve_device
    from omega.training.evaluate import evaluate
    from omega.training.experiment import find_checkpoint, load_experiment, load_trained_agent

    cfg = load_experiment(args.dir)
    episodes = args.episodes if args.episodes is not None else cfg.eval.episodes
    seed = args.seed if args.seed is not None else cfg.eval.seed
    if episodes <= 0:
        raise OmegaError(f"--episodes must be positive, got {episodes}")
    if seed < 0:
        raise OmegaError(f"--seed must be >= 0, got {seed}")
    # The search budget is not part of the learned params: a run may be evaluated with a
    # larger (or smaller) search than it acted with while training.
    search_cfg = cfg
    if args.num_simulations is not None:
        if cfg.agent_type != "muzero":
            raise OmegaError(f"--num-simulations applies to MuZero runs only; '{args.dir}' "
                             f"trains agent_type '{cfg.agent_type}'")
        if args.num_simulations < 1:
            raise OmegaError(f"--num-simulations must be >= 1, got {args.num_simulations}")
        search_cfg = dataclasses.replace(
            cfg, muzero=dataclasses.replace(cfg.muzero, num_simulations=args.num_simulations))
    record = Path(args.record) if args.record else None
    if record is not None and (record.is_file() or (record.is_dir() and any(record.iterdir()))):
        raise OmegaError(f"--record '{record}' exists and is not an empty dir; give a new dir "
                         "(recordings are never written over)")
    ckpt = find_checkpoint(args.dir, args.checkpoint)
    with jax.default_device(resolve_device(args.device)):
        trained = load_trained_agent(args.dir, ckpt, cfg=cfg, agent_cfg=search_cfg)
        agent, loop = trained.agent, trained.loop
        greedy = cfg.eval.greedy if args.greedy is None else args.greedy
        params = trained.eval_params(average=not args.current_params)
        result = evaluate(agent, params, search_cfg, episodes, seed, greedy=greedy,
                          record_dir=record)
    result = type(result)(**{**result.__dict__, "env_steps": loop.env_steps})
    data = result.to_json()
    averaged = cfg.agent_type == "muzero" and cfg.muzero.eval_params_ema > 0
    data["params"] = "average" if averaged and not args.current_params else "current"
    if cfg.agent_type == "muzero":
        data["num_simulations"] = agent.cfg.num_simulations  # what the search really ran
    if not result.seeded:
        print(f"omega: note: {cfg.env.id} cannot be seeded (the env forbids it by design); "
              "the seeds only label the episodes, so evaluations are not repeatable",
              file=sys.stderr)
    if record is not None:
        data["recordings"] = str(record)
    _print_eval_table(data, ckpt)
    if record is not None:
        from omega.training.evaluate import recording_path

        print(f"omega: recorded {episodes} episode(s) in {record}; replay one with 'omega play "
              f"--file {recording_path(record, seed)}'")
    if args.json:
        from omega.training.checkpoint import atomic_write_bytes

        atomic_write_bytes(Path(args.json), (json.dumps(data, indent=2) + "\n").encode())
        print(f"omega: wrote {args.json}")
    return 0


def _print_eval_table(data, ckpt) -> None:
    from rich.console import Console
    from rich.table import Table

    mode = "greedy actions" if data["greedy"] else "sampled actions"
    if "num_simulations" in data:
        mode += f", {data['num_simulations']} simulations"
    table = Table(title=f"{data['env_id']}: {data['episodes']} episodes, seeds "
                        f"{data['seeds'][0]}..{data['seeds'][-1]}, {mode}, "
                        f"{data['params']} params, {ckpt.name}")
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("95% CI", justify="right")
    for key, fmt in (("success_rate", ".3f"), ("mean_return", ".3f"), ("mean_length", ".1f")):
        lo, hi = data[f"{key}_ci95"]
        table.add_row(key, format(data[key], fmt), f"[{lo:{fmt}}, {hi:{fmt}}]")
    Console(width=100).print(table)


def cmd_play(args) -> int:
    from omega.training.experiment import recorded_episodes
    from omega.viz.render import play_in_terminal, write_gif
    from omega.viz.ttyrec import read_ttyrec, select_game, slice_episode

    if args.speed <= 0:
        raise OmegaError(f"--speed must be positive, got {args.speed}")
    path = Path(args.file)
    if path.is_dir():
        # An experiment dir, or a dir of recordings ('omega eval --record').
        files = recorded_episodes(path) or sorted(
            (p for p in path.glob("*.ttyrec*") if p.is_file()),
            key=lambda p: (p.stat().st_mtime, str(p)))
        if not files:
            raise OmegaError(f"'{path}' holds no recorded episodes (see record.every_n_episodes)")
        # The newest recording with a finished episode: the newest file is often the game
        # that was still running when training stopped.
        for candidate in reversed(files):
            episode = read_ttyrec(candidate)
            game, number, games = select_game(episode, args.episode)
            if game.finished or args.episode is not None:
                break
        else:
            episode = read_ttyrec(files[-1])
            game, number, games = select_game(episode, args.episode)
            candidate = files[-1]
        path = candidate
    elif not path.exists():
        raise OmegaError(f"episode file '{path}' not found")
    else:
        episode = read_ttyrec(path)
        game, number, games = select_game(episode, args.episode)
    state = "" if game.finished else ", unfinished: the recording stopped while it ran"
    what = (f"episode {number} of {len(games)} in {path.name} ({len(game)} frames, "
            f"{game.start}..{game.stop - 1}{state})")
    episode = slice_episode(episode, game.start, game.stop)
    if args.gif:
        write_gif(episode, args.gif, fps=args.fps, max_frames=args.max_frames)
        print(f"omega: wrote {args.gif}: {what}")
    else:
        play_in_terminal(episode, speed=args.speed)
        print(f"omega: played {what}")
    return 0


def cmd_cleanup(args) -> int:
    from omega.training.experiment import (
        MARKER_FILE,
        ExperimentLock,
        delete_outputs,
        is_made_by_omega,
        load_experiment,
        run_outputs,
    )

    exp_dir = Path(args.dir)
    load_experiment(exp_dir)
    if not is_made_by_omega(exp_dir):
        raise OmegaError(f"'{exp_dir}' was not made by 'omega make' (it has no {MARKER_FILE} "
                         "file), so omega cannot tell its outputs from your files and deletes "
                         f"nothing; if an older omega made it, 'touch {exp_dir / MARKER_FILE}' "
                         "marks it")
    with ExperimentLock(exp_dir, "omega cleanup"):
        doomed, others = run_outputs(exp_dir, keep_checkpoint=args.keep_checkpoint)
        if not doomed:
            print(f"omega: nothing to delete in {exp_dir}")
            return 0
        size = sum(_size(p) for p in doomed)
        print(f"omega: cleanup deletes {len(doomed)} item(s), {size / 1e6:,.1f} MB, from "
              f"{exp_dir}:")
        for path in doomed:
            print(f"  {path.relative_to(exp_dir)}")
        if others:
            print(f"omega: and keeps {len(others)} file(s) omega did not write: "
                  + ", ".join(str(p.relative_to(exp_dir)) for p in others))
        if not args.yes:
            if not sys.stdin.isatty():
                raise OmegaError("stdin is not a terminal, so cleanup cannot ask; pass --yes "
                                 "to delete the items listed above")
            try:
                answer = input(f"Delete these {len(doomed)} item(s)? [y/N] ").strip().lower()
            except (EOFError, KeyboardInterrupt):
                print()
                answer = ""
            if answer not in ("y", "yes"):
                print("omega: nothing deleted")
                return 0
        delete_outputs(exp_dir, doomed)
    print(f"omega: deleted {len(doomed)} item(s) from {exp_dir}")
    return 0


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*"))


def cmd_bench(args) -> int:
    from omega.training.bench import bench

    if args.steps <= 0:
        raise OmegaError(f"--steps must be positive, got {args.steps}")
    r = bench(args.config, args.steps, args.json, async_learning=args.async_learning or None)
    print(f"{'env':<32} {'agent':<7} {'N':>4} {'W':>3} {'raw steps/s':>12} "
          f"{'train steps/s':>14} {'ratio':>6}")
    print(f"{r['env_id']:<32} {r['agent_type']:<7} {r['num_envs']:>4} {r['num_workers']:>3} "
          f"{r['raw_env_steps_per_s']:>12,.0f} {r['train_env_steps_per_s']:>14,.0f} "
          f"{r['ratio']:>6.2f}")
    n = r["env_steps_per_update"]
    raw_ms = 1000 * n / r["raw_env_steps_per_s"]
    print(f"per update of {n:,} env steps: acting {1000 * r['acting_s_per_update']:,.0f} ms "
          f"(raw env alone {raw_ms:,.0f} ms), learning {1000 * r['learning_s_per_update']:,.0f} ms")
    if args.json:
        print(f"omega: wrote {args.json}")
    return 0


def cmd_suite(args) -> int:
    from omega.suite.run import (
        Tracker,
        check_outputs,
        fmt_duration,
        job_state,
        run_suite,
        select_runs,
    )
    from omega.suite.spec import load_suite

    if args.jobs is not None and args.jobs < 1:
        raise OmegaError(f"--jobs must be >= 1, got {args.jobs}")
    if args.backend != "ray":
        if args.address is not None:
            raise OmegaError("--address needs --backend ray")
        if args.cpus_per_run != 1.0:
            raise OmegaError("--cpus-per-run needs --backend ray")
    if args.cpus_per_run <= 0:
        raise OmegaError(f"--cpus-per-run must be positive, got {args.cpus_per_run}")
    suite = load_suite(args.suite, args.output_dir)
    check_outputs(suite)
    only = tuple(q.strip() for arg in args.only for q in arg.split(","))
    if "" in only:
        raise OmegaError(f"--only {' '.join(repr(a) for a in args.only)} holds an empty "
                         "pattern; give globs like 'ppo/*', separated by commas")
    selected = select_runs(suite, only)
    if args.dry_run:
        out = suite.output_dir
        print(f"omega: suite {suite.name} ({args.suite}): {len(selected)} runs"
              + (f" of {len(suite.runs)} (--only)" if only else "") + ", "
              f"{len(suite.baselines)} random-policy baselines, output {out}")
        for job in (*suite.baselines, *selected):
            what = (f"{job.agent_type}, {job.env_id}, budget {job.budget:,} env steps"
                    if hasattr(job, "budget") else f"random policy, {job.env_id}")
            print(f"  {job.run_id:<44} {job_state(out, job):<8} {what}")
        jobs = args.jobs or 1
        seconds = Tracker(suite, list(selected), sys.stdout, jobs).seconds_left()
        if seconds is not None:
            print(f"omega: suite {suite.name}: about {fmt_duration(seconds)} of runs left at "
                  f"the finished runs' pace, {jobs} at a time")
        return 0
    if args.backend == "ray":
        from omega.training.distributed import check_reachable, import_ray

        import_ray()
        if args.address is not None:
            check_reachable(args.address)
    try:
        return run_suite(suite, parallel=args.jobs if args.backend == "ray" else (args.jobs or 1),
                         device=args.device, backend=args.backend, address=args.address,
                         baselines_only=args.baselines_only, cpus_per_run=args.cpus_per_run,
                         only=only)
    except OSError as e:
        raise IOFailure(f"{describe_os_error(e)}; finished runs are intact, and the same "
                        "command resumes the rest") from None


def cmd_envs(args) -> int:
    from omega.envs import registered_env_ids

    for env_id in registered_env_ids():
        print(env_id)
    return 0


COMMANDS = {"make": cmd_make, "run": cmd_run, "eval": cmd_eval, "play": cmd_play,
            "cleanup": cmd_cleanup, "envs": cmd_envs, "bench": cmd_bench, "suite": cmd_suite}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except OmegaError as e:
        print(f"omega: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        # The reader of stdout went away ('omega envs | head'): stop quietly, as Unix tools
        # do, and keep Python from reporting the failed flush at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as e:  # a file omega could not read or write: nothing is half-written
        print(f"omega: error: {describe_os_error(e)}", file=sys.stderr)
        return EXIT_IO
    except ValueError as e:
        # Library-level errors with a user-facing message (e.g. a bad episode file).
        if type(e).__module__.startswith("omega"):
            print(f"omega: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())

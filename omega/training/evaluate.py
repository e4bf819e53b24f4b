"""Evaluation on fixed seeds: episode ``i`` of an evaluation is played with seed ``seed + i``.

Results are the mean return, success rate and mean length, each with a 95% confidence
interval (normal approximation for means, Wilson score interval for the success rate), so
two evaluations with the same seeds are comparable and repeatable.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from omega.envs import EnvFactory

Z95 = 1.959963984540054
# How an episode ends: solved (the task's success), died (NetHack's death), time_limit (cut
# off by a step limit) or ended (the task ended it otherwise: a wrong exit, a penalty ending).
ENDINGS = ("solved", "died", "time_limit", "ended")
RAW_RECORDINGS = "unsorted"  # where NLE writes an evaluation's ttyrecs before they are named


def recording_path(record_dir: str | Path, seed: int) -> Path:
    """The ttyrec of the evaluation episode played with ``seed`` (``evaluate(record_dir=)``)."""
    return Path(record_dir) / f"seed{seed}.ttyrec3.bz2"


def episode_ending(terminated: bool, info: dict[str, Any]) -> str:
    """One of ENDINGS for the last step of an episode (``terminated`` false: truncated)."""
    if info.get("success", False):
        return "solved"
    if not terminated:
        return "time_limit"
    if getattr(info.get("end_status"), "name", None) == "DEATH":
        return "died"
    return "ended"


def _ttyrec_of(env: Any) -> str | None:
    """The file NLE records the episode just reset into (None where it cannot say)."""
    return getattr(getattr(env.unwrapped, "nethack", None), "_ttyrec", None)


def _name_recordings(raw: Path, recordings: dict[int, str | None]) -> None:
    """Moves each episode's ttyrec to ``seed<S>.ttyrec3.bz2`` beside ``raw``, then removes
    ``raw`` with what NLE wrote besides (its score files, the game it starts when an env is
    made)."""
    for seed, path in recordings.items():
        if path and os.path.isfile(path):
            os.replace(path, recording_path(raw.parent, seed))
    if all(recordings.values()):
        shutil.rmtree(raw, ignore_errors=True)  # NLE's score files and unplayed games
    # else an env that cannot say its file: its recordings stay where NLE wrote them


@dataclasses.dataclass(frozen=True)
class EvalResult:
    env_id: str
    episodes: int
    seeds: list[int]
    returns: list[float]
    lengths: list[int]
    successes: list[bool]
    env_steps: int | None = None  # training env steps of the evaluated checkpoint
    greedy: bool = True  # argmax actions (True) or actions sampled from the policy (False)
    # False for envs that forbid seeding (NetHackChallenge): the seeds then only label the
    # episodes, and two evaluations of one checkpoint play different games.
    seeded: bool = True
    endings: list[str] = dataclasses.field(default_factory=list)  # per episode: ENDINGS

    def ending_counts(self) -> dict[str, int]:
        return {e: self.endings.count(e) for e in ENDINGS}

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def mean_length(self) -> float:
        return float(np.mean(self.lengths))

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.successes))

    def to_json(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "greedy": self.greedy,
            "seeded": self.seeded,
            "success_rate": self.success_rate,
            "success_rate_ci95": list(wilson_ci95(sum(self.successes), self.episodes)),
            "mean_return": self.mean_return,
            "mean_return_ci95": list(mean_ci95(self.returns)),
            "mean_length": self.mean_length,
            "mean_length_ci95": list(mean_ci95(self.lengths)),
            "seeds": self.seeds,
            "returns": self.returns,
            "lengths": self.lengths,
            "successes": self.successes,
            "endings": self.endings,
            "ending_counts": self.ending_counts(),
        }


def mean_ci95(xs: list[float]) -> tuple[float, float]:
    x = np.asarray(xs, np.float64)
    if x.size < 2:
        return (float(x.mean()), float(x.mean())) if x.size else (math.nan, math.nan)
    half = Z95 * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def wilson_ci95(successes: int, n: int) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly 0 or 1; rounding leaves ~1e-17 otherwise.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def evaluation_params(agent: Any, state: Any, average: bool = True) -> Any:
    """The params evaluation acts with: ``agent.eval_params(state)`` where the agent has it
    (MuZero: no exploration noise in its search, and the moving average of the params when
    ``eval_params_ema`` is on, unless ``average`` is false), else ``agent.params(state)``."""
    eval_params = getattr(agent, "eval_params", None)
    if eval_params is None:
        return agent.params(state)
    return eval_params(state) if average else eval_params(state, average=False)


def evaluate(agent: Any, params: Any, cfg: Any, episodes: int, seed: int,
             num_envs: int | None = None, greedy: bool = True, rng_seed: int = 0,
             max_steps: int = 1_000_000, record_dir: str | Path | None = None) -> EvalResult:
    """Plays ``episodes`` episodes with seeds ``seed, seed+1, ...`` in-process, acting in batch.
    With ``record_dir`` every episode is also written there as an NLE ttyrec named by its
    seed (``seed<S>.ttyrec3.bz2``, see :func:`recording_path`); recording does not change
    what is played."""
    raw = Path(record_dir) / RAW_RECORDINGS if record_dir is not None else None
    factory = EnvFactory.from_config(cfg.env, record_root=None if raw is None else str(raw),
                                     record_every=0 if raw is None else 1)
    n = max(1, min(num_envs or cfg.eval.num_envs, episodes))
    envs = [factory(i) for i in range(n)]
    seeds = [seed + i for i in range(episodes)]
    returns = [0.0] * episodes
    lengths = [0] * episodes
    successes = [False] * episodes
    endings = [""] * episodes
    recordings: dict[int, str | None] = {}  # episode seed -> the ttyrec NLE writes it to
    slot_episode: list[int | None] = [None] * n
    next_episode = 0
    obs_slots: list[dict[str, np.ndarray]] = [None] * n  # type: ignore[list-item]
    first = np.ones(n, bool)
    try:
        for i in range(n):
            obs_slots[i], _ = envs[i].reset(seed=seeds[next_episode])
            recordings[seeds[next_episode]] = _ttyrec_of(envs[i]) if raw else None
            slot_episode[i] = next_episode
            next_episode += 1
        seeded = all(bool(env.get_wrapper_attr("seedable")) for env in envs)
        carry = agent.initial_carry(n)
        rng = jax.random.PRNGKey(rng_seed)
        done_count = 0
        for _ in range(max_steps):
            if done_count == episodes:
                break
            obs = {k: np.stack([o[k] for o in obs_slots]) for k in obs_slots[0]}
            rng, key = jax.random.split(rng)
            out = agent.act(params, obs, first, carry, key, greedy=greedy)
            actions = np.asarray(out.action)
            carry = out.carry
            first = np.zeros(n, bool)
            for i, env in enumerate(envs):
                ep = slot_episode[i]
                if ep is None:
                    continue  # this slot has no episodes left; its action is ignored
                o, r, terminated, truncated, info = env.step(int(actions[i]))
                returns[ep] += float(r)
                lengths[ep] += 1
                obs_slots[i] = o
                if terminated or truncated:
                    successes[ep] = bool(info.get("success", False))
                    endings[ep] = episode_ending(bool(terminated), info)
                    done_count += 1
                    first[i] = True
                    if next_episode < episodes:
                        obs_slots[i], _ = env.reset(seed=seeds[next_episode])
                        recordings[seeds[next_episode]] = _ttyrec_of(env) if raw else None
                        slot_episode[i] = next_episode
                        next_episode += 1
                    else:
                        slot_episode[i] = None
    finally:
        for env in envs:
            env.close()
        if raw is not None:
            _name_recordings(raw, recordings)
    return EvalResult(env_id=cfg.env.id, episodes=episodes, seeds=seeds, returns=returns,
                      lengths=lengths, successes=successes, greedy=greedy, seeded=seeded,
                      endings=endings)

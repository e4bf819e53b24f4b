"""Does a trained MuZero model see the danger of a monster next to the hero? Its heads there.

Usage (from the repository root):

    python -m omega.diagnostics.monsters --dir experiments/mz/room_ultimate_seed0 \\
        --episodes 40 --json monsters.json

Plays the run's eval episodes (episode seeds from ``--seed``, default the config's
``eval.seed``; actions as ``omega eval`` picks them: the config's eval mode, no exploration
noise) and, at every step, reads the network on the real observation: the value v(s), the
prior, the model's one-step Q(s, a) = r̂ + γ (1 − p_end) v̂(s') and its end probability
p_end(s, a) for every action, and the acting search's policy. A step has a monster next to
the hero when one of the 8 cells around it shows a monster that is not a pet (the full
``glyphs`` map). There, each move is sorted into ``attack`` (onto a monster's cell: NetHack
attacks it), ``away`` (onto a cell next to no monster the hero sees) or ``stay`` (every
other action: a move that keeps a monster beside the hero, or a non-move).

It reports, for the steps with and without a monster next to the hero: how often the hero
died at that step and within 5 steps; v(s) against the discounted return that followed (the
config's gamma, the env's reward with the run's shaping, a time limit's tail cut); and how
well p_end of the taken action and v(s) tell the steps before a death from the others
(AUC; 0.5: blind). Next to a monster, per kind of move: the share of the actions of that
kind, the prior's and the search policy's mass on them, the share taken, the model's Q
relative to the step's mean Q, its p_end, and what followed the moves taken (death within 5
steps, the return). A model that sees the danger puts a lower Q and a higher p_end on the
moves that die more often; a search then moves away from them.

Plain (not stochastic, not recurrent) MuZero that observes blstats only.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np
from nle import nethack

from omega.agents.muzero.networks import logits_to_scalar
from omega.diagnostics._common import load_blstats_muzero, one_step, raw_blstats, write_json
from omega.diagnostics.search_accuracy import MOVES
from omega.diagnostics.shaped_rewards import auc, discounted_returns
from omega.envs import EnvFactory
from omega.errors import OmegaError
from omega.training.evaluate import episode_ending

KINDS = ("attack", "away", "stay")
DEATH_HORIZON = 5  # steps: "died soon after"


def hostile_cells(glyphs: np.ndarray) -> set[tuple[int, int]]:
    """(x, y) of every cell of the [21, 79] glyph map that shows a monster other than a pet
    (the hero's own cell among them: the hero is drawn as a monster glyph)."""
    ys, xs = np.nonzero(np.vectorize(nethack.glyph_is_monster)(glyphs)
                        & ~np.vectorize(nethack.glyph_is_pet)(glyphs))
    return {(int(x), int(y)) for x, y in zip(xs, ys, strict=True)}


def move_kinds(action_moves: list[tuple[int, int] | None], hero: tuple[int, int],
               monsters: set[tuple[int, int]]) -> list[str] | None:
    """None when no monster is next to ``hero``; else each action's kind (:data:`KINDS`)."""
    def next_to_one(cell):
        return any(max(abs(cell[0] - m[0]), abs(cell[1] - m[1])) == 1 for m in monsters)

    if not next_to_one(hero):
        return None
    kinds = []
    for move in action_moves:
        if move is None:
            kinds.append("stay")
            continue
        cell = (hero[0] + move[0], hero[1] + move[1])
        kinds.append("attack" if cell in monsters else "stay" if next_to_one(cell) else "away")
    return kinds


def died_within(died_at: int | None, length: int, horizon: int) -> np.ndarray:
    """[length] bool: whether the episode's death (at step ``died_at``, None: no death) comes
    within ``horizon`` steps of each step, that step included."""
    t = np.arange(length)
    if died_at is None:
        return np.zeros(length, bool)
    return (t <= died_at) & (died_at - t < horizon)


@dataclasses.dataclass
class Step:
    next_to_monster: bool
    kinds: list[str] | None  # per action, next to a monster only
    action: int
    value: float
    q: np.ndarray  # [A]
    end_prob: np.ndarray  # [A]
    prior: np.ndarray  # [A]
    search: np.ndarray  # [A]
    hp_fraction: float
    died_now: bool = False
    died_soon: bool = False
    ret: float = 0.0


def play(trained, episodes: int, seed: int, rng_seed: int = 0) -> tuple[list[Step], list[str]]:
    cfg, agent = trained.cfg, trained.agent
    params = trained.eval_params(average=True)
    support = agent.cfg.support

    @jax.jit
    def heads(net, obs):
        out = one_step(agent.network, net, obs, support, agent.cfg.gamma)
        return logits_to_scalar(out.value_logits, support), jax.nn.softmax(out.logits[0]), \
            out.q, out.end_prob

    factory = EnvFactory.from_config(cfg.env)
    extra = tuple(k for k in ("glyphs",) if k not in factory.observation_keys)
    env = dataclasses.replace(factory, observation_keys=factory.observation_keys + extra)(0)
    rng = jax.random.PRNGKey(rng_seed)
    steps: list[Step] = []
    endings: list[str] = []
    try:
        action_moves = [MOVES.get(int(a)) for a in env.unwrapped.actions]
        for e in range(episodes):
            obs, _ = env.reset(seed=seed + e)
            first, carry = np.ones(1, bool), agent.initial_carry(1)
            episode: list[Step] = []
            rewards: list[float] = []
            while True:
                batch = {k: v[None] for k, v in obs.items()}
                value, prior, q, end_prob = (np.asarray(x) for x in jax.device_get(
                    heads(params.net, agent._filter(batch))))
                rng, key = jax.random.split(rng)
                out = agent.act(params, batch, first, carry, key, greedy=cfg.eval.greedy)
                carry, first = out.carry, np.zeros(1, bool)
                bl = raw_blstats(env)
                hero = (int(bl[nethack.NLE_BL_X]), int(bl[nethack.NLE_BL_Y]))
                kinds = move_kinds(action_moves, hero, hostile_cells(obs["glyphs"]) - {hero})
                action = int(np.asarray(out.action)[0])
                episode.append(Step(
                    next_to_monster=kinds is not None, kinds=kinds, action=action,
                    value=float(value[0]), q=q, end_prob=end_prob, prior=prior,
                    search=np.asarray(out.extras["search_policy"])[0],
                    hp_fraction=float(bl[nethack.NLE_BL_HP]) / max(int(bl[nethack.NLE_BL_HPMAX]), 1)))
                obs, r, terminated, truncated, info = env.step(action)
                rewards.append(float(r))
                if terminated or truncated:
                    ending = episode_ending(bool(terminated), info)
                    break
            died_at = len(episode) - 1 if ending == "died" else None
            soon = died_within(died_at, len(episode), DEATH_HORIZON)
            returns = discounted_returns(rewards, cfg.muzero.gamma)
            for t, s in enumerate(episode):
                s.died_now, s.died_soon, s.ret = t == died_at, bool(soon[t]), float(returns[t])
            steps.extend(episode)
            endings.append(ending)
    finally:
        env.close()
    return steps, endings


def _mean(x) -> float | None:
    x = np.asarray(x, float)
    return float(x.mean()) if x.size else None


def _auc(score, positive) -> float | None:
    score, positive = np.asarray(score, float), np.asarray(positive, bool)
    value = auc(score[positive], score[~positive])
    return None if np.isnan(value) else value


def summarise(steps: list[Step]) -> dict:
    """The numbers of the module docstring, from played steps."""
    groups = {}
    for name, near in (("next_to_monster", True), ("no_monster_next", False)):
        g = [s for s in steps if s.next_to_monster == near]
        groups[name] = {
            "steps": len(g),
            "died_at_step": _mean([s.died_now for s in g]),
            "died_within_5": _mean([s.died_soon for s in g]),
            "mean_value": _mean([s.value for s in g]),
            "mean_return": _mean([s.ret for s in g]),
            "mean_hp_fraction": _mean([s.hp_fraction for s in g]),
            "taken_end_prob": _mean([s.end_prob[s.action] for s in g]),
        }
    by_kind = {}
    near = [s for s in steps if s.next_to_monster]
    for kind in KINDS:
        share, prior, search, rel_q, end, taken = [], [], [], [], [], []
        for s in near:
            mask = np.asarray([k == kind for k in s.kinds])
            share.append(mask.mean())
            prior.append(s.prior[mask].sum())
            search.append(s.search[mask].sum())
            if mask.any():
                rel_q.append(s.q[mask].mean() - s.q.mean())
                end.append(s.end_prob[mask].mean())
            if s.kinds[s.action] == kind:
                taken.append(s)
        by_kind[kind] = {
            "action_share": _mean(share), "prior_mass": _mean(prior),
            "search_mass": _mean(search), "taken_share": len(taken) / len(near) if near else None,
            "q_minus_step_mean": _mean(rel_q), "end_prob": _mean(end),
            "taken": len(taken), "taken_died_within_5": _mean([s.died_soon for s in taken]),
            "taken_mean_return": _mean([s.ret for s in taken]),
        }
    return {
        "steps": len(steps), "groups": groups, "next_to_monster_by_kind": by_kind,
        # How well the model's heads tell the steps that precede a death from the others.
        "death_at_step_auc_of_taken_end_prob": _auc([s.end_prob[s.action] for s in steps],
                                                    [s.died_now for s in steps]),
        "death_within_5_auc_of_negated_value": _auc([-s.value for s in steps],
                                                     [s.died_soon for s in steps]),
        "death_within_5_auc_of_hp_fraction_negated": _auc([-s.hp_fraction for s in steps],
                                                          [s.died_soon for s in steps]),
    }


def probe(run: Path, episodes: int, seed: int | None, checkpoint: str | None) -> dict:
    ckpt, trained = load_blstats_muzero(run, checkpoint, "monsters")
    cfg = trained.cfg
    seed = cfg.eval.seed if seed is None else seed
    steps, endings = play(trained, episodes, seed)
    return {"run": str(run), "checkpoint": ckpt.name, "env_id": cfg.env.id,
            "env_steps": trained.loop.env_steps, "seeds": [seed, seed + episodes - 1],
            "endings": {e: endings.count(e) for e in dict.fromkeys(endings)},
            **summarise(steps)}


def _f(x, fmt=".3f") -> str:
    return "-" if x is None else format(x, fmt)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m omega.diagnostics.monsters",
                                description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, type=Path, nargs="+",
                   help="trained MuZero experiment dirs")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--seed", type=int, default=None,
                   help="the first episode seed (default: the config's eval.seed)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file name in each run (default: the newest)")
    p.add_argument("--json", type=Path, default=None, help="JSON path")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error(f"--episodes must be >= 1, got {args.episodes}")
    rows = []
    try:
        for run in args.dir:
            row = probe(run, args.episodes, args.seed, args.checkpoint)
            rows.append(row)
            print(f"{row['run']} {row['checkpoint']}: {row['steps']} steps, endings "
                  f"{row['endings']}")
            print(f"  {'':16} {'steps':>6} {'died now':>8} {'died <5':>8} {'v(s)':>6} "
                  f"{'return':>6} {'HP':>5} {'p_end':>6}")
            for name, g in row["groups"].items():
                print(f"  {name:16} {g['steps']:>6} {_f(g['died_at_step']):>8} "
                      f"{_f(g['died_within_5']):>8} {_f(g['mean_value']):>6} "
                      f"{_f(g['mean_return']):>6} {_f(g['mean_hp_fraction'], '.2f'):>5} "
                      f"{_f(g['taken_end_prob']):>6}")
            print(f"  next to a monster: {'share':>6} {'prior':>6} {'search':>6} {'taken':>6} "
                  f"{'Q-mean':>7} {'p_end':>6} {'died <5':>8} {'return':>6}")
            for kind, k in row["next_to_monster_by_kind"].items():
                print(f"  {kind:>17}: {_f(k['action_share'], '.2f'):>6} "
                      f"{_f(k['prior_mass'], '.2f'):>6} {_f(k['search_mass'], '.2f'):>6} "
                      f"{_f(k['taken_share'], '.2f'):>6} {_f(k['q_minus_step_mean'], '+.4f'):>7} "
                      f"{_f(k['end_prob']):>6} {_f(k['taken_died_within_5']):>8} "
                      f"{_f(k['taken_mean_return']):>6}")
            print(f"  AUC, death at the step by p_end(taken): "
                  f"{_f(row['death_at_step_auc_of_taken_end_prob'], '.2f')}; death within 5 "
                  f"by -v(s): {_f(row['death_within_5_auc_of_negated_value'], '.2f')}, by "
                  f"-HP: {_f(row['death_within_5_auc_of_hp_fraction_negated'], '.2f')}",
                  flush=True)
    except OmegaError as e:
        print(f"monsters: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        write_json(args.json, {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

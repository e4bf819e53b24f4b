"""A scripted corridor fighter on MiniHack-CorridorBattle-v0: how often the task's own tactic wins.

Usage (from the repository root):

    python benchmarks/corridor_battle_script.py --episodes 100 --seed 1000000 \\
        --tactic step wait --out benchmarks/results/corridor_battle_script.json

The hero (a knight) walks into the corridor to a holding cell (``--hold``: that many cells
east of the corridor's west end), attacks any giant rat next to it, and while rats are in view
but none is adjacent it lets them come to it one at a time down the corridor. With no rat in
view it walks to the goal (the stairs) by the shortest move. How it lets them come is the
``--tactic``: ``step`` with the task's own eight moves, which have no way to wait, so it steps
west and back east; ``wait`` with the eight moves and NetHack's search command (``s``: one turn
in place), the action set ``env.extra_actions: [SEARCH]`` gives the agents. A measure of how
often the dice let the corridor tactic win, beside the agents' eval success on the same eval
seeds. Episodes are seeded as ``omega eval`` seeds them (the same games), and scored the same
way. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import minihack  # noqa: F401  (registers the MiniHack envs)
import numpy as np
from nle import nethack

from omega.envs.wrappers import NetHackSeeding, TimeLimitIsTruncation
from omega.training.evaluate import EvalResult, episode_ending
from omega.training.files import atomic_write_bytes

ENV_ID = "MiniHack-CorridorBattle-v0"
MOVES = {(0, -1): nethack.CompassDirection.N, (1, 0): nethack.CompassDirection.E,
         (0, 1): nethack.CompassDirection.S, (-1, 0): nethack.CompassDirection.W,
         (1, -1): nethack.CompassDirection.NE, (1, 1): nethack.CompassDirection.SE,
         (-1, 1): nethack.CompassDirection.SW, (-1, -1): nethack.CompassDirection.NW}


def find(chars: np.ndarray, symbol: str) -> list[tuple[int, int]]:
    ys, xs = np.nonzero(chars == ord(symbol))
    return list(zip(xs.tolist(), ys.tolist(), strict=False))


def step_toward(hero: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    return (int(np.sign(target[0] - hero[0])), int(np.sign(target[1] - hero[1])))


WAIT = (0, 0)  # the search command: a turn in place
TACTICS = ("step", "wait")


class CorridorFighter:
    """The tactic, one episode at a time (``reset`` with the first observation)."""

    def __init__(self, hold: int, tactic: str = "step"):
        self.hold = hold
        self.tactic = tactic
        self.row = 0
        self.hold_x = 0

    def reset(self, chars: np.ndarray) -> None:
        # The corridor is unlit: only its first cells past the start room's doorway show.
        corridor = sorted(find(chars, "#"))
        self.row = corridor[0][1]
        self.hold_x = corridor[0][0] + self.hold  # the corridor is 7 cells long

    def act(self, chars: np.ndarray, hero: tuple[int, int]) -> tuple[int, int]:
        rats = find(chars, "r")
        adjacent = [r for r in rats if max(abs(r[0] - hero[0]), abs(r[1] - hero[1])) == 1]
        if adjacent:
            return step_toward(hero, adjacent[0])
        hold = (self.hold_x, self.row)
        if rats:  # hold the corridor cell: wait there, or without a wait step west and back
            if hero != hold:
                return step_toward(hero, hold)
            return WAIT if self.tactic == "wait" else (-1, 0)
        goal = find(chars, ">")
        if goal and hero[0] > self.hold_x:
            return step_toward(hero, goal[0])
        return step_toward(hero, (hero[0] + 1, self.row))


def play(episodes: int, seed: int, hold: int, tactic: str = "step") -> dict:
    actions = tuple(nethack.CompassDirection)
    if tactic == "wait":
        actions += (nethack.Command.SEARCH,)
    env = TimeLimitIsTruncation(NetHackSeeding(gym.make(
        ENV_ID, observation_keys=("chars", "blstats"), actions=actions,
        disable_env_checker=True)))
    index = {int(a): i for i, a in enumerate(env.unwrapped.actions)}
    moves = {**MOVES, WAIT: nethack.Command.SEARCH}
    fighter = CorridorFighter(hold, tactic)
    returns, lengths, successes, endings = [], [], [], []
    for s in range(seed, seed + episodes):
        obs, _ = env.reset(seed=s)
        fighter.reset(obs["chars"])
        total, length = 0.0, 0
        while True:
            hero = (int(obs["blstats"][0]), int(obs["blstats"][1]))
            move = fighter.act(obs["chars"], hero)
            obs, reward, terminated, truncated, info = env.step(index[int(moves[move])])
            total += float(reward)
            length += 1
            if terminated or truncated:
                break
        returns.append(total)
        lengths.append(length)
        successes.append(bool(info["success"]))
        endings.append(episode_ending(bool(terminated), info))
    env.close()
    result = EvalResult(ENV_ID, episodes, list(range(seed, seed + episodes)), returns, lengths,
                        successes, endings=endings).to_json()
    return {"policy": f"corridor fighter, {tactic}, hold {hold}", "hold": hold, "tactic": tactic,
            **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1000000)
    parser.add_argument("--hold", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--tactic", choices=TACTICS, nargs="+", default=["step"],
                        help="step: the task's eight moves; wait: the moves and SEARCH")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = [play(args.episodes, args.seed, h, t) for t in args.tactic for h in args.hold]
    print(f"{'policy':34} {'success':>8} {'95% CI':>15} {'return':>7} {'length':>7}  endings")
    for r in rows:
        lo, hi = r["success_rate_ci95"]
        print(f"{r['policy']:34} {r['success_rate']:8.2f} [{lo:.2f}, {hi:.2f}]    "
              f"{r['mean_return']:7.2f} {r['mean_length']:7.1f}  {r['ending_counts']}")
    if args.out:
        atomic_write_bytes(args.out, (json.dumps({"rows": rows}, indent=1) + "\n").encode())
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

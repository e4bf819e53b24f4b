"""What several diagnostics share: the MuZero model's one-step Q, an evaluation's recordings,
writing the JSON result."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from nle import nethack

from omega.agents.muzero.config import Support
from omega.agents.muzero.networks import MuZeroNetwork, logits_to_scalar

MAP_ROWS = slice(1, 22)  # the tty rows NetHack draws the map on (row 0: messages)


class OneStep(NamedTuple):
    latent: jax.Array  # [1, D]
    logits: jax.Array  # prior logits [1, A]
    value_logits: jax.Array  # [1, bins]
    reward: jax.Array  # the model's one-step reward r̂(s, a) of every action [A]
    q: jax.Array  # r̂ + γ (1 − p_end) v̂(s') of every action [A]
    end_prob: jax.Array  # p_end: the model's probability that the action ends the episode [A]


def one_step(net: Any, params: Any, obs: dict, support: Support, gamma: float) -> OneStep:
    """The network at ``obs`` (one observation, batched to [1, ...]) and the model's one step
    ahead for every action. Call it under ``jax.jit``."""
    latent, logits, value_logits = net.apply(params, obs, None, None,
                                             method=MuZeroNetwork.initial_inference)
    num_actions = logits.shape[-1]
    _, reward_logits, end_logit, _, next_value_logits = net.apply(
        params, jnp.repeat(latent, num_actions, 0), jnp.arange(num_actions),
        method=MuZeroNetwork.recurrent_inference)
    reward = logits_to_scalar(reward_logits, support)
    end_prob = jax.nn.sigmoid(end_logit)
    q = reward + gamma * (1 - end_prob) * logits_to_scalar(next_value_logits, support)
    return OneStep(latent, logits, value_logits, reward, q, end_prob)


def one_step_q(net: Any, params: Any, obs: dict, support: Support, gamma: float) -> tuple:
    """(latent [1, D], prior logits [1, A], value logits [1, bins], Q [A]) of
    :func:`one_step`. Call it under ``jax.jit``."""
    out = one_step(net, params, obs, support, gamma)
    return out.latent, out.logits, out.value_logits, out.q


def raw_blstats(env: Any) -> np.ndarray:
    """NLE's blstats of a (wrapped) env's last observation, unscaled: the observation the
    network reads has them scaled."""
    return env.unwrapped.last_observation[env.unwrapped._observation_keys.index("blstats")]


def hero_position(env: Any) -> tuple[int, int]:
    """The hero's (x, y) on the map, from :func:`raw_blstats`."""
    bl = raw_blstats(env)
    return int(bl[nethack.NLE_BL_X]), int(bl[nethack.NLE_BL_Y])


def load_blstats_muzero(run: Path, checkpoint: str | None, diagnostic: str) -> tuple[Any, Any]:
    """(checkpoint path, trained agent) of a plain MuZero run (not stochastic, not recurrent)
    that observes blstats, at checkpoint file ``checkpoint`` (None: the newest). Raises
    OmegaError (one line, naming ``diagnostic``) for any other run or a missing checkpoint."""
    from omega.errors import OmegaError
    from omega.training.experiment import (
        CHECKPOINT_DIR,
        find_checkpoint,
        load_experiment,
        load_trained_agent,
    )

    cfg = load_experiment(run)
    if (cfg.agent_type != "muzero" or cfg.muzero.stochastic or cfg.model.recurrent
            or "blstats" not in cfg.env.observation.keys):
        raise OmegaError(f"'{run}' is not a MuZero experiment of the plain kind that observes "
                         "blstats (agent_type muzero, stochastic: false, model.recurrent: "
                         f"false, env.observation.keys with blstats); {diagnostic} reads the "
                         "hero's cell from blstats")
    ckpt = find_checkpoint(run, checkpoint and run / CHECKPOINT_DIR / checkpoint)
    if not ckpt.is_file():
        raise OmegaError(f"'{run}': no checkpoint {ckpt.name} in {ckpt.parent}")
    return ckpt, load_trained_agent(run, ckpt, cfg=cfg)


def write_json(path: Path, data: Any) -> None:
    """Writes ``data`` to ``path`` as indented JSON (making its folder) and says so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")


def eval_recordings(eval_json: Path, records: Path) -> Iterator[tuple[int, str, int | None, Any]]:
    """(seed, ending, length, :class:`omega.viz.ttyrec.Episode`) of every episode of an
    ``omega eval --json F --record DIR`` evaluation. Raises ValueError (one line) for a missing
    or unreadable eval JSON or recording."""
    from omega.training.evaluate import recording_path
    from omega.viz.ttyrec import read_ttyrec

    try:
        data = json.loads(Path(eval_json).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {eval_json} ({type(e).__name__}); give the file "
                         "'omega eval --json' wrote") from None
    seeds, endings = data.get("seeds"), data.get("endings")
    if not seeds or not endings or len(seeds) != len(endings):
        raise ValueError(f"{eval_json} has no per-episode seeds and endings; write it with "
                         "'omega eval --json'")
    lengths = data.get("lengths") or [None] * len(seeds)
    for seed, ending, length in zip(seeds, endings, lengths, strict=True):
        path = recording_path(records, seed)
        if not path.is_file():
            raise ValueError(f"no recording {path}; record the same evaluation with "
                             "'omega eval --record DIR'")
        yield seed, ending, length, read_ttyrec(path)  # ValueError for a bad file


def recorded_eval_parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The command line of a diagnostic that reads a recorded evaluation: ``--eval-json``,
    ``--records`` and ``--json``; ``doc`` is the module docstring (its first paragraph is the
    description)."""
    parser = argparse.ArgumentParser(prog=f"python -m omega.diagnostics.{name}",
                                     description=doc.split("\n\n")[0])
    parser.add_argument("--eval-json", type=Path, required=True, help="omega eval --json output")
    parser.add_argument("--records", type=Path, required=True,
                        help="the same evaluation's omega eval --record folder")
    parser.add_argument("--json", type=Path, help="write the summary and every episode here")
    return parser


def report(name: str, summarise: Callable[[], dict], print_summary: Callable[[dict], None],
           json_path: Path | None) -> int:
    """A diagnostic's end: ``summarise()``, its table printed, the JSON written; a ValueError
    (a missing or unreadable input) is one line on stderr and exit code 2."""
    try:
        out = summarise()
    except ValueError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    print_summary(out)
    if json_path:
        write_json(json_path, out)
    return 0

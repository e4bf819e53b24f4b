"""MuZero with a recurrent encoder: the memory carried and reset by ``act``, stored per step by
the replay and returned at sequence starts (burn-in clipped at episode starts), used by the
train step (start, burn-in, bootstrap, consistency and reanalyze observations), the
stored-memory refresh, and the CLI end to end on a memory task.

Agents are tiny: on a small CPU most of the time is XLA compiles.
"""

import csv
import dataclasses
import json

import jax
import numpy as np
import pytest

from omega.agents.base import Trajectory
from omega.agents.muzero import MuZeroConfig, make_muzero_agent
from omega.cli.main import main
from omega.models.encoders import EncoderConfig
from omega.replay import ReplayBuffer
from omega.training.checkpoint import list_checkpoints

pytestmark = pytest.mark.usefixtures("fast_compiles")

MEMORY = EncoderConfig(kind="perceiver", map="crop", recurrent=True, embed_dim=8,
                       glyph_features=False, num_latents=2, latent_dim=8, num_heads=2,
                       num_self_attention_blocks=0, mlp_hidden=16, blstats_hidden=8,
                       output_dim=16)
T, N, A = 6, 4, 3
CFG = MuZeroConfig(latent_dim=8, dynamics_hidden=16, prediction_hidden=16, support_size=3,
                   num_simulations=2, rollout_length=T, replay_size=256, warmup_steps=T * N,
                   batch_size=8, replay_ratio=0.0, unroll_steps=2, td_steps=2)


def random_obs(rng: np.random.Generator, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {"glyphs_crop": rng.integers(2350, 2390, shape + (3, 3)).astype(np.int16)}


def rollout(agent, params, seed: int, ends: np.ndarray, carry=None):
    """Acts ``T`` steps in ``N`` fake envs whose episodes end where ``ends`` [T, N] is True."""
    rng = np.random.default_rng(seed)
    obs = random_obs(rng, (T + 1, N))
    first = np.zeros((T + 1, N), bool)
    first[0] = carry is None
    first[1:] = ends
    carry = agent.initial_carry(N) if carry is None else carry
    initial, actions, extras = carry, [], []
    for t in range(T):
        out = agent.act(params, {k: v[t] for k, v in obs.items()}, first[t], carry,
                        jax.random.PRNGKey(seed * 100 + t))
        carry = out.carry
        actions.append(np.asarray(out.action))
        extras.append(jax.device_get(out.extras))
    traj = Trajectory(
        obs=obs, first=first, action=np.stack(actions),
        reward=rng.normal(size=(T, N)).astype(np.float32), terminated=ends,
        truncated=np.zeros((T, N), bool), truncation_value=np.zeros((T, N), np.float32),
        extras={k: np.stack([e[k] for e in extras]) for k in extras[0]}, initial_carry=initial)
    return traj, carry


def make_agent(**overrides):
    """A fresh agent whose params are jiggled: the value, reward and policy heads start at
    (nearly) zero, which would hide what the memory does to their outputs."""
    cfg = dataclasses.replace(CFG, **overrides)
    agent = make_muzero_agent(cfg, MEMORY, A, total_env_steps=10_000)
    state = agent.init(jax.random.PRNGKey(0), random_obs(np.random.default_rng(0), (1,)), N)
    leaves, tree = jax.tree_util.tree_flatten(state.params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    jiggled = [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    return agent, state._replace(params=jax.tree_util.tree_unflatten(tree, jiggled))


@pytest.fixture(scope="module")
def filled():
    """An agent whose replay holds two rollouts with episode ends inside them."""
    agent, state = make_agent(burn_in_steps=3, consistency_loss_weight=1.0)
    ends = np.zeros((T, N), bool)
    ends[2, 0] = ends[4, 1] = True
    traj1, carry = rollout(agent, agent.params(state), 1, ends)
    state, _ = agent.learn(state, traj1, jax.random.PRNGKey(1))
    traj2, _ = rollout(agent, agent.params(state), 2, ends[::-1], carry)
    state, _ = agent.learn(state, traj2, jax.random.PRNGKey(2))
    return agent, state, (traj1, traj2)


# ---------------------------------------------------------------------------------------------
# Acting


def test_act_carries_the_memory_and_resets_it_exactly_where_first():
    agent, state = make_agent()
    params = agent.params(state)
    obs = random_obs(np.random.default_rng(3), (N,))
    key = jax.random.PRNGKey(0)
    carry0 = agent.initial_carry(N)
    assert carry0.shape == (N, MEMORY.num_latents, MEMORY.latent_dim)
    all_first, none_first = np.ones(N, bool), np.zeros(N, bool)
    out1 = agent.act(params, obs, all_first, carry0, key)
    # The replay gets the memory the step started from.
    np.testing.assert_array_equal(out1.extras["memory"], carry0)
    out2 = agent.act(params, obs, none_first, out1.carry, key)
    assert not np.allclose(out2.carry, out1.carry), "the memory must move from step to step"
    np.testing.assert_array_equal(out2.extras["memory"], out1.carry)
    assert not np.allclose(out2.extras["root_value"], out1.extras["root_value"]) or \
        not np.allclose(out2.extras["search_policy"], out1.extras["search_policy"]), \
        "the search must see the memory"

    mixed = np.array([True, False, True, False])
    out3 = agent.act(params, obs, mixed, out2.carry, key)
    cont = agent.act(params, obs, none_first, out2.carry, key)
    # Reset rows start over from the learned initial latents, whatever the carry held...
    np.testing.assert_allclose(out3.carry[mixed], out1.carry[mixed], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out3.extras["root_value"][mixed],
                               out1.extras["root_value"][mixed], rtol=1e-5, atol=1e-6)
    # ... and the others continue.
    np.testing.assert_allclose(out3.carry[~mixed], cont.carry[~mixed], rtol=1e-6, atol=1e-6)

    # The value (bootstrapping a time limit) continues the carry, it never resets.
    v_fresh = np.asarray(agent.value(params, obs, out1.carry))
    v_later = np.asarray(agent.value(params, obs, out2.carry))
    assert v_fresh.shape == (N,) and not np.allclose(v_fresh, v_later)


# ---------------------------------------------------------------------------------------------
# Replay


def tagged_memory(t0: int, t: int, n: int) -> np.ndarray:
    """memory[t, e] = a [2] array holding (time, env): easy to check where it came from."""
    times = np.arange(t0, t0 + t)[:, None].repeat(n, 1)
    return np.stack([times, np.arange(n)[None].repeat(t, 0)], -1).astype(np.float32)


def fill_replay(burn_in: int, max_size: int = 64) -> ReplayBuffer:
    """Two envs, 12 steps: env 0's episodes start at 0, 4 and 9; env 1's at 0 only."""
    replay = ReplayBuffer(max_size=max_size, num_unroll_steps=2, td_steps=2, gamma=0.9,
                          burn_in=burn_in, next_obs=True)
    t, n = 6, 2
    first = np.zeros((12, n), bool)
    first[[0, 4, 9], 0] = True
    first[0, 1] = True
    terminated = np.zeros((12, n), bool)
    terminated[[3, 8], 0] = True
    for t0 in (0, 6):
        sl = slice(t0, t0 + t)
        obs = {"x": np.broadcast_to(np.arange(t0, t0 + t)[:, None] * 10 + np.arange(n),
                                    (t, n)).copy()}
        replay.add(obs, np.zeros((t, n), np.int32), np.zeros((t, n), np.float32),
                   terminated[sl], np.zeros((t, n), bool), np.zeros((t, n), np.float32),
                   np.full((t, n, A), 1 / A, np.float32), np.zeros((t, n), np.float32),
                   memory=tagged_memory(t0, t, n), first=first[sl])
    return replay


def test_replay_stores_memory_per_step_and_returns_it_at_sequence_starts():
    replay = fill_replay(burn_in=0)
    env, start = np.array([0, 1, 0, 1, 0]), np.array([0, 5, 4, 11, 7])
    batch = replay.sample(5, starts=(env, start, np.ones(5, np.float32)))
    mem = batch.memory
    np.testing.assert_array_equal(mem.memory, np.stack([start, env], -1))
    np.testing.assert_array_equal(mem.first, [True, False, True, False, False])
    assert mem.burn_in_mask.shape == (5, 0)
    # The bootstrap and next observations come with the memories stored before them.
    np.testing.assert_array_equal(mem.bootstrap_memory[..., 0], batch.bootstrap_obs["x"] // 10)
    np.testing.assert_array_equal(mem.bootstrap_memory[..., 1], batch.bootstrap_obs["x"] % 10)
    np.testing.assert_array_equal(mem.next_memory[..., 0], batch.next_obs["x"] // 10)
    next_time, next_env = batch.next_obs["x"] // 10, batch.next_obs["x"] % 10
    np.testing.assert_array_equal(mem.next_first,
                                  (next_env == 0) & np.isin(next_time, [4, 9]))
    assert mem.next_first.any()
    memory, first = replay.memory_at(np.array([0, 0]), np.array([9, 10]))
    np.testing.assert_array_equal(memory, [[9, 0], [10, 0]])
    np.testing.assert_array_equal(first, [True, False])
    with pytest.raises(ValueError, match="every add or to none"):
        replay.add({"x": np.zeros((1, 2), int)}, np.zeros((1, 2), np.int32),
                   *([np.zeros((1, 2))] * 4), np.zeros((1, 2, A)), np.zeros((1, 2)))


def test_burn_in_is_clipped_at_the_episode_start_and_the_oldest_step():
    replay = fill_replay(burn_in=3)
    env = np.array([0, 0, 0, 0, 1, 1])
    start = np.array([7, 5, 4, 2, 2, 11])
    batch = replay.sample(6, starts=(env, start, np.ones(6, np.float32)))
    mem = batch.memory
    window = start[:, None] + np.arange(-3, 0)
    np.testing.assert_array_equal(mem.burn_in_obs["x"] // 10, np.where(window < 0, 0, window))
    np.testing.assert_array_equal(mem.burn_in_mask, [
        [1, 1, 1],  # 4 5 6 all in the episode that starts at 4
        [0, 0, 1],  # 2 3 belong to the previous episode
        [0, 0, 0],  # the start begins an episode
        [0, 1, 1],  # -1 was never stored
        [0, 1, 1],  # likewise
        [1, 1, 1]])
    # The window's stored memory: at its first masked-in step (the start when none is).
    np.testing.assert_array_equal(mem.memory[:, 0], [4, 4, 4, 0, 0, 8])
    np.testing.assert_array_equal(mem.burn_in_first[0], [True, False, False])

    small = fill_replay(burn_in=3, max_size=16)  # 8 slots per env: steps 4..11 live
    batch = small.sample(1, starts=(np.array([1]), np.array([5]), np.ones(1, np.float32)))
    np.testing.assert_array_equal(batch.memory.burn_in_mask, [[0, 0, 1]])
    np.testing.assert_array_equal(batch.memory.memory[:, 0], [4])


# ---------------------------------------------------------------------------------------------
# Learning


def loss_of(agent, state, batch):
    device_batch = batch._replace(index=())
    return float(jax.jit(agent._loss)(state.params, device_batch)[0])


def test_train_step_uses_the_stored_memory(filled):
    agent, state, _ = filled
    starts = (np.arange(8) % N, np.array([0, 1, 2, 5, 6, 7, 8, 11]), np.ones(8, np.float32))
    batch = agent.replay.sample(8, starts=starts)
    mem = batch.memory
    base = loss_of(agent, state, batch)
    assert np.isfinite(base)

    def changed(**fields):
        return loss_of(agent, state, batch._replace(memory=mem._replace(**fields)))

    rng = np.random.default_rng(0)

    def noisy(x):  # not a constant shift: the encoder's layer norms would undo that
        return x + rng.normal(size=x.shape).astype(np.float32)

    noise = noisy(np.zeros_like(mem.memory))
    # The start memory (carried through the burn-in), the bootstrap and the next memories
    # each reach the loss ...
    assert changed(memory=mem.memory + noise) != pytest.approx(base, rel=1e-6)
    assert changed(bootstrap_memory=noisy(mem.bootstrap_memory)) != pytest.approx(base, rel=1e-6)
    assert changed(next_memory=noisy(mem.next_memory)) != pytest.approx(base, rel=1e-6)
    # ... as do the burn-in observations inside the window, but not those outside it.
    inside = {"glyphs_crop": np.where(mem.burn_in_mask[..., None, None] > 0, 2350,
                                      mem.burn_in_obs["glyphs_crop"]).astype(np.int16)}
    outside = {"glyphs_crop": np.where(mem.burn_in_mask[..., None, None] > 0,
                                       mem.burn_in_obs["glyphs_crop"], 2350).astype(np.int16)}
    assert mem.burn_in_mask.any() and not mem.burn_in_mask.all()
    assert changed(burn_in_obs=inside) != pytest.approx(base, rel=1e-6)
    assert changed(burn_in_obs=outside) == pytest.approx(base, rel=1e-6)
    # Where a sequence starts an episode the stored memory is never read.
    all_first = mem._replace(first=np.ones_like(mem.first),
                             burn_in_mask=np.zeros_like(mem.burn_in_mask))
    reset = loss_of(agent, state, batch._replace(memory=all_first))
    noisy = loss_of(agent, state, batch._replace(
        memory=all_first._replace(memory=mem.memory + noise)))
    assert noisy == pytest.approx(reset, rel=1e-6)


def test_burn_in_gradient_reaches_what_the_encoder_writes_to_memory(filled):
    """Without burn_in_gradient the start memory is a constant of the params (the encoder is
    never taught what to keep); with it, the gradient runs back through the burn-in steps."""
    agent, state, _ = filled
    starts = (np.arange(8) % N, np.array([0, 1, 2, 5, 6, 7, 8, 11]), np.ones(8, np.float32))
    mem = agent.replay.sample(8, starts=starts).memory
    assert mem.burn_in_mask.any()

    def grad_norm(a):
        g = jax.grad(lambda p: a._start_memory(p, mem).sum())(state.params)
        return float(sum(np.abs(np.asarray(x)).sum() for x in jax.tree_util.tree_leaves(g)))

    assert grad_norm(agent) == 0.0
    through = make_muzero_agent(dataclasses.replace(agent.cfg, burn_in_gradient=True), MEMORY,
                                A, total_env_steps=10_000)
    assert grad_norm(through) > 0.0
    # The forward value is the same either way.
    np.testing.assert_allclose(through._start_memory(state.params, mem),
                               agent._start_memory(state.params, mem), rtol=1e-6, atol=1e-6)


def test_burn_in_gradient_equals_a_plain_scan_of_the_encoder(filled):
    """The burn-in recomputes its steps in the backward pass (jax.checkpoint, for speed): the
    gradient must be the one of a plain scan of the encoder over the same steps."""
    from omega.agents.muzero.networks import MuZeroNetwork

    agent, state, _ = filled
    starts = (np.arange(8) % N, np.array([0, 1, 2, 5, 6, 7, 8, 11]), np.ones(8, np.float32))
    mem = agent.replay.sample(8, starts=starts).memory
    through = make_muzero_agent(dataclasses.replace(agent.cfg, burn_in_gradient=True), MEMORY,
                                A, total_env_steps=10_000)

    def plain(p):
        m = mem.memory
        for t in range(mem.burn_in_obs["glyphs_crop"].shape[1]):
            obs = {k: v[:, t] for k, v in mem.burn_in_obs.items()}
            _, nxt = through.network.apply(p, obs, mem.burn_in_first[:, t], m,
                                           method=MuZeroNetwork.encode)
            keep = mem.burn_in_mask[:, t].reshape((-1,) + (1,) * (m.ndim - 1)) > 0
            m = jax.numpy.where(keep, nxt, m)
        return m

    weights = np.random.default_rng(3).normal(size=mem.memory.shape).astype(np.float32)
    got = jax.grad(lambda p: (through._start_memory(p, mem) * weights).sum())(state.params)
    want = jax.grad(lambda p: (plain(p) * weights).sum())(state.params)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want),
                    strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
    assert sum(float(np.abs(np.asarray(g)).sum()) for g in jax.tree_util.tree_leaves(got)) > 0


def test_learn_stores_the_acting_memory(filled):
    agent, _, (traj1, traj2) = filled
    stored = agent.replay.memory[:, :2 * T]  # [N, 2T, ...]
    acted = np.concatenate([traj1.extras["memory"], traj2.extras["memory"]]).swapaxes(0, 1)
    np.testing.assert_array_equal(stored, acted)
    np.testing.assert_array_equal(agent.replay.first[:, :2 * T],
                                  np.concatenate([traj1.first[:-1], traj2.first[:-1]]).T)
    # The carry handed from the first rollout to the second is the one stored for its step 0.
    np.testing.assert_array_equal(traj2.initial_carry, traj2.extras["memory"][0])


def test_learn_with_burn_in_consistency_and_reanalyze_reads_the_memory(filled):
    agent, state, (traj1, traj2) = filled
    agent2, state2 = make_agent(burn_in_steps=2, consistency_loss_weight=1.0,
                                reanalyze_fraction=1.0, reanalyze_batch_size=16,
                                replay_ratio=2.0, warmup_steps=2 * T * N)
    for i, traj in enumerate((traj1, traj2)):
        state2, metrics = agent2.learn(state2, traj, jax.random.PRNGKey(i))
    assert int(state2.train_steps) > 0 and metrics["reanalyzed_steps"] > 0
    assert all(np.isfinite(metrics[k]) for k in ("loss", "consistency_loss"))
    # Reanalyze encodes each step with its stored memory: other memories, other targets.
    starts = (np.arange(N), np.full(N, 1), np.ones(N, np.float32))
    agent2._reanalyze(state2.params, starts)
    before = agent2.replay.data["root_value"][:, 1:4].copy()
    agent2.replay.memory += np.random.default_rng(0).normal(size=agent2.replay.memory.shape)
    agent2._reanalyze(state2.params, starts)
    after = agent2.replay.data["root_value"][:, 1:4]
    assert not np.allclose(before, after)


# ---------------------------------------------------------------------------------------------
# CLI end to end


def test_cli_make_run_recurrent_muzero_on_a_memory_task(tmp_path):
    import yaml

    cfg = {
        "agent_type": "muzero", "seed": 0,
        "env": {"id": "Omega-Memory-K4-v0", "num_envs": 4, "num_workers": 1,
                "observation": {"keys": ["glyphs_crop", "blstats"], "crop_size": 5}},
        "train": {"total_env_steps": 256, "checkpoint_every_steps": 128,
                  "log_every_steps": 64},
        "record": {"every_n_episodes": 0},
        "model": {"kind": "perceiver", "map": "crop", "recurrent": True, "embed_dim": 8,
                  "glyph_features": False, "num_latents": 2, "latent_dim": 8,
                  "num_heads": 2, "num_self_attention_blocks": 0, "mlp_hidden": 16,
                  "blstats_hidden": 8, "output_dim": 16},
        "muzero": {"latent_dim": 8, "dynamics_hidden": 16, "prediction_hidden": 16,
                   "support_size": 3, "num_simulations": 2, "rollout_length": 8,
                   "replay_size": 256, "warmup_steps": 64, "batch_size": 8,
                   "replay_ratio": 0.25, "unroll_steps": 2, "td_steps": 3,
                   "burn_in_steps": 2},
    }
    path = tmp_path / "memory.yaml"
    path.write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "exp"
    assert main(["make", "--config", str(path), "--output-dir", str(exp)]) == 0
    assert main(["run", "--dir", str(exp), "--steps", "256"]) == 0
    with (exp / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert int(rows[-1]["env_steps"]) == 256
    assert float(rows[-1]["train_steps"]) > 0 and np.isfinite(float(rows[-1]["loss"]))
    assert len(list_checkpoints(exp / "checkpoints")) >= 1
    # Resuming restores the params and acts on with a fresh memory.
    assert main(["run", "--dir", str(exp), "--steps", "320"]) == 0
    with (exp / "metrics.csv").open() as f:
        assert int(list(csv.DictReader(f))[-1]["env_steps"]) == 320
    out_json = tmp_path / "eval.json"
    assert main(["eval", "--dir", str(exp), "--episodes", "2", "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["episodes"] == 2


def test_initial_carry_is_none_without_a_recurrent_encoder():
    plain = EncoderConfig(kind="plain", map="crop", embed_dim=8, cnn_channels=(),
                          mlp_hidden=16, blstats_hidden=8, output_dim=16)
    agent = make_muzero_agent(CFG, plain, A, total_env_steps=1000)
    assert agent.initial_carry(N) is None
    with pytest.raises(ValueError, match="burn_in_steps"):
        make_muzero_agent(dataclasses.replace(CFG, burn_in_steps=1), plain, A, 1000)


def test_refresh_memory_writes_back_the_memories_that_follow_each_start(filled):
    agent, _, (traj1, traj2) = filled
    agent2, state2 = make_agent(burn_in_steps=0, refresh_memory=True)
    for i, traj in enumerate((traj1, traj2)):
        state2, _ = agent2.learn(state2, traj, jax.random.PRNGKey(i))
    replay = agent2.replay
    stored = replay.memory.copy()
    env, start = np.array([0, 1, 2]), np.array([1, 4, 10])
    batch = replay.sample(3, starts=(env, start, np.ones(3, np.float32)))
    agent2._refresh(state2.params, batch)
    # Expected: the encoder run with these params over start .. start + K from the stored
    # start memory; the memory after each observation belongs to the next step.
    k = agent2.cfg.unroll_steps
    encode = jax.jit(lambda o, f, m: agent2.network.apply(state2.params, o, f, m,
                                                          method=type(agent2.network).encode))
    memory = stored[env, start]
    expected = stored.copy()
    for i in range(k + 1):
        obs, first = replay.sequences_at(env, start + i, 1)
        _, memory = encode({key: v[:, 0] for key, v in obs.items()}, first[:, 0], memory)
        t = start + i + 1
        live = t < replay.time  # 2T steps stored: the last start's tail is not
        expected[env[live], t[live]] = np.asarray(memory)[live]
    np.testing.assert_allclose(replay.memory, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(replay.memory, stored)
    assert np.array_equal(replay.memory[:, 2 * T:], stored[:, 2 * T:])

    # learn refreshes after every train step.
    agent3, state3 = make_agent(refresh_memory=True, replay_ratio=1.0)
    state3, _ = agent3.learn(state3, traj1, jax.random.PRNGKey(0))
    before = agent3.replay.memory.copy()
    state3, _ = agent3.learn(state3, traj2, jax.random.PRNGKey(1))
    assert int(state3.train_steps) > 0 and agent3.trace_counts["refresh"] == 1
    assert not np.allclose(agent3.replay.memory[:, :T], before[:, :T])

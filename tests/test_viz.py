"""Tests for omega.viz: decoding NLE ttyrec recordings and rendering them."""

from __future__ import annotations

import bz2
import glob
import io
import os
import re
import struct
import time

import numpy as np
import pytest
from PIL import Image

from omega.errors import OmegaError
from omega.viz.render import (
    CELL_H,
    CELL_W,
    frame_to_ansi,
    frame_to_image,
    play_in_terminal,
    write_gif,
)
from omega.viz.ttyrec import Episode, EpisodeFileError, read_ttyrec

ANSI_RE = re.compile(r"\033\[[0-9;?]*[A-Za-z]")
N_STEPS = 20


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Records one short MiniHack episode; returns (ttyrec path, observations, actions, done)."""
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("minihack")
    savedir = tmp_path_factory.mktemp("ttyrecs")
    env = gym.make(
        "MiniHack-Room-5x5-v0",
        savedir=str(savedir),
        save_ttyrec_every=1,
        observation_keys=("tty_chars", "tty_colors", "tty_cursor"),
    )
    rng = np.random.default_rng(0)
    try:
        obs, _ = env.reset(seed=0)
        # NLE reuses its observation buffers between steps: copy.
        observations = [{k: v.copy() for k, v in obs.items()}]
        keys = []
        done = False
        for _ in range(N_STEPS):
            a = int(rng.integers(env.action_space.n))
            keys.append(int(env.unwrapped.actions[a]))
            obs, _, term, trunc, _ = env.step(a)
            observations.append({k: v.copy() for k, v in obs.items()})
            if term or trunc:
                done = True
                break
        (path,) = glob.glob(os.path.join(savedir, "*.ttyrec3.bz2"))
        # The bz2 stream is only written out when the env is closed (or reset).
        assert os.path.getsize(path) == 0
    finally:
        env.close()
    assert os.path.getsize(path) > 0
    return path, observations, keys, done


@pytest.fixture(scope="module")
def episode(recorded) -> Episode:
    return read_ttyrec(recorded[0])


def _find(ep: Episode, obs) -> int:
    for t in range(len(ep)):
        if np.array_equal(ep.chars[t], obs["tty_chars"]) and np.array_equal(
            ep.colors[t], obs["tty_colors"]
        ):
            return t
    raise AssertionError("observation not found among decoded frames")


def test_read_recorded_episode_shapes(episode):
    T = len(episode)
    assert T > 1
    assert episode.version == 3 and not episode.truncated
    assert episode.chars.shape == (T, 24, 80) and episode.chars.dtype == np.uint8
    assert episode.colors.shape == (T, 24, 80) and episode.colors.dtype == np.int8
    assert episode.cursors.shape == (T, 2)
    assert episode.timestamps.shape == (T,) and episode.timestamps.dtype == np.int64
    assert episode.actions.shape == (T,)
    assert np.all(np.diff(episode.timestamps) >= 0)
    assert episode.chars.any(axis=(1, 2)).all()  # no all-zero padding frames left
    assert (episode.chars == ord("@")).any(axis=(1, 2)).sum() >= T - 1
    assert "welcome to NetHack" in episode.text(0)


def test_frames_match_env_observations(recorded, episode):
    _, observations, keys, done = recorded
    # Frames before the reset observation are start-up screens NLE dismissed in reset(). How
    # many depends on the calendar: NetHack adds a greeting that needs a --More-- at full and
    # new moon and on Friday the 13th (k0 == 1), and none on other days (k0 == 0).
    k0 = _find(episode, observations[0])
    assert k0 in (0, 1)
    assert all(int(a) != 0 for a in episode.actions[:k0])  # the keys NLE sent to dismiss them
    # Frame k0 + j is exactly the observation after j steps (chars, colours and cursor),
    # and actions[k0 + j] is the key the (j+1)-th step sent.
    checked = observations if not done else observations[:-1]
    for j, obs in enumerate(checked):
        assert np.array_equal(episode.chars[k0 + j], obs["tty_chars"]), j
        assert np.array_equal(episode.colors[k0 + j], obs["tty_colors"]), j
        assert np.array_equal(episode.cursors[k0 + j], obs["tty_cursor"]), j
    assert [int(a) for a in episode.actions[k0 : k0 + len(keys)]] == keys
    if not done:
        # The final screen (no key answered it) is kept, with action 0.
        assert len(episode) == k0 + len(observations)
        assert episode.actions[-1] == 0


def test_frame_to_ansi_contains_frame_text(episode):
    t = len(episode) - 1
    s = frame_to_ansi(episode.chars[t], episode.colors[t], cursor=episode.cursors[t])
    plain = ANSI_RE.sub("", s).split("\n")
    assert len(plain) == 24
    assert [line.rstrip() for line in plain] == episode.text(t).split("\n")
    assert "@" in s and "\033[" in s


def test_frame_to_ansi_colours_and_reverse():
    chars = np.full((1, 4), ord("x"), dtype=np.uint8)
    colors = np.array([[1, 9, 2 + 16, 7]], dtype=np.int8)
    s = frame_to_ansi(chars, colors, cursor=(0, 3))
    assert "\033[0;31mx" in s  # CLR_RED
    assert "\033[0;91mx" in s  # CLR_ORANGE -> bright red
    assert "\033[0;32;7mx" in s  # reverse green
    assert "\033[0;37;4mx" in s  # gray, underlined cursor
    assert s.endswith("\033[0m")


def test_frame_to_image(episode):
    t = len(episode) - 1
    img = frame_to_image(episode.chars[t], episode.colors[t])
    assert img.size == (80 * CELL_W, 24 * CELL_H)
    assert img.mode == "P"
    idx = np.asarray(img)
    assert len(np.unique(idx)) >= 3  # background + several text colours
    # Every non-blank cell gets some lit pixels; blank cells stay black.
    cells = idx.reshape(24, CELL_H, 80, CELL_W).transpose(0, 2, 1, 3).reshape(24, 80, -1)
    lit = cells.any(axis=2)
    printable = (episode.chars[t] > 32) & (episode.chars[t] < 127)
    assert np.array_equal(lit, printable)
    big = frame_to_image(episode.chars[t], episode.colors[t], scale=2)
    assert big.size == (160 * CELL_W, 48 * CELL_H)


def test_write_gif(episode, tmp_path):
    out = tmp_path / "gifs" / "episode.gif"
    assert write_gif(episode, out, fps=20) == out
    assert os.listdir(out.parent) == ["episode.gif"]  # no temp file left behind
    with Image.open(out) as im:
        assert im.format == "GIF"
        assert im.n_frames > 1
        assert im.size == (80 * CELL_W, 24 * CELL_H)
        im.seek(im.n_frames - 1)
        assert im.info["duration"] >= 2000  # the final frame is held
    cropped = tmp_path / "cropped.gif"
    write_gif(episode, cropped, max_frames=3, crop_rows=(1, 22), scale=2)
    with Image.open(cropped) as im:
        assert im.size == (80 * CELL_W * 2, 21 * CELL_H * 2)
        assert 1 < im.n_frames <= 3


def test_play_in_terminal_fast(episode):
    buf = io.StringIO()
    start = time.monotonic()
    shown = play_in_terminal(episode, speed=1e6, out=buf)
    assert time.monotonic() - start < 5
    assert shown == len(episode)
    text = buf.getvalue()
    assert text.startswith("\033[?25l\033[H\033[2J")
    assert text.count("\033[H") == len(episode) + 1
    assert "@" in text
    with pytest.raises(ValueError):
        play_in_terminal(episode, speed=0, out=buf)


def _v1_ttyrec(chunks: list[bytes]) -> bytes:
    return b"".join(
        struct.pack("<iii", 1_700_000_000 + i, 0, len(c)) + c for i, c in enumerate(chunks)
    )


def test_read_v1_ttyrec_keeps_last_frame(tmp_path):
    path = tmp_path / "game.ttyrec.bz2"
    path.write_bytes(bz2.compress(_v1_ttyrec([b"\033[2J\033[HHello", b"\033[2;1H\033[1;31mWorld"])))
    ep = read_ttyrec(path)
    assert ep.version == 1 and len(ep) == 2
    assert ep.text(0).startswith("Hello")
    assert ep.text(1).split("\n")[:2] == ["Hello", "World"]
    assert list(ep.colors[1, 1, :5]) == [9] * 5  # bold red = CLR_ORANGE
    assert list(ep.timestamps) == [1_700_000_000_000_000, 1_700_000_001_000_000]
    assert not ep.actions.any()
    # Uncompressed files work too.
    plain = tmp_path / "game.ttyrec"
    plain.write_bytes(_v1_ttyrec([b"abc"]))
    assert read_ttyrec(plain).text(0).split("\n")[0] == "abc"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"", "empty"),
        (np.random.default_rng(1).bytes(4096), "not a ttyrec file"),
        (bz2.compress(np.random.default_rng(2).bytes(4096)), "not a ttyrec file"),
        (b"BZh91AY&SY" + np.random.default_rng(3).bytes(500), "bzip2"),
    ],
    ids=["missing", "empty", "random-bytes", "bz2-of-random-bytes", "corrupt-bz2"],
)
def test_bad_files_raise_episode_file_error(tmp_path, content, message):
    path = tmp_path / "bad.ttyrec3.bz2"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(EpisodeFileError, match=message) as info:
        read_ttyrec(path)
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, OmegaError)
    assert str(err).startswith(f"cannot read episode file {path}: ")
    assert "\n" not in str(err)


def test_truncated_recording_keeps_complete_records(recorded, tmp_path):
    data = bz2.decompress(open(recorded[0], "rb").read())
    path = tmp_path / "partial.ttyrec3"
    path.write_bytes(data[: len(data) * 2 // 3])
    ep = read_ttyrec(path)
    assert ep.truncated and ep.version == 3
    assert 0 < len(ep) < len(read_ttyrec(recorded[0]))


def test_recorded_death_has_no_missing_score_file_message(tmp_path):
    """NLE creates only one of NetHack's three score files beside a recording; the game's end
    screens then read "Cannot open file .../nle.<pid>.logfile" unless omega creates the rest."""
    pytest.importorskip("minihack")
    from omega.envs import make

    env = make("MiniHack-CorridorBattle-v0", observation_keys=["glyphs_crop", "blstats"],
               record_dir=tmp_path, record_every=1)
    rng = np.random.default_rng(0)
    try:
        for episode_seed in range(5):  # a random hero dies among the rats within ~100 steps
            env.reset(seed=episode_seed)
            for _ in range(500):
                _, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
                if term or trunc:
                    break
    finally:
        env.close()
    screens = ["\n".join(bytes(row).decode("latin-1") for row in frame)
               for path in sorted(tmp_path.glob("*.ttyrec*"))
               for frame in read_ttyrec(path).chars]
    assert any("You died" in s for s in screens), "no episode ended in a death"
    assert not [s for s in screens if "Cannot open file" in s]

"""Reading recorded NetHack episodes (ttyrec files) into arrays of terminal frames.

NLE records an episode when its env is made with ``savedir=DIR, save_ttyrec_every=N``; the
file ``DIR/nle.<pid>.<episode>.ttyrec3.bz2`` is complete once the env is closed or reset.
:func:`read_ttyrec` decodes such a file (and the older ``.ttyrec2.bz2`` / alt.org
``.ttyrec.bz2`` formats, compressed or not) with NLE's own terminal emulator
(``nle._pyconverter.Converter``) into one 24x80 screen per frame.

Frame alignment (ttyrec v2/v3, i.e. NLE recordings): the recorder writes the screen
output, then the keypress sent in response to it. ``Episode`` frame ``t`` is the screen
the keypress ``actions[t]`` (an ASCII code, e.g. ``ord('k')``) was sent to. The first
``k0`` frames are the game's own start-up screens that the env dismissed inside ``reset()``,
so the observation returned by ``reset()`` is frame ``k0`` and the observation after the
``j``-th ``step()`` is frame ``k0 + j``. For MiniHack ``k0`` depends on the date: on most
days it is 0 (the reset observation is the "Hello Agent, welcome to NetHack!" screen
itself); at full and new moon and on Friday the 13th NetHack adds a greeting behind a
``--More--`` that the env answers, and ``k0`` is 1.
The converter only emits a frame when a keypress follows it; the final screen (after the
last step) has none, so this module appends one with ``actions[-1] == 0`` ("no key").

For ttyrec v1 (plain ttyrec, e.g. alt.org games) every recorded output chunk is one frame
and no keypresses are recorded (``actions`` is all zeros).

Several games per file: NLE keeps writing to a recording until the env resets into the
next recorded episode, so with ``save_ttyrec_every`` N > 1 one file holds N games, each
followed by the end-of-game screens NetHack shows (for a game NLE ends itself, the
``M-q`` quit key, "Really quit?", the inventory, attributes, "Goodbye ..."; after a death,
the same screens after "You die..."). :func:`split_games` finds the games in a file.
"""

from __future__ import annotations

import bz2
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omega.errors import OmegaError

ROWS = 24
COLS = 80

# Largest plausible single ttyrec record; anything bigger means we are not reading a ttyrec.
_MAX_RECORD_LEN = 1 << 24
_CH_OUTPUT, _CH_INPUT, _CH_SCORE = 0, 1, 2
# Appended after the real records: a harmless output chunk (SGR reset). NLE 1.3's converter
# never processes the last record of a stream, so the record we care about must not be last.
_PAD_BODY = b"\x1b[m"


class EpisodeFileError(OmegaError, ValueError):
    """An episode file that is missing, empty, not a ttyrec, or corrupt (one-line message)."""


@dataclass
class Episode:
    """A decoded episode: one terminal screen per frame.

    Attributes:
        chars: ``uint8[T, rows, cols]`` character codes (ASCII; DEC/IBM graphics are mapped
            to ASCII by the converter).
        colors: ``int8[T, rows, cols]`` NetHack colours 0-15 (CLR_BLACK .. CLR_WHITE; 8 is
            NO_COLOR/dark grey), plus 16 where the cell is drawn in reverse video.
            Same encoding as NLE's ``tty_colors`` observation.
        cursors: ``int16[T, 2]`` cursor (row, col); col may equal ``cols`` when off-screen.
        timestamps: ``int64[T]`` wall-clock time of each frame in microseconds since the epoch.
        actions: ``uint8[T]`` keypress (ASCII code) sent in response to frame ``t``;
            0 for the final frame and for v1 files, which record no keypresses.
        scores: ``int32[T]`` in-game score at frame ``t`` (v3 files only; zeros otherwise).
        version: ttyrec format version (1, 2 or 3).
        path: the file the episode was read from.
        truncated: True when the file ended mid-record or mid-stream (e.g. copied while the
            game was still being recorded) and only its complete records were decoded.
    """

    chars: np.ndarray
    colors: np.ndarray
    cursors: np.ndarray
    timestamps: np.ndarray
    actions: np.ndarray
    scores: np.ndarray | None = None
    version: int = 3
    path: str = ""
    truncated: bool = False

    def __len__(self) -> int:
        return int(self.chars.shape[0])

    @property
    def duration_s(self) -> float:
        """Recorded wall-clock time from the first to the last frame, in seconds."""
        if len(self) < 2:
            return 0.0
        return float(self.timestamps[-1] - self.timestamps[0]) / 1e6

    def text(self, t: int) -> str:
        """Frame ``t`` as plain text, one line per row, trailing spaces stripped."""
        rows = []
        for row in self.chars[t]:
            rows.append(bytes(c if 32 <= c < 127 else 32 for c in row).decode("ascii").rstrip())
        return "\n".join(rows)


QUIT_KEY = 0x80 | ord("q")  # M-q: NLE ends a running game with it, then answers 'y'
_GAME_START = re.compile(rb"^\s*Hello .*, welcome to NetHack!")
_STATUS = re.compile(rb"Dlvl:\d+")
_DEATH = re.compile(rb"You die\.\.\.")


@dataclass(frozen=True)
class Game:
    """Frames ``start`` .. ``stop - 1`` of an :class:`Episode` are one game; ``finished``:
    it ended in the file (the recording did not stop while it ran)."""

    start: int
    stop: int
    finished: bool

    def __len__(self) -> int:
        return self.stop - self.start


def split_games(episode: Episode) -> list[Game]:
    """The games in a recording, oldest first, without NetHack's end-of-game screens.

    A game starts at a frame whose top line is NetHack's greeting ("Hello Agent, welcome to
    NetHack!"; frames before the first greeting belong to the first game). It ends at the
    frame NLE sent its quit key (``M-q``) to, which is the game's last observation; at
    "You die..." when the game ended in a death; else at the last frame that still shows the
    status lines ("Dlvl:"). What follows is NetHack's end of game: "Really quit?", the
    disclosure of inventory and attributes, the "Goodbye" screens. A game that neither ends so nor is followed by another one was still
    running when the file was closed (``finished`` False).
    """
    n = len(episode)
    starts = [t for t in range(n) if _GAME_START.match(bytes(episode.chars[t, 0]))]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    games = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else n
        quits = np.flatnonzero(episode.actions[start:end] == QUIT_KEY)
        if len(quits):
            games.append(Game(start, start + int(quits[0]) + 1, True))
            continue
        died = [t for t in range(start, end) if _DEATH.search(bytes(episode.chars[t, 0]))]
        status = [t for t in range(start, end)
                  if any(_STATUS.search(bytes(row)) for row in episode.chars[t, -3:])]
        stop = died[0] + 1 if died else status[-1] + 1 if status else end
        games.append(Game(start, stop, stop < end or i + 1 < len(starts)))
    return games


def select_game(episode: Episode, index: int | None = None) -> tuple[Game, int, list[Game]]:
    """(game, its 1-based number, all games) of a recording: game ``index`` (1-based),
    or by default the newest finished one (the newest one when none has finished).
    :class:`EpisodeFileError` when ``index`` is out of range."""
    games = split_games(episode)
    if index is None:
        finished = [i for i, g in enumerate(games) if g.finished]
        i = finished[-1] if finished else len(games) - 1
        return games[i], i + 1, games
    if not 1 <= index <= len(games):
        raise EpisodeFileError(f"{episode.path} holds {len(games)} episode(s); "
                               f"--episode must be between 1 and {len(games)}, got {index}")
    return games[index - 1], index, games


def slice_episode(episode: Episode, start: int, stop: int) -> Episode:
    """Frames ``start`` .. ``stop - 1`` of an episode as an :class:`Episode`."""
    s = slice(start, stop)
    return Episode(chars=episode.chars[s], colors=episode.colors[s],
                   cursors=episode.cursors[s], timestamps=episode.timestamps[s],
                   actions=episode.actions[s],
                   scores=None if episode.scores is None else episode.scores[s],
                   version=episode.version, path=episode.path, truncated=episode.truncated)


@dataclass
class _Record:
    sec: int
    usec: int
    channel: int
    start: int  # offset of the header in the decompressed data
    end: int  # offset just past the body


def read_ttyrec(path: str | os.PathLike, rows: int = ROWS, cols: int = COLS) -> Episode:
    """Decodes a whole ttyrec file into an :class:`Episode`.

    Accepts ``.ttyrec3.bz2`` / ``.ttyrec2.bz2`` (NLE) and ``.ttyrec.bz2`` (v1) files, bzip2
    compressed or not; the version is detected from the content, the file name only breaks
    ties. Raises :class:`EpisodeFileError` (a ``ValueError``) with a one-line message for a
    missing, empty, unreadable or corrupt file.
    """
    path = Path(path)
    data, truncated = _load_bytes(path)
    version, records, tail_truncated = _parse(path, data)
    truncated = truncated or tail_truncated
    return _convert(path, data, version, records, rows, cols, truncated)


def _err(path: Path, why: str) -> EpisodeFileError:
    return EpisodeFileError(f"cannot read episode file {path}: {why}")


def _load_bytes(path: Path) -> tuple[bytes, bool]:
    """Returns the (decompressed) ttyrec bytes and whether the bz2 stream was cut short."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _err(path, "no such file") from None
    except IsADirectoryError:
        raise _err(path, "it is a directory") from None
    except OSError as e:
        raise _err(path, e.strerror or str(e)) from None
    if not raw:
        raise _err(
            path,
            "the file is empty (an episode still being recorded is written when the env "
            "is closed or reset)",
        )
    if not raw.startswith(b"BZh"):
        return raw, False
    # Decompress stream by stream (like bz2.open) but keep what was decoded before an
    # early end, so a partly written recording still shows its complete records.
    out: list[bytes] = []
    rest = raw
    truncated = False
    while rest:
        dec = bz2.BZ2Decompressor()
        try:
            out.append(dec.decompress(rest))
        except (OSError, ValueError) as e:
            if not out or not any(out):
                raise _err(path, f"not a valid bzip2 file ({e})") from None
            truncated = True
            break
        if not dec.eof:
            truncated = True
            break
        rest = dec.unused_data
        if rest and not rest.startswith(b"BZh"):
            break  # trailing garbage after the last stream: ignore, as bzip2 does
    data = b"".join(out)
    if not data:
        raise _err(path, "the bzip2 stream is empty or cut short (still being recorded?)")
    return data, truncated


def _scan(data: bytes, header_size: int) -> tuple[list[_Record], bool] | None:
    """Splits ``data`` into ttyrec records; None when it is not this ttyrec layout.

    A trailing incomplete record is dropped and reported (second element True).
    """
    records: list[_Record] = []
    fmt = "<iiiB" if header_size == 13 else "<iii"
    unpack = struct.Struct(fmt).unpack_from
    n = len(data)
    i = 0
    while i < n:
        if i + header_size > n:
            return (records, True) if records else None
        fields = unpack(data, i)
        sec, usec, length = fields[0], fields[1], fields[2]
        channel = fields[3] if header_size == 13 else _CH_OUTPUT
        if not (0 <= usec < 1_000_000 and sec >= 0 and 0 <= length <= _MAX_RECORD_LEN):
            return None
        if channel > _CH_SCORE or (channel == _CH_SCORE and length != 4):
            return None
        if channel == _CH_INPUT and length < 1:
            return None
        end = i + header_size + length
        if end > n:
            return (records, True) if records else None
        records.append(_Record(sec, usec, channel, i, end))
        i = end
    return records, False


def _version_hint(path: Path) -> int | None:
    name = path.name
    for v in (3, 2):
        if f".ttyrec{v}" in name:
            return v
    if ".ttyrec" in name:
        return 1
    return None


def _parse(path: Path, data: bytes) -> tuple[int, list[_Record], bool]:
    """Detects the ttyrec version and splits the data into records."""
    v23 = _scan(data, 13)
    v1 = _scan(data, 12)
    if v23 is None and v1 is None:
        raise _err(
            path,
            "not a ttyrec file (no valid ttyrec v1/v2/v3 record headers; "
            f"first bytes: {data[:8].hex(' ')})",
        )
    hint = _version_hint(path)
    if v23 is not None and v1 is not None:
        # Both layouts fit (rare): prefer a complete parse, then the name, then keypresses.
        def rank(parsed: tuple[list[_Record], bool], is_v1: bool) -> tuple:
            recs, trunc = parsed
            by_name = (hint == 1) == is_v1 if hint is not None else False
            inputs = not is_v1 and any(r.channel == _CH_INPUT for r in recs)
            return (not trunc, by_name, inputs)

        use_v1 = rank(v1, True) > rank(v23, False)
    else:
        use_v1 = v23 is None
    if use_v1:
        records, trunc = v1
        return 1, records, trunc
    records, trunc = v23
    # v2 files have only output/input channels; v3 adds score records.
    has_scores = any(r.channel == _CH_SCORE for r in records)
    version = 3 if has_scores or hint == 3 else 2
    return version, records, trunc


def _convert(
    path: Path,
    data: bytes,
    version: int,
    records: list[_Record],
    rows: int,
    cols: int,
    truncated: bool,
) -> Episode:
    from nle import _pyconverter

    header = struct.Struct("<iiiB" if version > 1 else "<iii")

    def pack(sec: int, usec: int, channel: int, body: bytes) -> bytes:
        fields = (sec, usec, len(body), channel) if version > 1 else (sec, usec, len(body))
        return header.pack(*fields) + body

    # Zero-length records stop the converter ("zero-length header"); drop them.
    kept = [r for r in records if r.end - r.start > header.size]
    if not kept:
        raise _err(path, "the recording contains no terminal output")
    if version > 1:
        expected = sum(r.channel == _CH_INPUT for r in kept)
        last_input = max((i for i, r in enumerate(kept) if r.channel == _CH_INPUT), default=-1)
        final_screen_pending = any(r.channel == _CH_OUTPUT for r in kept[last_input + 1 :])
        n_scores = sum(r.channel == _CH_SCORE for r in kept)
    else:
        expected = len(kept)
        final_screen_pending = False
        n_scores = 0

    mv = memoryview(data)
    parts = [mv[r.start : r.end] for r in kept]
    last = kept[-1]
    if final_screen_pending:
        # Emit the final screen: a "no key" input, then padding so it is not the last record.
        parts.append(pack(last.sec, last.usec, _CH_INPUT, b"\x00"))
        expected += 1
    parts.append(pack(last.sec, last.usec, _CH_OUTPUT, _PAD_BODY))

    n = max(expected, n_scores) + 2  # room for every record the converter may write
    chars = np.zeros((n, rows, cols), dtype=np.uint8)
    colors = np.zeros((n, rows, cols), dtype=np.int8)
    cursors = np.zeros((n, 2), dtype=np.int16)
    timestamps = np.zeros((n,), dtype=np.int64)
    actions = np.zeros((n,), dtype=np.uint8)
    scores = np.zeros((n,), dtype=np.int32)

    with tempfile.TemporaryDirectory(prefix="omega-ttyrec-") as tmp:
        tmp_path = os.path.join(tmp, f"episode.ttyrec{version}.bz2")
        with open(tmp_path, "wb") as f:
            f.write(bz2.compress(b"".join(parts), compresslevel=1))
        try:
            conv = _pyconverter.Converter(rows, cols, version)
            conv.load_ttyrec(tmp_path)
            remaining = conv.convert(chars, colors, cursors, timestamps, actions, scores)
        except Exception as e:  # the C++ converter raises assorted types
            raise _err(path, f"the terminal converter failed ({type(e).__name__}: {e})") from None

    produced = n - int(remaining)
    t = min(produced, expected)
    # Drop trailing frames the converter left unwritten (all-zero chars).
    while t > 0 and not chars[t - 1].any():
        t -= 1
    if t == 0:
        raise _err(path, "the recording contains no complete frames")

    return Episode(
        chars=chars[:t],
        colors=colors[:t],
        cursors=cursors[:t],
        timestamps=timestamps[:t],
        actions=actions[:t],
        scores=scores[:t] if version >= 3 else np.zeros((t,), dtype=np.int32),
        version=version,
        path=str(path),
        truncated=truncated,
    )

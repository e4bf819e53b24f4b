"""Showing NetHack terminal frames: ANSI text for a terminal, images and animated GIFs.

Colours follow NetHack's (and NLE's ``tty_colors``) encoding: 0-15 are CLR_BLACK, RED,
GREEN, BROWN, BLUE, MAGENTA, CYAN, GRAY, NO_COLOR (dark grey), ORANGE, BRIGHT_GREEN,
YELLOW, BRIGHT_BLUE, BRIGHT_MAGENTA, BRIGHT_CYAN, WHITE; +16 marks reverse video.
CLR_BLACK text is shown dark grey (like NO_COLOR) so it stays visible on black.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from omega.training.files import FILE_MODE
from omega.viz.ttyrec import Episode

CELL_W = 8
CELL_H = 14

# ANSI SGR foreground codes for NetHack colours 0-15 (16-colour terminals).
_ANSI_FG = (90, 31, 32, 33, 34, 35, 36, 37, 90, 91, 92, 93, 94, 95, 96, 97)

# RGB for NetHack colours 0-15 (VGA-like, blue lightened to be readable on black).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),  # 0 CLR_BLACK (background; black text is drawn as 8)
    (204, 0, 0),  # 1 CLR_RED
    (0, 187, 0),  # 2 CLR_GREEN
    (170, 110, 20),  # 3 CLR_BROWN
    (50, 80, 230),  # 4 CLR_BLUE
    (190, 0, 190),  # 5 CLR_MAGENTA
    (0, 180, 180),  # 6 CLR_CYAN
    (190, 190, 190),  # 7 CLR_GRAY
    (110, 110, 110),  # 8 NO_COLOR (dark grey)
    (255, 140, 0),  # 9 CLR_ORANGE
    (85, 255, 85),  # 10 CLR_BRIGHT_GREEN
    (255, 255, 85),  # 11 CLR_YELLOW
    (100, 140, 255),  # 12 CLR_BRIGHT_BLUE
    (255, 85, 255),  # 13 CLR_BRIGHT_MAGENTA
    (85, 255, 255),  # 14 CLR_BRIGHT_CYAN
    (255, 255, 255),  # 15 CLR_WHITE
)
_PALETTE_BYTES = bytes(c for rgb in PALETTE for c in rgb) + bytes(3 * (256 - len(PALETTE)))

_REVERSE = 16
_CLEAR_SCREEN = "\033[H\033[2J"
_HOME = "\033[H"


@functools.lru_cache(maxsize=1)
def _char_table() -> tuple[str, ...]:
    """Printable string for each byte value (control codes become spaces)."""
    table = []
    for c in range(256):
        if 32 <= c < 127:
            table.append(chr(c))
        elif c >= 128:
            table.append(bytes([c]).decode("cp437"))
        else:
            table.append(" ")
    return tuple(table)


def _split_colors(colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colour 0-15, reverse flag) arrays from NLE's colour codes."""
    codes = np.asarray(colors).astype(np.int16) & 31
    return codes & 15, (codes & _REVERSE) != 0


def frame_to_ansi(chars: np.ndarray, colors: np.ndarray, cursor=None) -> str:
    """One frame as text with ANSI 16-colour escapes (rows separated by newlines).

    Reverse-video cells use SGR 7; the cell at ``cursor`` (row, col), if given, is
    underlined. Escapes are only emitted where the style changes.
    """
    chars = np.asarray(chars)
    base, reverse = _split_colors(colors)
    if chars.shape != base.shape or chars.ndim != 2:
        raise ValueError(f"chars {chars.shape} and colors {base.shape} must be equal 2-D shapes")
    table = _char_table()
    cur = tuple(int(x) for x in cursor) if cursor is not None else (-1, -1)
    lines = []
    for r in range(chars.shape[0]):
        parts = []
        style = None
        row_chars = chars[r].tolist()
        row_base = base[r].tolist()
        row_rev = reverse[r].tolist()
        for c, (ch, col, rev) in enumerate(zip(row_chars, row_base, row_rev, strict=True)):
            fg = 37 if (rev and col == 0) else _ANSI_FG[col]
            s = f"0;{fg}"
            if rev:
                s += ";7"
            if (r, c) == cur:
                s += ";4"
            if s != style:
                parts.append(f"\033[{s}m")
                style = s
            parts.append(table[ch])
        parts.append("\033[0m")
        lines.append("".join(parts))
    return "\n".join(lines)


def play_in_terminal(
    episode: Episode,
    speed: float = 1.0,
    out: TextIO | None = None,
    max_delay_s: float = 1.0,
    min_delay_s: float = 0.05,
    start: int = 0,
    stop: int | None = None,
) -> int:
    """Replays an episode in the terminal with its recorded timing; returns frames shown.

    The pause before frame ``t+1`` is the recorded gap clipped to
    ``[min_delay_s, max_delay_s]`` and divided by ``speed``. The floor matters for agent
    recordings, whose frames are a fraction of a millisecond apart; the cap skips idle
    time in human games. ``out`` defaults to ``sys.stdout``.
    """
    if not speed > 0:
        raise ValueError(f"speed must be positive, got {speed}")
    if min_delay_s < 0 or max_delay_s < min_delay_s:
        raise ValueError("need 0 <= min_delay_s <= max_delay_s")
    out = sys.stdout if out is None else out
    frames = range(len(episode))[start:stop]
    shown = 0
    out.write("\033[?25l" + _CLEAR_SCREEN)  # hide the real cursor while playing
    try:
        prev_ts = None
        for t in frames:
            ts = int(episode.timestamps[t])
            if prev_ts is not None:
                gap = min(max((ts - prev_ts) / 1e6, min_delay_s), max_delay_s) / speed
                if gap > 1e-4:
                    out.flush()
                    time.sleep(gap)
            prev_ts = ts
            out.write(
                _HOME + frame_to_ansi(episode.chars[t], episode.colors[t], episode.cursors[t])
            )
            shown += 1
    finally:
        out.write("\033[0m\033[?25h\n")
        out.flush()
    return shown


@functools.lru_cache(maxsize=8)
def _glyph_masks(cell_w: int = CELL_W, cell_h: int = CELL_H) -> np.ndarray:
    """bool[256, cell_h, cell_w]: pixels set for each character, drawn with Pillow's font.

    Uses Pillow's bundled default font (always available); each glyph is centred in its
    cell and squeezed horizontally if wider, so the proportional font keeps a fixed grid.
    """
    try:
        font = ImageFont.load_default(size=max(6, round(cell_h * 6 / 7)))
    except TypeError:  # Pillow < 10.1 has no size argument
        font = ImageFont.load_default()
    glyphs = [chr(c) if 33 <= c < 127 else "" for c in range(256)]
    for c in range(128, 256):
        glyphs[c] = "?"
    # Vertical placement: centre the union of all ASCII glyph boxes in the cell.
    boxes = [font.getbbox(g) for g in glyphs if g]
    top = min(b[1] for b in boxes)
    bottom = max(b[3] for b in boxes)
    y0 = (cell_h - (bottom - top)) // 2 - top
    masks = np.zeros((256, cell_h, cell_w), dtype=bool)
    pad = cell_w * 2
    for code, g in enumerate(glyphs):
        if not g:
            continue
        left, _, right, _ = font.getbbox(g)
        width = max(1, right - left)
        canvas = Image.new("L", (width + 2 * pad, cell_h), 0)
        ImageDraw.Draw(canvas).text((pad - left, y0), g, fill=255, font=font)
        glyph = canvas.crop((pad, 0, pad + width, cell_h))
        if width > cell_w:
            glyph = glyph.resize((cell_w, cell_h), Image.LANCZOS)
            width = cell_w
        x = (cell_w - width) // 2
        cell = np.zeros((cell_h, cell_w), dtype=np.uint8)
        cell[:, x : x + width] = np.asarray(glyph)
        masks[code] = cell >= 100
    return masks


def _frame_indices(chars: np.ndarray, colors: np.ndarray, cursor, cell_w: int, cell_h: int):
    base, reverse = _split_colors(colors)
    fg = np.where(base == 0, 8, base).astype(np.uint8)
    bg = np.zeros_like(fg)
    # Reverse video: the colour becomes the background, the glyph is drawn black.
    rev_bg = np.where(base == 0, 7, base).astype(np.uint8)
    fg = np.where(reverse, 0, fg).astype(np.uint8)
    bg = np.where(reverse, rev_bg, bg).astype(np.uint8)
    masks = _glyph_masks(cell_w, cell_h)[np.asarray(chars, dtype=np.uint8)]  # [R,C,h,w]
    idx = np.where(masks, fg[:, :, None, None], bg[:, :, None, None])
    if cursor is not None:
        r, c = int(cursor[0]), int(cursor[1])
        if 0 <= r < idx.shape[0] and 0 <= c < idx.shape[1]:
            idx[r, c, -2:, :] = 7  # underline bar, like a terminal cursor
    rows, cols = chars.shape
    return idx.transpose(0, 2, 1, 3).reshape(rows * cell_h, cols * cell_w).astype(np.uint8)


def frame_to_image(
    chars: np.ndarray,
    colors: np.ndarray,
    cursor=None,
    scale: int = 1,
    cell_w: int = CELL_W,
    cell_h: int = CELL_H,
) -> Image.Image:
    """Draws one frame: each character in its colour on black, on a fixed cell grid.

    Returns a palette-mode ("P") image of ``cols*cell_w*scale`` x ``rows*cell_h*scale``
    pixels whose palette indices 0-15 are the NetHack colours (``.convert("RGB")`` for
    RGB). ``cursor`` (row, col), if given, is drawn as an underline.
    """
    chars = np.asarray(chars)
    if chars.ndim != 2 or np.shape(colors) != chars.shape:
        raise ValueError(
            f"chars {chars.shape} and colors {np.shape(colors)} must be equal 2-D shapes"
        )
    idx = _frame_indices(chars, colors, cursor, cell_w, cell_h)
    if scale != 1:
        if scale < 1 or int(scale) != scale:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        idx = np.repeat(np.repeat(idx, int(scale), axis=0), int(scale), axis=1)
    idx = np.ascontiguousarray(idx)
    img = Image.frombytes("P", (idx.shape[1], idx.shape[0]), idx.tobytes())
    img.putpalette(_PALETTE_BYTES)
    return img


def _rows_slice(crop_rows) -> slice:
    if crop_rows is None:
        return slice(None)
    if isinstance(crop_rows, slice):
        return crop_rows
    start, stop = crop_rows
    return slice(start, stop)


def write_gif(
    episode: Episode,
    path: str | os.PathLike,
    fps: float = 10.0,
    max_frames: int | None = 500,
    crop_rows=None,
    scale: int = 1,
    hold_last_s: float = 2.0,
    cursor: bool = False,
) -> Path:
    """Writes the episode as a looping animated GIF; returns the path.

    Each distinct frame is shown for ``1/fps`` seconds; consecutive identical frames are
    merged into one longer frame (at most 1 s, or ``1/fps`` if longer). If more than
    ``max_frames`` distinct frames remain, they are subsampled evenly (first and last
    kept; all frames are held in memory while writing, about 215 kB each at scale 1).
    ``crop_rows`` = ``(start, stop)`` or a ``slice`` keeps only those terminal rows,
    e.g. ``(1, 22)`` drops the message line and the two status lines. The last frame is
    held ``hold_last_s`` longer. The file is written to a temporary file in the same
    directory and then renamed, so readers never see a partial GIF.
    """
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    n = len(episode)
    if n == 0:
        raise ValueError("the episode has no frames")
    path = Path(path)
    rows = _rows_slice(crop_rows)
    chars = episode.chars[:, rows]
    colors = episode.colors[:, rows]
    if chars.shape[1] == 0:
        raise ValueError(f"crop_rows={crop_rows!r} keeps no rows")
    row_offset = range(episode.chars.shape[1])[rows].start

    starts, counts = _distinct_frames(chars, colors, n, max_frames)
    durations = _frame_durations(counts, fps, hold_last_s)
    images = []
    for t in starts:
        cur = None
        if cursor:
            cur = (int(episode.cursors[t, 0]) - row_offset, int(episode.cursors[t, 1]))
        images.append(frame_to_image(chars[t], colors[t], cursor=cur, scale=scale))
    _save_gif(images, durations, path)
    return path


def _distinct_frames(chars: np.ndarray, colors: np.ndarray, n: int,
                     max_frames: int | None) -> tuple[np.ndarray, np.ndarray]:
    """First frame index and length of each run of identical frames among the ``n`` frames,
    subsampled evenly to ``max_frames`` runs (each then counted as one frame)."""
    same = np.zeros(n, dtype=bool)
    if n > 1:
        same[1:] = np.all(chars[1:] == chars[:-1], axis=(1, 2)) & np.all(
            colors[1:] == colors[:-1], axis=(1, 2)
        )
    starts = np.flatnonzero(~same)
    counts = np.diff(np.append(starts, n))
    if max_frames is not None and len(starts) > max_frames:
        pick = np.unique(np.linspace(0, len(starts) - 1, max_frames).round().astype(int))
        starts, counts = starts[pick], np.ones(len(pick), dtype=int)
    return starts, counts


def _frame_durations(counts: np.ndarray, fps: float, hold_last_s: float) -> list[int]:
    """GIF frame durations (ms): ``count / fps``, at most 1 s (or one frame if longer), the
    last one held ``hold_last_s`` longer."""
    frame_ms = max(20, round(1000.0 / fps))  # GIF players treat < 20 ms as 100 ms
    durations = [int(min(c * frame_ms, max(frame_ms, 1000))) for c in counts]
    durations[-1] += int(round(hold_last_s * 1000))
    return durations


def _save_gif(images: list[Image.Image], durations: list[int], path: Path) -> None:
    """Writes a looping GIF through a temporary file in the same directory, then renames it,
    so readers never see a partial GIF."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            images[0].save(
                f,
                format="GIF",
                save_all=True,
                append_images=images[1:],
                duration=durations if len(images) > 1 else durations[0],
                loop=0,
                optimize=False,
            )
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


__all__ = [
    "CELL_H",
    "CELL_W",
    "PALETTE",
    "frame_to_ansi",
    "frame_to_image",
    "play_in_terminal",
    "write_gif",
]

"""Recorded episodes: ttyrec decoding, terminal replay and GIF rendering."""

from omega.viz.render import frame_to_ansi, frame_to_image, play_in_terminal, write_gif
from omega.viz.ttyrec import Episode, EpisodeFileError, read_ttyrec

__all__ = ["Episode", "EpisodeFileError", "frame_to_ansi", "frame_to_image", "play_in_terminal",
           "read_ttyrec", "write_gif"]

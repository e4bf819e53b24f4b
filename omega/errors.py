"""User-facing errors: the CLI prints their message as one line and exits with their code.

Exit codes of the ``omega`` command: 0 success; 2 a problem the user can fix (arguments,
config, experiment dir, checkpoint; :class:`OmegaError`); 3 a file could not be read or
written (permissions, a read-only file system, a full disk; :class:`IOFailure` and any
``OSError``); 4 training diverged (:class:`DivergedError`); 130 / 143 stopped by SIGINT
(Ctrl-C) / SIGTERM, after saving a checkpoint. 1 is left to Python: an unexpected error
with a traceback.
"""

from __future__ import annotations

import errno

EXIT_USER = 2
EXIT_IO = 3
EXIT_DIVERGED = 4


class OmegaError(Exception):
    """A problem the user can fix (bad config, missing file, existing output dir, ...).

    The message is one readable line naming the problem and the fix.
    """

    exit_code = EXIT_USER


class ConfigError(OmegaError):
    """An invalid configuration value, key or file."""


class CheckpointError(OmegaError):
    """A checkpoint that is missing, corrupt or does not match the experiment."""


class IOFailure(OmegaError):
    """A file that could not be read or written; the message names it and the reason."""

    exit_code = EXIT_IO


class DivergedError(OmegaError):
    """Training produced a NaN or infinite loss or parameter."""

    exit_code = EXIT_DIVERGED


_HINTS = {
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some disk space or raise the quota",
    errno.EACCES: "check the permissions of the file and its folder",
    errno.EPERM: "check the permissions of the file and its folder",
    errno.EROFS: "the file system is read-only; use a writable folder",
}


def describe_os_error(e: OSError) -> str:
    """One line for an ``OSError``: what failed, on which file, and what to do."""
    what = e.strerror or str(e) or type(e).__name__
    where = f" '{e.filename}'" if e.filename is not None else ""
    if getattr(e, "filename2", None) is not None:
        where += f" -> '{e.filename2}'"
    hint = _HINTS.get(e.errno)
    return f"{what}{':' if where else ''}{where}" + (f"; {hint}" if hint else "")

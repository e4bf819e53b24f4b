"""User-facing errors: the CLI prints their message as one line and exits with code 2."""


class OmegaError(Exception):
    """A problem the user can fix (bad config, missing file, existing output dir, ...).

    The message is one readable line naming the problem and the fix.
    """


class ConfigError(OmegaError):
    """An invalid configuration value, key or file."""


class CheckpointError(OmegaError):
    """A checkpoint that is missing, corrupt or does not match the experiment."""

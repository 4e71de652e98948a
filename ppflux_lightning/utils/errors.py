"""Error types whose message is one readable line naming the bad value.

`UserError` is the family the command-line tools turn into `error: <message>` and exit code 2 (see `cli.py`):
a bad option, config key, input file or output path. Anything else is a bug and keeps its traceback.
"""


def abbreviate(keys, n=8):
    """At most `n` sorted keys for a one-line error message, then a count of the rest."""
    keys = sorted(keys)
    return keys if len(keys) <= n else keys[:n] + [f"... {len(keys) - n} more"]


class UserError(Exception):
    """A mistake in what the user gave (option, config, file, output path); the message names the value."""


class ConfigError(UserError, ValueError):
    """A bad configuration value or key."""


class CheckpointError(UserError, ValueError):
    """A checkpoint or weight file that is missing, corrupt or does not match the model."""


class InputFileError(UserError, ValueError):
    """A user file that cannot be read or parsed (bad JSON, truncated pickle, ...); the message names the file."""


class OutputExistsError(UserError, FileExistsError):
    """An output path that must not be replaced (a file, a foreign folder, the source, the working directory)."""


class DataError(UserError, RuntimeError):
    """A dataset that yields nothing usable (every record bad, an empty cache)."""

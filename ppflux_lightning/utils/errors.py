"""Error types whose message is one readable line naming the bad value."""


def abbreviate(keys, n=8):
    """At most `n` sorted keys for a one-line error message, then a count of the rest."""
    keys = sorted(keys)
    return keys if len(keys) <= n else keys[:n] + [f"... {len(keys) - n} more"]


class ConfigError(ValueError):
    """A bad configuration value or key."""


class CheckpointError(ValueError):
    """A checkpoint or weight file that is missing, corrupt or does not match the model."""

"""Error types whose message is one readable line naming the bad value."""


class ConfigError(ValueError):
    """A bad configuration value or key."""


class CheckpointError(ValueError):
    """A checkpoint or weight file that is missing, corrupt or does not match the model."""

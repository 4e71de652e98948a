"""The training engine: config schema, trainer, optimizer groups, checkpoints, logging, data parallelism."""

from .schema import DEFAULTS, REQUIRED

__all__ = ["DEFAULTS", "REQUIRED", "Trainer", "TrainingDiverged"]


def __getattr__(name):
    """`Trainer` and `TrainingDiverged` import Paddle: loaded on first use, so the schema and config checks stay
    light for the command-line tools' argument checks."""
    if name in ("Trainer", "TrainingDiverged"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

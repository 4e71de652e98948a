"""The training engine: config schema, trainer, optimizer groups, checkpoints, logging, data parallelism."""

from .schema import DEFAULTS, REQUIRED
from .trainer import Trainer, TrainingDiverged

__all__ = ["DEFAULTS", "REQUIRED", "Trainer", "TrainingDiverged"]

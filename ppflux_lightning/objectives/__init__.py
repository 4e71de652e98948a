"""FLUX-Lightning objectives: phased consistency, adversarial (per-block discriminator heads), DMD and reflow."""

from .base import GAUSSIAN, OBJECTIVES, UNIFORM, Conditioning, Objective, StepContext, sample_draws
from .recipe import DistillationRecipe, config_defaults
from .solver import EulerSolver

__all__ = ["GAUSSIAN", "OBJECTIVES", "UNIFORM", "Conditioning", "DistillationRecipe", "EulerSolver", "Objective",
           "StepContext", "config_defaults", "sample_draws"]

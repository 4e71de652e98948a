"""FLUX-Lightning objectives: phased consistency, adversarial (per-block discriminator heads), DMD and reflow."""

from .base import OBJECTIVES, Conditioning, Objective, StepContext, sample_draws
from .recipe import DistillationRecipe
from .solver import EulerSolver

__all__ = ["OBJECTIVES", "Conditioning", "DistillationRecipe", "EulerSolver", "Objective", "StepContext",
           "sample_draws"]

"""Models: the FLUX.1 transformer (Paddle), checkpoint layouts, text encoders and the VAE."""

from .flux_config import FluxConfig
from .flux_transformer import FluxTransformer2DModel

__all__ = ["FluxConfig", "FluxTransformer2DModel"]

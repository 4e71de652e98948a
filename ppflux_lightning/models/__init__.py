"""Models: the FLUX.1 transformer (Paddle), checkpoint layouts, text encoders and the VAE."""

from .flux_transformer import FluxConfig, FluxTransformer2DModel

__all__ = ["FluxConfig", "FluxTransformer2DModel"]

"""Pipelines: FLUX.1 text-to-image sampling, and a random tiny FLUX pipeline for tests and demos."""

from .flux_pipeline import (
    FluxPipeline,
    FluxPipelineOutput,
    latent_image_ids,
    make_latents,
    pack_latents,
    unpack_latents,
)
from .tiny import build_tiny_pipeline

__all__ = [
    "FluxPipeline",
    "FluxPipelineOutput",
    "build_tiny_pipeline",
    "latent_image_ids",
    "make_latents",
    "pack_latents",
    "unpack_latents",
]

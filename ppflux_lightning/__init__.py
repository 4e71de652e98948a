"""ppflux_lightning: FLUX.1 in PaddlePaddle, distilled to a 4-step LoRA student with the FLUX-Lightning recipe."""

from .utils.cpu import enable_fast_mkl

# Must run before paddle is first imported (MKL reads it at load time); a no-op off AMD or when already set.
enable_fast_mkl()

__version__ = "0.1.0"

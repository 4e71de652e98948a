"""ppflux_lightning: FLUX.1 in PaddlePaddle, distilled to a 4-step LoRA student with the FLUX-Lightning recipe."""

import importlib.util

from .utils.cpu import enable_fast_mkl

# Paddle is not an install requirement (setup.py), so a GPU machine keeps its paddlepaddle-gpu: say which to install.
if importlib.util.find_spec("paddle") is None:
    raise ImportError("ppflux_lightning needs PaddlePaddle, which is not installed: `pip install paddlepaddle` (CPU) "
                      "or `pip install paddlepaddle-gpu` (NVIDIA GPU; see https://www.paddlepaddle.org.cn/install)")

# Must run before paddle is first imported (MKL reads it at load time); a no-op off AMD or when already set.
enable_fast_mkl()

__version__ = "0.1.0"

import re

from setuptools import find_packages, setup

with open("ppflux_lightning/__init__.py") as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)
with open("requirements.txt") as f:
    pinned = [line.strip() for line in f if line.strip() and not line.startswith("#")]
# Paddle is left out: `paddlepaddle` (CPU) and `paddlepaddle-gpu` are different distributions of one package, and
# requiring either would install a second Paddle over the other. requirements.txt pins the CPU wheel for CI;
# importing ppflux_lightning without Paddle fails with a message naming both.
requirements = [r for r in pinned if not re.match(r"paddlepaddle(-gpu)?\b", r)]

setup(
    name="ppflux_lightning",
    version=version,
    description="FLUX.1 in PaddlePaddle, distilled to a 4-step LoRA student with the FLUX-Lightning recipe",
    packages=find_packages(include=["ppflux_lightning", "ppflux_lightning.*"]),
    python_requires=">=3.9",
    install_requires=requirements,
)

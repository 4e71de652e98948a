import re

from setuptools import find_packages, setup

with open("ppflux_lightning/__init__.py") as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)
with open("requirements.txt") as f:
    requirements = [line.strip() for line in f if line.strip() and not line.startswith("#")]

setup(
    name="ppflux_lightning",
    version=version,
    description="FLUX.1 in PaddlePaddle, distilled to a 4-step LoRA student with the FLUX-Lightning recipe",
    packages=find_packages(include=["ppflux_lightning", "ppflux_lightning.*"]),
    python_requires=">=3.9",
    install_requires=requirements,
)

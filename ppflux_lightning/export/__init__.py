"""Static-graph export of the FLUX pipeline and its Paddle Inference (optionally CINN) counterpart."""

from .export import FORMAT_VERSION, export_pipeline, load_pipeline
from .inference_pipeline import DeployPipeline, load_deploy_config, median_timings
from .predictor import StaticGraph, cinn_status

__all__ = [
    "FORMAT_VERSION",
    "DeployPipeline",
    "StaticGraph",
    "cinn_status",
    "export_pipeline",
    "load_deploy_config",
    "load_pipeline",
    "median_timings",
]

"""Datasets (LAION file lists, image folders, jsonl, cached embeddings), the image transform and the batch sampler.

`build_dataset(cfg.data, seed=...)` builds the class named by `data.type` from the `DATASETS` registry with the other
keys of the `data` section as arguments (`path`, `resolution`, `center_crop`, `random_flip`, `caption_key`).
"""

from . import cached, folder, jsonl, laion  # noqa: F401  (each module registers its dataset)
from .base import SkippingDataset
from .cached import CachedDataset
from .folder import FolderDataset
from .jsonl import JsonlDataset
from .laion import LaionDataset
from .registry import DATASETS
from .sampler import GlobalBatchSampler
from .transforms import BadRecord, ImageTransform, check_resolution

# The `data` section every dataset understands; a training schema can use it as is.
DATA_DEFAULTS = {
    "type": "laion",  # laion | folder | jsonl | cached
    "path": None,  # LAION file list | image folder | .jsonl file | embedding cache folder
    "resolution": 1024,  # square side, a multiple of 16
    "center_crop": True,  # False: a random crop seeded by (seed, sample index)
    "random_flip": False,
    "caption_key": "blip_caption_en",  # caption key in LAION caption JSON (and jsonl records, else "caption")
}


def build_dataset(data_cfg, seed=0):
    """The dataset named by `data_cfg["type"]`; a missing `path` raises one line naming it."""
    if not data_cfg.get("path"):
        raise FileNotFoundError("data.path is not set")
    return DATASETS.build(data_cfg, seed=seed)


__all__ = ["DATASETS", "DATA_DEFAULTS", "BadRecord", "CachedDataset", "FolderDataset", "GlobalBatchSampler",
           "ImageTransform", "JsonlDataset", "LaionDataset", "SkippingDataset", "build_dataset", "check_resolution"]

"""The dataset registry: `data.type` in the config names a class registered here."""

from ..config import Registry

DATASETS = Registry("datasets")

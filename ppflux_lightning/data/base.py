"""A map-style dataset that skips bad records deterministically and counts them."""

import logging

import paddle

from ..utils.errors import DataError
from .transforms import BadRecord

logger = logging.getLogger(__name__)


class SkippingDataset(paddle.io.Dataset):
    """Subclasses implement `__len__` and `load(index) -> sample dict` (raising `BadRecord` for a bad record).

    `dataset[i]` returns record i, or if it is bad the next good record after it (wrapping around), so a bad record
    never stalls the loader and the choice does not depend on the rank or worker. Each bad index is counted once in
    `bad_indices` (per process; with loader workers, sum the samples' `skipped` field instead: 1 when the requested
    record was bad and replaced, so over an epoch it adds up to the number of bad records).
    """

    def __init__(self):
        self.bad_indices = set()

    @property
    def num_skipped(self):
        return len(self.bad_indices)

    def load(self, index):
        raise NotImplementedError

    def load_or_none(self, index):
        """Record `index` as a sample, or None (and counted) when it is bad."""
        if index in self.bad_indices:
            return None
        try:
            sample = self.load(index)
        except BadRecord as e:
            self.bad_indices.add(index)
            logger.warning("skipping bad record %d of %s: %s", index, type(self).__name__, e)
            return None
        sample["index"] = index
        return sample

    def __getitem__(self, index):
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} records")
        for step in range(n):
            sample = self.load_or_none((index + step) % n)
            if sample is not None:
                sample["skipped"] = int(step > 0)
                return sample
        raise DataError(f"all {n} records of {self.describe()} are bad (see the warnings above): nothing to train on")

    def describe(self):
        """The dataset in an error message: its type and source path."""
        path = getattr(self, "source_path", None) or getattr(self, "root", None)
        return f"the {type(self).__name__}" + (f" at {path!r}" if path else "")

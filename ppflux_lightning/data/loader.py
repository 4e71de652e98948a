"""Batches from Paddle's DataLoader whose errors reach the caller.

An exception raised while loading a sample in the DataLoader's prefetch thread or worker process does not reach the
main thread: the run blocks forever (e.g. "all N records are bad"). Here every sample is loaded under a guard that
turns an exception into a marked sample; the batch carries it to the main process, which raises it there: a
`UserError` (bad data) as itself, anything else as a RuntimeError holding the worker's traceback.
"""

import traceback

import numpy as np
import paddle

from ..utils.errors import DataError, UserError

ERROR_KEY = "__loader_error__"


class _Guarded(paddle.io.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except Exception as e:  # noqa: BLE001  (carried to the main process and raised there)
            user = isinstance(e, UserError)
            return {ERROR_KEY: ["user" if user else "bug", str(e) if user else traceback.format_exc()]}


def _guarded_collate(collate_fn):
    def collate(samples):
        for sample in samples:
            if isinstance(sample, dict) and ERROR_KEY in sample:
                return _error_batch(sample[ERROR_KEY])
        try:
            return collate_fn(samples)
        except Exception:  # noqa: BLE001
            return _error_batch(["bug", traceback.format_exc()])

    return collate


def _error_batch(error):
    # Paddle's loader silently drops a batch holding no array (and ends the epoch), so one rides along.
    return {ERROR_KEY: error, "__loader_error_array__": np.zeros(1, np.float32)}


def raise_loader_error(batch):
    """Raise the error a guarded batch carries (a no-op for a normal batch)."""
    if isinstance(batch, dict) and ERROR_KEY in batch:
        kind, message = batch[ERROR_KEY]  # a list of strings: the loader passes those through unchanged
        if kind == "user":
            raise DataError(message)
        raise RuntimeError(f"loading a batch failed in the data loader:\n{message}")


def load_batches(dataset, batch_sampler, collate_fn, num_workers=0):
    """Iterate `paddle.io.DataLoader(dataset, batch_sampler, collate_fn, num_workers)`; a sample's error is raised
    here, in the calling process, instead of stalling the loader."""
    loader = paddle.io.DataLoader(_Guarded(dataset), batch_sampler=batch_sampler,
                                  collate_fn=_guarded_collate(collate_fn), num_workers=int(num_workers))
    count = 0
    for batch in loader:
        raise_loader_error(batch)
        count += 1
        yield batch
    if count == 0 and len(batch_sampler) > 0:  # Paddle ends an epoch early when its loader thread fails
        raise RuntimeError(f"the data loader stopped before its first of {len(batch_sampler)} batches")

"""A distributed batch sampler: one global order per (seed, epoch), each rank takes its slice of every global batch."""

import numpy as np

from ..utils.errors import ConfigError


class GlobalBatchSampler:
    """Yields, for each step, this rank's `batch_size` indices out of a global batch of `batch_size * world_size`.

    The global order is a permutation drawn from (seed, epoch) alone, so it is the same for any world size: rank r
    gets positions `[r*b, (r+1)*b)` of each global batch, the ranks are disjoint, and world size 1 yields the whole
    global batch in order. With `drop_last=False` the last global batch is filled up from the start of the order.
    `set_epoch(epoch, start_step)` picks the epoch and resumes mid-epoch. Use as a DataLoader `batch_sampler`.
    """

    def __init__(self, num_samples, batch_size, world_size=1, rank=0, seed=0, shuffle=True, drop_last=True):
        if num_samples <= 0:
            raise ConfigError(f"the dataset is empty (num_samples={num_samples})")
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size!r}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank!r} must be in [0, world_size={world_size})")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.world_size, self.rank = world_size, rank
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.global_batch = batch_size * world_size
        if drop_last and num_samples < self.global_batch:
            raise ConfigError(f"{num_samples} samples cannot fill one global batch of {self.global_batch} "
                              f"(batch_size {batch_size} x world size {world_size}); set drop_last=False")
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self):
        full, rest = divmod(self.num_samples, self.global_batch)
        return full + (1 if rest and not self.drop_last else 0)

    def set_epoch(self, epoch, start_step=0):
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step {start_step} outside [0, {self.steps_per_epoch}]")
        self.epoch, self.start_step = epoch, start_step

    def global_order(self):
        """The epoch's sample order, padded to whole global batches when `drop_last=False`."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        need = self.steps_per_epoch * self.global_batch
        if need > len(order):
            order = np.concatenate([order, np.resize(order, need - len(order))])
        return order[:need]

    def __iter__(self):
        order = self.global_order().reshape(self.steps_per_epoch, self.world_size, self.batch_size)
        for step in range(self.start_step, self.steps_per_epoch):
            yield order[step, self.rank].tolist()

    def __len__(self):
        return self.steps_per_epoch - self.start_step

"""The teacher's Euler solver for phased consistency distillation: N shifted sigmas split into M phases.

Following the reference recipe: the scheduler's training sigmas `k/T` (k = 1..T, ascending) get the resolution's
dynamic shift; the solver keeps every (T/N)-th one, `euler_timesteps = arange(1, N+1) * T//N - 1`. Phase starts are
`floor(linspace(0, N, M, endpoint=False))` and the phase end of index i is the largest start <= i (the sigma the
student jumps to). All lookups are numpy on per-sample integer draws, so the training step never syncs the device.
"""

import numpy as np

from ..utils.errors import ConfigError


class EulerSolver:
    """Index arithmetic over the solver's sigmas (ascending: index 0 is the least noisy)."""

    def __init__(self, sigmas, num_phases):
        self.sigmas = np.asarray(sigmas, dtype=np.float64)
        n = len(self.sigmas)
        if not 1 <= num_phases <= n:
            raise ConfigError(f"objectives.solver.num_phases must be in [1, {n}], got {num_phases}")
        if (np.diff(self.sigmas) <= 0).any() or self.sigmas[0] <= 0 or self.sigmas[-1] > 1:
            raise ValueError("solver sigmas must increase strictly inside (0, 1]")
        self.num_phases = num_phases
        self.phase_starts = np.floor(np.linspace(0, n, num_phases, endpoint=False)).astype(np.int64)
        # phase_end[i]: largest start <= i; phase_next[i]: the next phase's start (n for the last phase).
        pos = np.searchsorted(self.phase_starts, np.arange(n), side="right") - 1
        self.phase_end = self.phase_starts[pos]
        self.phase_next = np.append(self.phase_starts, n)[pos + 1]

    @classmethod
    def from_scheduler(cls, scheduler, image_seq_len, num_timesteps=100, num_phases=4):
        """The reference solver for a FlowMatchEulerScheduler at a training resolution (`image_seq_len` tokens)."""
        total = scheduler.config.num_train_timesteps
        if not 1 <= num_timesteps <= total:
            raise ConfigError(f"objectives.solver.num_timesteps must be in [1, {total}], got {num_timesteps}")
        raw = np.arange(1, total + 1, dtype=np.float64) / total
        shifted = scheduler.shift_sigmas(raw, image_seq_len)
        euler_timesteps = np.arange(1, num_timesteps + 1) * (total // num_timesteps) - 1
        return cls(shifted[euler_timesteps], num_phases)

    @property
    def num_timesteps(self):
        return len(self.sigmas)

    def teacher_path(self, index, steps=1):
        """Indices `[steps+1, B]` of a `steps`-step teacher walk from `index` towards its phase end, never past it
        (the reference's `sigmas_prev` crosses into the previous phase at a phase start; here it stops)."""
        index = np.asarray(index, dtype=np.int64)
        walk = index[None, :] - np.arange(steps + 1)[:, None]
        return np.maximum(walk, self.phase_end[index][None, :])

    def index_in_phase(self, index, u):
        """An index inside the phase of `index` picked by `u` in [0, 1): start + floor(u * phase length)."""
        index = np.asarray(index, dtype=np.int64)
        start, stop = self.phase_end[index], self.phase_next[index]
        return np.minimum(start + np.floor(np.asarray(u) * (stop - start)).astype(np.int64), stop - 1)

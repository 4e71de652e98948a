"""The teacher's Euler solver for phased consistency distillation: N shifted sigmas split into M phases.

Following the reference recipe (reference.md section 4): the scheduler's training sigmas `k/T` (k = 1..T, ascending)
get the resolution's dynamic shift; the solver keeps `sigmas[i] = sigma(euler_timesteps[i])` with
`euler_timesteps = arange(1, N+1) * T//N - 1`, and `sigmas_prev[i] = sigmas[i-1]`, `sigmas_prev[0] = sigma(0)`.
Both live in one ascending `grid` of N+1 values: `sigmas_prev[i] = grid[i]`, `sigmas[i] = grid[i+1]`. Phase starts
are `floor(linspace(0, N, M, endpoint=False))`; `start(i)` is the largest start <= i and the phase end of index i is
`sigmas_prev[start(i)] = grid[start(i)]`: for N = 100, M = 4 these are exactly FluxPipeline's 4-step sigmas.
All lookups are numpy on per-sample integer draws, so the training step never syncs the device.
"""

import numpy as np

from ..utils.errors import ConfigError

DEFAULTS = {
    "num_timesteps": 100,      # N Euler timesteps of the teacher solver
    "num_phases": 4,           # M phases = student steps at inference
}


class EulerSolver:
    """Index arithmetic over the solver's sigma grid (ascending: position 0 is the least noisy).

    `grid` holds N+1 sigmas: `grid[0] = sigmas_prev[0]` (the 1000-step schedule's first sigma, not 0), then the N
    training sigmas. Training index i in [0, N) noises to `sigmas[i] = grid[i+1]`; every other sigma of the recipe
    (phase ends, teacher steps, in-phase draws) is a grid position."""

    def __init__(self, grid, num_phases):
        self.grid = np.asarray(grid, dtype=np.float64)
        n = len(self.grid) - 1
        if not 1 <= num_phases <= n:
            raise ConfigError(f"objectives.solver.num_phases must be in [1, {n}], got {num_phases}")
        if (np.diff(self.grid) <= 0).any() or self.grid[0] <= 0 or self.grid[-1] > 1:
            raise ValueError("solver sigmas must increase strictly inside (0, 1]")
        self.sigmas, self.sigmas_prev = self.grid[1:], self.grid[:-1]
        self.num_phases = num_phases
        self.phase_starts = np.floor(np.linspace(0, n, num_phases, endpoint=False)).astype(np.int64)
        # start(i): the largest phase start <= i, i.e. the grid position of i's phase end.
        self.phase_start = self.phase_starts[np.searchsorted(self.phase_starts, np.arange(n), side="right") - 1]
        self.phase_span = n // num_phases  # the reference draws in-phase positions in [start, start + N // M)

    @classmethod
    def from_scheduler(cls, scheduler, image_seq_len, num_timesteps=DEFAULTS["num_timesteps"],
                       num_phases=DEFAULTS["num_phases"]):
        """The reference solver for a FlowMatchEulerScheduler at a training resolution (`image_seq_len` tokens)."""
        total = scheduler.config.num_train_timesteps
        if not 1 <= num_timesteps <= total:
            raise ConfigError(f"objectives.solver.num_timesteps must be in [1, {total}], got {num_timesteps}")
        raw = np.arange(1, total + 1, dtype=np.float64) / total
        shifted = scheduler.shift_sigmas(raw, image_seq_len)
        euler_timesteps = np.arange(1, num_timesteps + 1) * (total // num_timesteps) - 1
        return cls(np.concatenate([shifted[:1], shifted[euler_timesteps]]), num_phases)

    @property
    def num_timesteps(self):
        return len(self.sigmas)

    @property
    def phase_end_sigmas(self):
        """The M sigmas the student lands on, from the noisiest phase down (FluxPipeline's M-step grid)."""
        return self.grid[self.phase_starts[::-1]]

    def index(self, u):
        """Training indices `randint(0, N)` from uniforms in [0, 1)."""
        return np.minimum((np.asarray(u) * self.num_timesteps).astype(np.int64), self.num_timesteps - 1)

    def teacher_path(self, index, steps=1):
        """Grid positions `[steps+1, B]` of a `steps`-step teacher walk from `sigmas[i]` (position i+1) one position
        at a time, never below the phase end (position start(i)); one step ends at `sigmas_prev[i]`."""
        index = np.asarray(index, dtype=np.int64)
        walk = index[None, :] + 1 - np.arange(steps + 1)[:, None]
        return np.maximum(walk, self.phase_start[index][None, :])

    def position_in_phase(self, index, u):
        """A grid position `randint(start(i), start(i) + N // M)` picked by `u` in [0, 1) (the in-phase sigma of
        the adversarial, DMD and reflow terms is `sigmas_prev` at that position)."""
        start = self.phase_start[np.asarray(index, dtype=np.int64)]
        step = np.minimum(np.floor(np.asarray(u) * self.phase_span).astype(np.int64), self.phase_span - 1)
        return start + step

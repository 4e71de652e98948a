"""The distillation Euler solver against reference.md section 4: shifted sigmas, sigmas_prev, phase ends at
sigmas_prev[start(i)] (= FluxPipeline's 4-step sigmas), teacher walks and in-phase draws."""

import math

import numpy as np
import pytest

import ppflux_lightning  # noqa: F401
from ppflux_lightning.objectives.solver import EulerSolver
from ppflux_lightning.schedulers.flow_match import FlowMatchEulerScheduler
from ppflux_lightning.utils.errors import ConfigError

MU_1024 = 1.15  # (1024 / 16)^2 = 4096 tokens: mu = max_shift


def shift(s, mu=MU_1024):
    """reference.md section 2: e^mu / (e^mu + (1/s - 1))."""
    return math.exp(mu) / (math.exp(mu) + (1 / s - 1))


def reference_solver():
    seq = (1024 // 16) ** 2
    b = 0.5 - (1.15 - 0.5) / (4096 - 256) * 256  # mu = m * seq + b, by hand
    assert (1.15 - 0.5) / (4096 - 256) * seq + b == pytest.approx(MU_1024)
    return EulerSolver.from_scheduler(FlowMatchEulerScheduler(), seq, num_timesteps=100, num_phases=4)


def test_sigmas_and_sigmas_prev_are_the_reference_grid():
    solver = reference_solver()
    # euler_timesteps = 10k - 1 -> sigma of timestep t is shift((t + 1) / 1000); sigmas_prev[0] = sigma(timestep 0).
    for k in (1, 37, 100):
        assert solver.sigmas[k - 1] == pytest.approx(shift(k / 100), rel=1e-12)
    assert solver.sigmas_prev[0] == pytest.approx(shift(1 / 1000), rel=1e-12)
    assert solver.sigmas_prev[0] == pytest.approx(0.0032, abs=5e-5)
    np.testing.assert_array_equal(solver.sigmas_prev[1:], solver.sigmas[:-1])
    assert solver.sigmas[-1] == pytest.approx(1.0)


def test_phase_ends_are_fluxpipelines_4_step_sigmas_and_no_jump_is_empty():
    solver = reference_solver()
    ends = [solver.sigmas_prev[solver.phase_start[i]] for i in range(100)]
    assert sorted(set(ends), reverse=True) == pytest.approx([0.9045, 0.7595, 0.5128, 0.0032], abs=5e-5)
    # FluxPipeline's 4 steps: linspace(1, 1/4, 4) shifted, then a terminal 0. Each step starts on a training sigma
    # whose phase end is the next step's sigma (the last lands on sigma(timestep 0) ~ 0.0032 instead of 0).
    steps = [shift(s) for s in np.linspace(1, 1 / 4, 4)]
    for k, s in enumerate(steps):
        i = int(np.argmin(np.abs(solver.sigmas - s)))
        assert solver.sigmas[i] == pytest.approx(s, rel=1e-12)
        landing = steps[k + 1] if k < 3 else shift(1 / 1000)
        assert solver.sigmas_prev[solver.phase_start[i]] == pytest.approx(landing, rel=1e-12)
    sched = FlowMatchEulerScheduler()
    sched.set_timesteps(4, image_seq_len=4096)
    np.testing.assert_allclose(solver.phase_end_sigmas[:3], sched.sigmas[1:4], rtol=1e-6)
    # No zero-length jump: sigmas[i] > sigmas_prev[start(i)] for every index (the old ends gave 0 at 0/25/50/75).
    assert all(solver.sigmas[i] > solver.sigmas_prev[solver.phase_start[i]] for i in range(100))


def test_phase_starts_and_start_mapping():
    solver = EulerSolver(np.linspace(0.005, 1.0, 101), num_phases=4)
    assert solver.phase_starts.tolist() == [0, 25, 50, 75]
    assert solver.phase_start[[0, 24, 25, 26, 49, 50, 74, 75, 99]].tolist() == [0, 0, 25, 25, 25, 50, 50, 75, 75]
    # Uneven split: floor(linspace(0, 10, 3, endpoint=False)) = [0, 3, 6]; in-phase draws span N // M = 3.
    odd = EulerSolver(np.linspace(0.05, 1.0, 11), num_phases=3)
    assert odd.phase_starts.tolist() == [0, 3, 6]
    assert odd.phase_start.tolist() == [0, 0, 0, 3, 3, 3, 6, 6, 6, 6]
    assert odd.phase_span == 3


def test_teacher_path_starts_at_sigmas_i_and_stops_at_the_phase_end():
    solver = EulerSolver(np.linspace(0.005, 1.0, 101), num_phases=4)
    path = solver.teacher_path([30, 25, 99, 26], steps=2)  # grid positions: sigmas[i] = grid[i + 1]
    assert path.tolist() == [[31, 26, 100, 27], [30, 25, 99, 26], [29, 25, 98, 25]]
    one = solver.teacher_path([30, 25], steps=1)
    np.testing.assert_array_equal(solver.grid[one[0]], solver.sigmas[[30, 25]])
    np.testing.assert_array_equal(solver.grid[one[1]], solver.sigmas_prev[[30, 25]])


def test_position_in_phase_is_randint_start_to_start_plus_n_over_m():
    solver = EulerSolver(np.linspace(0.005, 1.0, 101), num_phases=4)
    idx = np.array([30, 30, 30, 99, 0])
    u = np.array([0.0, 0.5, 0.999999, 0.5, 0.99])
    assert solver.position_in_phase(idx, u).tolist() == [25, 37, 49, 87, 24]
    assert solver.index(np.array([0.0, 0.999999, 0.5])).tolist() == [0, 99, 50]


def test_bad_solver_settings_are_named():
    with pytest.raises(ConfigError, match="num_phases must be in"):
        EulerSolver(np.linspace(0.1, 1.0, 11), num_phases=11)
    with pytest.raises(ConfigError, match="num_timesteps must be in"):
        EulerSolver.from_scheduler(FlowMatchEulerScheduler(), 256, num_timesteps=0)

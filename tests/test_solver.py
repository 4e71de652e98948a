"""The distillation Euler solver: shifted sigmas, phase starts and the phase-end mapping, teacher walks."""

import math

import numpy as np
import pytest

import ppflux_lightning  # noqa: F401
from ppflux_lightning.objectives.solver import EulerSolver
from ppflux_lightning.schedulers.flow_match import FlowMatchEulerScheduler
from ppflux_lightning.utils.errors import ConfigError


def test_reference_solver_sigmas_are_the_shifted_scheduler_sigmas():
    seq = 4096  # 1024^2 FLUX: mu = max_shift = 1.15
    solver = EulerSolver.from_scheduler(FlowMatchEulerScheduler(), seq, num_timesteps=100, num_phases=4)
    # By hand: euler_timesteps = 10k - 1 -> raw sigma (10k)/1000 = k/100, shifted e^mu / (e^mu + 1/s - 1).
    for k in (1, 37, 100):
        raw = k / 100
        expect = math.exp(1.15) / (math.exp(1.15) + 1 / raw - 1)
        assert solver.sigmas[k - 1] == pytest.approx(expect, rel=1e-12)
    assert solver.sigmas[-1] == pytest.approx(1.0)
    assert (np.diff(solver.sigmas) > 0).all()


def test_phase_starts_and_phase_end_mapping():
    solver = EulerSolver(np.linspace(0.01, 1.0, 100), num_phases=4)
    assert solver.phase_starts.tolist() == [0, 25, 50, 75]
    assert solver.phase_end[[0, 24, 25, 26, 49, 50, 74, 75, 99]].tolist() == [0, 0, 25, 25, 25, 50, 50, 75, 75]
    assert solver.phase_next[[0, 24, 25, 99]].tolist() == [25, 25, 50, 100]
    # Uneven split: floor(linspace(0, 10, 3, endpoint=False)) = [0, 3, 6].
    odd = EulerSolver(np.linspace(0.1, 1.0, 10), num_phases=3)
    assert odd.phase_starts.tolist() == [0, 3, 6]
    assert odd.phase_end.tolist() == [0, 0, 0, 3, 3, 3, 6, 6, 6, 6]


def test_teacher_path_stops_at_the_phase_end():
    solver = EulerSolver(np.linspace(0.01, 1.0, 100), num_phases=4)
    path = solver.teacher_path([30, 25, 99, 26], steps=2)
    assert path.tolist() == [[30, 25, 99, 26], [29, 25, 98, 25], [28, 25, 97, 25]]


def test_index_in_phase_covers_the_phase():
    solver = EulerSolver(np.linspace(0.01, 1.0, 100), num_phases=4)
    idx = np.array([30, 30, 30, 99, 0])
    u = np.array([0.0, 0.5, 0.999999, 0.5, 0.99])
    assert solver.index_in_phase(idx, u).tolist() == [25, 37, 49, 87, 24]


def test_bad_solver_settings_are_named():
    with pytest.raises(ConfigError, match="num_phases must be in"):
        EulerSolver(np.linspace(0.1, 1.0, 10), num_phases=11)
    with pytest.raises(ConfigError, match="num_timesteps must be in"):
        EulerSolver.from_scheduler(FlowMatchEulerScheduler(), 256, num_timesteps=0)

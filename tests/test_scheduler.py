"""FlowMatchEulerScheduler against diffusers 0.31's FlowMatchEulerDiscreteScheduler as FluxPipeline drives it."""

import numpy as np
import paddle
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift as diffusers_shift

from ppflux_lightning.schedulers.flow_match import FlowMatchEulerScheduler, calculate_shift
from ppflux_lightning.utils.errors import ConfigError

CONFIGS = {
    "dev": dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                max_image_seq_len=4096),
    "schnell": dict(shift=1.0, use_dynamic_shifting=False, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                    max_image_seq_len=4096),
    "sd3-like": dict(shift=3.0, use_dynamic_shifting=False),
    "other-line": dict(use_dynamic_shifting=True, base_shift=0.3, max_shift=1.5, base_image_seq_len=64,
                       max_image_seq_len=1024),
}


def reference_schedule(ref, steps, seq_len, sigmas=None):
    """What diffusers' FluxPipeline 0.31 does: linspace(1, 1/N, N) sigmas and mu from the image token count."""
    sigmas = np.linspace(1.0, 1 / steps, steps) if sigmas is None else sigmas
    c = ref.config
    mu = diffusers_shift(seq_len, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
    ref.set_timesteps(sigmas=sigmas, mu=mu)
    return ref.sigmas.numpy(), ref.timesteps.numpy()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_sigmas_and_timesteps_match_diffusers(name, tmp_path):
    ref = FlowMatchEulerDiscreteScheduler(**CONFIGS[name])
    ref.save_pretrained(str(tmp_path))
    ours = FlowMatchEulerScheduler.from_pretrained(str(tmp_path))
    for steps in (1, 2, 4, 8, 28):
        for seq_len in (16, 256, 1024, 4096, 6000):
            ref_sigmas, ref_timesteps = reference_schedule(ref, steps, seq_len)
            timesteps = ours.set_timesteps(steps, image_seq_len=seq_len)
            assert ours.sigmas.dtype == np.float32 and len(ours.sigmas) == steps + 1 and ours.sigmas[-1] == 0
            np.testing.assert_allclose(ours.sigmas, ref_sigmas, rtol=0, atol=1e-6)
            np.testing.assert_allclose(timesteps / 1000, ref_timesteps / 1000, rtol=0, atol=1e-6)
    custom = [1.0, 0.75, 0.5, 0.25]
    ref_sigmas, _ = reference_schedule(ref, 4, 512, sigmas=np.array(custom))
    ours.set_timesteps(image_seq_len=512, sigmas=custom)
    np.testing.assert_allclose(ours.sigmas, ref_sigmas, rtol=0, atol=1e-6)


def test_shift_formula_by_hand():
    # mu on the line through (256, 0.5) and (4096, 1.15); shifted sigma = e^mu / (e^mu + 1/s - 1)
    assert calculate_shift(256) == pytest.approx(0.5) and calculate_shift(4096) == pytest.approx(1.15)
    ours = FlowMatchEulerScheduler(**CONFIGS["dev"])
    ours.set_timesteps(2, image_seq_len=4096)
    e = np.exp(1.15)
    np.testing.assert_allclose(ours.sigmas, [1.0, e / (e + 1.0), 0.0], atol=1e-6)


def test_euler_step_matches_diffusers():
    ref = FlowMatchEulerDiscreteScheduler(**CONFIGS["dev"])
    reference_schedule(ref, 4, 64)
    ours = FlowMatchEulerScheduler(**CONFIGS["dev"])
    ours.set_timesteps(4, image_seq_len=64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 64, 16)).astype(np.float32)
    ref_x, our_x = torch.from_numpy(x), paddle.to_tensor(x)
    for i, t in enumerate(ref.timesteps):
        v = rng.standard_normal(x.shape).astype(np.float32)
        ref_x = ref.step(torch.from_numpy(v), t, ref_x).prev_sample
        our_x = ours.step(paddle.to_tensor(v), i, our_x)
    np.testing.assert_allclose(our_x.numpy(), ref_x.numpy(), rtol=0, atol=1e-5)


def test_bad_config_and_input(tmp_path):
    with pytest.raises(ConfigError, match="shift_terminal"):
        FlowMatchEulerScheduler(shift_terminal=0.1)
    with pytest.raises(FileNotFoundError, match="scheduler_config.json"):
        FlowMatchEulerScheduler.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="num_inference_steps"):
        FlowMatchEulerScheduler().set_timesteps(0, image_seq_len=64)

"""Flow-matching Euler scheduler with FLUX's resolution-dependent ("dynamic") shift.

x_t = (1 - sigma) x0 + sigma * noise, the model predicts v = noise - x0, and an Euler step is
x <- x + (sigma_next - sigma) v, computed in float32. Sigmas follow diffusers' FlowMatchEulerDiscreteScheduler.
"""

import dataclasses
import json
import math
import os

import numpy as np
import paddle

from ..utils.errors import ConfigError


@dataclasses.dataclass
class FlowMatchConfig:
    num_train_timesteps: int = 1000
    shift: float = 1.0
    use_dynamic_shifting: bool = True
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096

    @classmethod
    def from_dict(cls, d):
        fields = {f.name for f in dataclasses.fields(cls)}
        # Keys of other diffusers versions that keep the default behaviour are accepted; ones that change it are not.
        inert = {"invert_sigmas": False, "shift_terminal": None, "use_karras_sigmas": False,
                 "use_exponential_sigmas": False, "use_beta_sigmas": False, "time_shift_type": "exponential",
                 "stochastic_sampling": False}
        for key, neutral in inert.items():
            if key in d and d[key] != neutral:
                raise ConfigError(f"scheduler option {key}={d[key]!r} is not supported (only {neutral!r})")
        unknown = sorted(k for k in d if not k.startswith("_") and k not in fields and k not in inert)
        if unknown:
            raise ConfigError(f"unknown scheduler config keys {unknown}; valid keys: {sorted(fields)}")
        return cls(**{k: v for k, v in d.items() if k in fields})


def calculate_shift(image_seq_len, base_seq_len=256, max_seq_len=4096, base_shift=0.5, max_shift=1.15):
    """mu = m * seq_len + b, the line through (base_seq_len, base_shift) and (max_seq_len, max_shift)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + (base_shift - m * base_seq_len)


def time_shift(mu, sigmas):
    return math.exp(mu) / (math.exp(mu) + (1.0 / sigmas - 1.0))


class FlowMatchEulerScheduler:
    """`set_timesteps(n, image_seq_len)` then `step(v, i, x)` for i in range(n)."""

    def __init__(self, config=None, **kwargs):
        self.config = config if config is not None else FlowMatchConfig.from_dict(kwargs)
        self.sigmas = None
        self.timesteps = None

    @classmethod
    def from_pretrained(cls, path, subfolder=None):
        if subfolder:
            path = os.path.join(path, subfolder)
        config_path = os.path.join(path, "scheduler_config.json")
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"no scheduler_config.json in {path!r}")
        with open(config_path) as f:
            return cls(FlowMatchConfig.from_dict(json.load(f)))

    def save_pretrained(self, path):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "scheduler_config.json"), "w") as f:
            config = {"_class_name": "FlowMatchEulerDiscreteScheduler", **dataclasses.asdict(self.config)}
            json.dump(config, f, indent=2)

    def mu(self, image_seq_len):
        c = self.config
        return calculate_shift(image_seq_len, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)

    def shift_sigmas(self, sigmas, image_seq_len=None):
        """Apply the configured shift (dynamic, from the image token count, or static) to raw sigmas in (0, 1]."""
        sigmas = np.asarray(sigmas, dtype=np.float64)
        if self.config.use_dynamic_shifting:
            if image_seq_len is None:
                raise ValueError("this scheduler uses dynamic shifting: pass image_seq_len")
            return time_shift(self.mu(image_seq_len), sigmas)
        s = self.config.shift
        return s * sigmas / (1 + (s - 1) * sigmas)

    def set_timesteps(self, num_inference_steps=None, image_seq_len=None, sigmas=None):
        """FLUX pipeline default: sigmas = linspace(1, 1/N, N), shifted; float32 sigmas with a terminal 0."""
        if sigmas is None:
            if not num_inference_steps or num_inference_steps < 1:
                raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
            sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
        sigmas = np.asarray(sigmas, dtype=np.float64)
        if sigmas.ndim != 1 or len(sigmas) == 0 or (sigmas <= 0).any() or (sigmas > 1).any():
            raise ValueError(f"sigmas must be a 1-D list in (0, 1], got {sigmas.tolist()}")
        shifted = self.shift_sigmas(sigmas, image_seq_len).astype(np.float32)
        self.timesteps = shifted * np.float32(self.config.num_train_timesteps)
        self.sigmas = np.concatenate([shifted, np.zeros(1, np.float32)])
        return self.timesteps

    @property
    def num_inference_steps(self):
        return len(self.timesteps)

    def step(self, model_output, index, sample):
        """One Euler step in float32; returns the new sample in the model output's dtype."""
        dt = float(self.sigmas[index + 1]) - float(self.sigmas[index])
        out = sample.astype("float32") + dt * model_output.astype("float32")
        return out.astype(model_output.dtype)

    @staticmethod
    def add_noise(x0, noise, sigma):
        """x_t = (1 - sigma) x0 + sigma * noise; sigma broadcast per sample."""
        sigma = paddle.to_tensor(sigma, dtype="float32") if not isinstance(sigma, paddle.Tensor) else sigma
        sigma = sigma.astype(x0.dtype).reshape([-1] + [1] * (x0.ndim - 1))
        return (1 - sigma) * x0 + sigma * noise

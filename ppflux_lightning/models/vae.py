"""FLUX's VAE: ppdiffusers' AutoencoderKL read from and written to a diffusers `vae/` folder (PyTorch layout).

FLUX latents are normalised as `(z - shift_factor) * scaling_factor`; `encode` / `decode` here apply that and its
inverse. Loading only reads the folder (no converted files are written next to the user's weights).
"""

import inspect
import json
import os

import paddle

from ..utils.atomic import atomic_dir
from ..utils.errors import ConfigError
from .torch_weights import build_in_dtype, load_torch_layout, save_torch_layout, torch_layout_arrays, weight_files

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
# diffusers config keys ppdiffusers 0.29 lacks, with the only value it implements.
INERT_KEYS = {"mid_block_add_attention": True}


def _vae_class():
    from ppdiffusers import AutoencoderKL

    return AutoencoderKL


def vae_init_keys():
    return [p for p in inspect.signature(_vae_class().__init__).parameters if p != "self"]


def build_vae(config, dtype="float32", lazy=False):
    """An AutoencoderKL from a diffusers config dict (random weights unless `lazy`). Unknown keys are an error."""
    known = vae_init_keys()
    for key, value in INERT_KEYS.items():
        if config.get(key, value) != value:
            raise ConfigError(f"VAE option {key}={config[key]!r} is not supported by ppdiffusers' AutoencoderKL")
    unknown = sorted(k for k in config if not k.startswith("_") and k not in known and k not in INERT_KEYS)
    if unknown:
        raise ConfigError(f"unknown VAE config keys {unknown}; valid keys: {known}")
    kwargs = {k: config[k] for k in known if k in config}
    return build_in_dtype(lambda: _vae_class()(**kwargs), dtype, lazy).eval()


def load_vae(folder, dtype="float32"):
    """AutoencoderKL from a diffusers `vae/` folder (config.json + safetensors, single or sharded)."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config.json in VAE folder {folder!r}")
    with open(path) as f:
        config = json.load(f)
    vae = build_vae(config, dtype, lazy=True)
    return load_torch_layout(vae, weight_files(folder, WEIGHTS_NAME), {}, what=f"VAE {folder!r}")


def save_vae(vae, folder, max_shard_bytes=None):
    """Write a diffusers `vae/` folder that `load_vae` and diffusers' `AutoencoderKL.from_pretrained` read."""
    config = {"_class_name": "AutoencoderKL"}
    config.update({k: v for k, v in dict(vae.config).items() if not k.startswith("_") and v is not None})
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    tensors, bf16 = torch_layout_arrays(vae)
    with atomic_dir(folder) as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        save_torch_layout(tensors, tmp, WEIGHTS_NAME, bf16=bf16, max_shard_bytes=max_shard_bytes)


def scale_factor(vae):
    """Pixels per latent cell: 2 ** (number of resolution levels - 1)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _shift_scale(vae):
    shift = vae.config.shift_factor
    return (0.0 if shift is None else float(shift)), float(vae.config.scaling_factor)


def encode(vae, images, sample=False, noise=None):
    """Images `[B, 3, H, W]` in [-1, 1] -> normalised latents `(z - shift) * scale` (the posterior mean unless
    `sample`; with `noise` (a `[B, C, h, w]` standard normal) the draw is `mean + std * noise`)."""
    shift, scale = _shift_scale(vae)
    posterior = vae.encode(images.astype(vae.dtype)).latent_dist
    if noise is not None:
        z = posterior.mean + posterior.std * paddle.to_tensor(noise).astype(posterior.mean.dtype)
    else:
        z = posterior.sample() if sample else posterior.mode()
    return (z - shift) * scale


def decode(vae, latents):
    """Normalised latents `[B, C, h, w]` -> images `[B, 3, H, W]` in about [-1, 1]."""
    shift, scale = _shift_scale(vae)
    z = latents.astype(vae.dtype) / scale + shift
    return vae.decode(z).sample

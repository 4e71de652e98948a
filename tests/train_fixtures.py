"""Tiny training fixtures: a transformer + scheduler folder and a cached-embeddings dataset, built with Paddle only."""

import os
import zlib

import numpy as np
from PIL import Image

import ppflux_lightning  # noqa: F401
from ppflux_lightning.config import validate
from ppflux_lightning.data import DATASETS
from ppflux_lightning.data.cached import write_cache
from ppflux_lightning.engine.schema import DEFAULTS
from ppflux_lightning.models.flux_transformer import FluxConfig, FluxTransformer2DModel
from ppflux_lightning.schedulers.flow_match import FlowMatchEulerScheduler

LATENT_CHANNELS, TEXT_DIM, POOLED_DIM, TEXT_LEN = 4, 32, 16, 6


def tiny_config():
    return FluxConfig(in_channels=4 * LATENT_CHANNELS, num_layers=1, num_single_layers=1, attention_head_dim=16,
                      num_attention_heads=2, joint_attention_dim=TEXT_DIM, pooled_projection_dim=POOLED_DIM,
                      axes_dims_rope=(4, 6, 6))


def build_pretrained(folder, seed=0):
    """`folder/transformer` (random tiny FLUX) and `folder/scheduler`."""
    import paddle

    paddle.seed(seed)
    FluxTransformer2DModel(tiny_config()).save_pretrained(os.path.join(folder, "transformer"))
    FlowMatchEulerScheduler().save_pretrained(os.path.join(folder, "scheduler"))
    return folder


def _fake_encode(resolution):
    def encode(captions, pixels):
        out = {"prompt_embeds": [], "pooled_prompt_embeds": [], "latents": []}
        for c in captions:
            rng = np.random.default_rng(zlib.crc32(c.encode()))
            out["prompt_embeds"].append(rng.standard_normal((TEXT_LEN, TEXT_DIM)).astype(np.float32))
            out["pooled_prompt_embeds"].append(rng.standard_normal(POOLED_DIM).astype(np.float32))
            side = resolution // 8
            out["latents"].append(rng.standard_normal((LATENT_CHANNELS, side, side)).astype(np.float32))
        return {k: np.stack(v) for k, v in out.items()}

    return encode


def build_cached_dataset(folder, count=8, resolution=32):
    """`count` tiny images with captions, 'encoded' by a seeded fake encoder into an embedding cache."""
    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (resolution, resolution, 3), dtype=np.uint8)).save(
            os.path.join(images, f"{i:03d}.png"))
        with open(os.path.join(images, f"{i:03d}.txt"), "w") as f:
            f.write(f"caption number {i}")
    source = {"type": "folder", "path": images, "resolution": resolution}
    cache = os.path.join(folder, "cache")
    write_cache(_fake_encode(resolution), DATASETS.build(source), cache, source, shard_size=4, with_latents=True)
    return cache


def tiny_train_config(pretrained, data_path, output_dir, **overrides):
    cfg = {
        "model": {"pretrained": pretrained, "dtype": "float32", "gradient_checkpointing": False},
        "lora": {"rank": 4, "alpha": 4},
        "objectives": {"solver": {"num_timesteps": 20, "num_phases": 4}},
        # Adam eps 1e-6: with the default 1e-8 a near-zero gradient turns float summation-order noise (batch vs
        # accumulation vs all-reduce) into visible update differences; equality tests compare those runs.
        "train": {"output_dir": output_dir, "max_steps": 4, "batch_size": 2, "lr": 1e-3, "eps": 1e-6,
                  "checkpoint_every": 2, "log_every": 1, "keep_last": 2},
        "data": {"type": "cached", "path": data_path, "resolution": 32},
    }
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        node = cfg.setdefault(section, {})
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return validate(cfg, DEFAULTS)


def build_image_folder(folder, count=4, size=32, corrupt=()):
    """`count` random RGB images with `.txt` captions; indices in `corrupt` get an unreadable image file."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        path = os.path.join(folder, f"{i:03d}.png")
        if i in corrupt:
            with open(path, "wb") as f:
                f.write(b"not a png")
        else:
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        with open(os.path.join(folder, f"{i:03d}.txt"), "w") as f:
            f.write(f"a red circle number {i}")
    return folder

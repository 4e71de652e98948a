"""Text to image on an export folder: the tokenizers, four Paddle Inference predictors and the Euler loop in numpy.

Mirrors `ppflux_lightning.pipelines.FluxPipeline` step for step (same tokenisation, same `make_latents` noise for a
seed, same scheduler and timestep arithmetic), so one seed gives the same image in both.
"""

import os
import time

import numpy as np
import yaml
from tqdm import tqdm

from .. import __version__
from ..pipelines.flux_pipeline import latent_image_ids, make_latents, unpack_latents
from ..schedulers.flow_match import FlowMatchConfig, FlowMatchEulerScheduler
from ..utils.errors import ConfigError
from .export import DEPLOY_FILE, FORMAT_VERSION, GRAPH_NAMES, TOKENIZER_NAMES, enable_prim_for_cinn, graph_paths
from .predictor import StaticGraph, cinn_status

REQUIRED_KEYS = ("steps", "guidance", "scheduler", "resolutions", "max_sequence_length", "clip_max_length",
                 "guidance_embeds", "vae", "dtype", "graphs")
# Paddle 3.3's oneDNN kernels reject the VAE decoder's interpolate attributes (ConvertPirAttribute2RuntimeAttribute).
ONEDNN_UNSUPPORTED = ("vae_decoder",)


def load_deploy_config(folder):
    """Read and check `folder/deploy.yaml` and that every file it relies on is present."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"export folder not found: {folder!r}")
    path = os.path.join(folder, DEPLOY_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} is missing: {folder!r} is not a deploy/export.py output folder")
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path!r} is not valid YAML ({' '.join(str(e).split())})") from None
    version = config.get("format_version") if isinstance(config, dict) else None
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"{path!r} has format_version {version!r} but ppflux_lightning {__version__} reads version "
            f"{FORMAT_VERSION}: re-export the model with deploy/export.py"
        )
    missing_keys = [k for k in REQUIRED_KEYS if k not in config]
    if missing_keys:
        raise ConfigError(f"{path!r} lacks the keys {missing_keys}")
    for name in GRAPH_NAMES:
        for file in graph_paths(folder, name):
            if not os.path.isfile(file):
                raise FileNotFoundError(f"export folder {folder!r} is missing {os.path.relpath(file, folder)}")
    for name in TOKENIZER_NAMES:
        if not os.path.isdir(os.path.join(folder, name)):
            raise FileNotFoundError(f"export folder {folder!r} is missing the {name}/ folder")
    return config


def format_resolutions(resolutions):
    return ", ".join(f"{h}x{w}" for h, w in resolutions)


class Timer:
    """Collects wall-clock seconds per named stage when `timings` (a dict of lists) is given."""

    def __init__(self, timings):
        self.timings = timings

    def __call__(self, stage, fn, *args, **kwargs):
        if self.timings is None:
            return fn(*args, **kwargs)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.timings.setdefault(stage, []).append(time.perf_counter() - start)
        return out


def median_timings(pipe, repeats, **call_kwargs):
    """Run `pipe(**call_kwargs)` once to warm up, then `repeats` times; returns {stage: median seconds} with
    "total" (end to end) last."""
    if repeats < 1:
        raise ValueError(f"benchmark repeats must be >= 1, got {repeats}")
    pipe(**call_kwargs)
    timings = {}
    for _ in tqdm(range(repeats), desc="benchmark", unit="run"):
        start = time.perf_counter()
        pipe(timings=timings, **call_kwargs)
        timings.setdefault("total", []).append(time.perf_counter() - start)
    return {stage: float(np.median(values)) for stage, values in timings.items()}


class DeployPipeline:
    """`DeployPipeline(export_dir)(prompt, seed=0)` -> float images [B, H, W, 3] in [0, 1]."""

    def __init__(self, folder, device="cpu", precision=None, threads=None, onednn=False):
        from paddlenlp.transformers import CLIPTokenizer, T5Tokenizer

        self.folder = folder
        self.config = load_deploy_config(folder)
        self.use_cinn, message = cinn_status()
        if message:
            print(message)
        if self.use_cinn:
            enable_prim_for_cinn()  # CINN decomposes ops into primitives when it compiles the predictor's program
        precision = precision or self.config["dtype"]
        self.graphs = {
            name: StaticGraph(
                os.path.join(folder, name), device=device, precision=precision, use_cinn=self.use_cinn,
                onednn=onednn and name not in ONEDNN_UNSUPPORTED, threads=threads,
            )
            for name in GRAPH_NAMES
        }
        self.tokenizer = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
        self.tokenizer_2 = T5Tokenizer.from_pretrained(os.path.join(folder, "tokenizer_2"))
        self.scheduler = FlowMatchEulerScheduler(FlowMatchConfig.from_dict(self.config["scheduler"]))
        self.in_channels = self.config["graphs"]["transformer"]["inputs"][0]["shape"][-1]

    @property
    def resolutions(self):
        return [tuple(r) for r in self.config["resolutions"]]

    def check_resolution(self, height, width):
        """Defaults to the only exported resolution; anything not exported is an error listing what is."""
        if height is None and width is None and len(self.resolutions) == 1:
            return self.resolutions[0]
        if height is None or width is None:
            raise ValueError(f"pass both height and width; exported: {format_resolutions(self.resolutions)}")
        if (height, width) not in self.resolutions:
            raise ValueError(
                f"resolution {height}x{width} is not in this export; exported: {format_resolutions(self.resolutions)}"
            )
        return height, width

    def encode_prompt(self, prompts):
        """prompts -> (T5 hidden states [B, L, D], CLIP pooled [B, P]), tokenised as FluxPipeline does."""
        clip_ids = self.tokenizer(
            prompts, padding="max_length", max_length=self.config["clip_max_length"], truncation=True
        )["input_ids"]
        t5_ids = self.tokenizer_2(
            prompts, padding="max_length", max_length=self.config["max_sequence_length"], truncation=True
        )["input_ids"]
        (pooled,) = self.graphs["text_encoder"](input_ids=np.asarray(clip_ids, dtype=np.int64))
        (embeds,) = self.graphs["text_encoder_2"](input_ids=np.asarray(t5_ids, dtype=np.int64))
        return embeds, pooled

    def __call__(self, prompt, seed=0, num_images=1, height=None, width=None, steps=None, guidance=None,
                 latents=None, timings=None):
        """Generate `num_images` per prompt. `latents` (packed, numpy) overrides the seed's noise. `timings`, a
        dict, receives seconds per stage: "text encoding", "step 1" ... "step N", "vae decode"."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        height, width = self.check_resolution(height, width)
        config, timer = self.config, Timer(timings)
        sigmas = config["sigmas"] if steps is None else None
        steps = config["steps"] if steps is None else int(steps)
        guidance = config["guidance"] if guidance is None else float(guidance)

        embeds, pooled = timer("text encoding", self.encode_prompt, prompts)
        embeds, pooled = np.repeat(embeds, num_images, axis=0), np.repeat(pooled, num_images, axis=0)
        batch = embeds.shape[0]
        factor = config["vae"]["scale_factor"]
        h, w = height // factor, width // factor
        if latents is None:
            latents = make_latents(seed, batch, self.in_channels // 4, h, w)
        expected = (batch, (h // 2) * (w // 2), self.in_channels)
        if tuple(latents.shape) != expected:
            raise ValueError(f"latents must be packed {list(expected)} for {height}x{width}, got {list(latents.shape)}")
        latents = np.asarray(latents, dtype=np.float32)

        inputs = {
            "encoder_hidden_states": embeds,
            "pooled_projections": pooled,
            "img_ids": latent_image_ids(h, w).numpy(),
            "txt_ids": np.zeros((embeds.shape[1], 3), np.float32),
        }
        if config["guidance_embeds"]:
            inputs["guidance"] = np.full([batch], guidance, dtype=np.float32)
        timesteps = self.scheduler.set_timesteps(steps, image_seq_len=latents.shape[1], sigmas=sigmas)
        transformer = self.graphs["transformer"]
        for i, t in enumerate(timesteps):
            timestep = np.full([batch], np.float32(t) / np.float32(1000.0), dtype=np.float32)
            (velocity,) = timer(f"step {i + 1}", transformer, hidden_states=latents, timestep=timestep, **inputs)
            latents = self.scheduler.step(velocity, i, latents)
        unpacked = unpack_latents(latents, h, w)
        (images,) = timer("vae decode", self.graphs["vae_decoder"], latents=np.ascontiguousarray(unpacked))
        return images.transpose(0, 2, 3, 1)

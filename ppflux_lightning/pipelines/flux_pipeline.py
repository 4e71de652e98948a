"""Text-to-image FLUX.1 pipeline in Paddle, reading and writing diffusers-layout repository folders.

Numerics follow diffusers 0.31's FluxPipeline: CLIP pooled + T5 token embeddings, 2x2-packed latents, Euler
flow matching with a dynamic shift from the image token count, `timestep = sigma` and raw `guidance_scale` passed to
the transformer (which multiplies both by 1000), VAE decode of `z / scaling_factor + shift_factor`.
"""

import dataclasses
import json
import os
import shutil

import numpy as np
import paddle
from tqdm import tqdm

from ..acceleration.pipeline_mixin import CacheMixin
from ..lora.pipeline_mixin import FluxLoraLoaderMixin
from ..models import text_encoders
from ..models import vae as vae_io
from ..models.flux_transformer import FluxTransformer2DModel
from ..models.latents import latent_image_ids, pack_latents, unpack_latents  # noqa: F401  (public here too)
from ..models.torch_weights import check_dtype
from ..schedulers.flow_match import FlowMatchEulerScheduler
from ..utils.atomic import atomic_dir
from ..utils.device import resolve_dtype
from ..utils.files import check_pipeline_folder

MODEL_INDEX = {
    "_class_name": "FluxPipeline",
    "_diffusers_version": "0.31.0",
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "FluxTransformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SUBFOLDERS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
MAX_T5_LENGTH = 512
OUTPUT_TYPES = ("pil", "np", "latent")


@dataclasses.dataclass
class FluxPipelineOutput:
    images: object  # list of PIL images, a float array [B, H, W, 3] in [0, 1], or packed latents


# ---------------------------------------------------------------- latent layout
def make_latents(seed, batch, channels, height, width):
    """Initial noise as packed latents, numpy float32 `[batch, (height/2)(width/2), 4*channels]`, drawn from
    `np.random.default_rng(seed)` in the unpacked `[batch, channels, height, width]` order. `channels` is the VAE's
    latent channel count and `height` x `width` the latent grid (pixels // vae scale factor), both even."""
    if height % 2 or width % 2:
        raise ValueError(f"latent grid {height}x{width} must have even sides (2x2 packing)")
    noise = np.random.default_rng(seed).standard_normal((batch, channels, height, width), dtype=np.float32)
    noise = noise.reshape(batch, channels, height // 2, 2, width // 2, 2).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(noise.reshape(batch, (height // 2) * (width // 2), channels * 4))


# ---------------------------------------------------------------- pipeline
class FluxPipeline(FluxLoraLoaderMixin, CacheMixin):
    """FLUX.1 text-to-image: `FluxPipeline.from_pretrained(dir)(prompt).images`."""

    def __init__(self, transformer, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler):
        self.transformer = transformer
        self.vae = vae
        self.text_encoder = text_encoder
        self.text_encoder_2 = text_encoder_2
        self.tokenizer = tokenizer
        self.tokenizer_2 = tokenizer_2
        self.scheduler = scheduler
        self.vae_scale_factor = vae_io.scale_factor(vae)
        self.progress_bar_disabled = False
        self._tokenizer_dirs = {}

    # ------------------------------------------------------------ I/O
    @classmethod
    def from_pretrained(cls, path, dtype="auto"):
        """Load a diffusers-layout FLUX folder (PyTorch-layout safetensors; T5 and transformer may be sharded).
        `dtype="auto"` is bfloat16 on a GPU with native bf16, else float32 (`utils.device.resolve_dtype`)."""
        from paddlenlp.transformers import CLIPTokenizer, T5Tokenizer

        dtype = resolve_dtype("auto", "dtype") if dtype == "auto" else check_dtype(dtype)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"pipeline folder not found: {path!r}")
        if not os.path.isfile(os.path.join(path, "model_index.json")):
            raise FileNotFoundError(f"no model_index.json in {path!r}: not a diffusers pipeline folder")
        for name in SUBFOLDERS:
            if not os.path.isdir(os.path.join(path, name)):
                raise FileNotFoundError(f"pipeline folder {path!r} has no {name}/ subfolder")
        check_pipeline_folder(path, "pipeline")  # tokenizer files and JSON configs, each error naming its file
        sub = {name: os.path.join(path, name) for name in SUBFOLDERS}
        pipe = cls(
            transformer=FluxTransformer2DModel.from_pretrained(sub["transformer"], dtype=dtype),
            vae=vae_io.load_vae(sub["vae"], dtype),
            text_encoder=text_encoders.load_clip_text_model(sub["text_encoder"], dtype),
            text_encoder_2=text_encoders.load_t5_encoder(sub["text_encoder_2"], dtype),
            tokenizer=CLIPTokenizer.from_pretrained(sub["tokenizer"]),
            tokenizer_2=T5Tokenizer.from_pretrained(sub["tokenizer_2"]),
            scheduler=FlowMatchEulerScheduler.from_pretrained(sub["scheduler"]),
        )
        pipe._tokenizer_dirs = {"tokenizer": sub["tokenizer"], "tokenizer_2": sub["tokenizer_2"]}
        return pipe

    def save_pretrained(self, path, max_shard_bytes=None):
        """Write a diffusers-layout folder that `from_pretrained` here and diffusers' FluxPipeline both load."""
        with atomic_dir(path, overwrite=True, ours="model_index.json") as tmp:
            with open(os.path.join(tmp, "model_index.json"), "w") as f:
                json.dump(MODEL_INDEX, f, indent=2)
            self.transformer.save_pretrained(os.path.join(tmp, "transformer"), max_shard_bytes=max_shard_bytes)
            vae_io.save_vae(self.vae, os.path.join(tmp, "vae"))
            text_encoders.save_text_encoder(self.text_encoder, os.path.join(tmp, "text_encoder"))
            text_encoders.save_text_encoder(
                self.text_encoder_2, os.path.join(tmp, "text_encoder_2"), max_shard_bytes=max_shard_bytes
            )
            for name in ("tokenizer", "tokenizer_2"):
                source = self._tokenizer_dirs.get(name)
                if source:  # copy the original files verbatim: they are the format every loader reads
                    shutil.copytree(source, os.path.join(tmp, name))
                else:
                    getattr(self, name).save_pretrained(os.path.join(tmp, name))
            self.scheduler.save_pretrained(os.path.join(tmp, "scheduler"))

    def set_progress_bar_config(self, disable=False):
        self.progress_bar_disabled = disable

    @property
    def dtype(self):
        return self.transformer.dtype

    # ------------------------------------------------------------ text
    @property
    def default_max_sequence_length(self):
        """T5 prompt length when none is given: the T5 tokenizer's `model_max_length`, at most 512 (FLUX.1's)."""
        return min(MAX_T5_LENGTH, int(self.tokenizer_2.model_max_length))

    def encode_prompt(self, prompt, max_sequence_length=None):
        """prompt(s) -> (T5 token embeddings [B, L, D], CLIP pooled [B, P], text ids zeros [L, 3]).
        `max_sequence_length` defaults to `default_max_sequence_length` (512 for FLUX.1, 16 for the toy model)."""
        prompts = _prompt_list(prompt)
        if max_sequence_length is None:
            max_sequence_length = self.default_max_sequence_length
        if not 1 <= max_sequence_length <= MAX_T5_LENGTH:
            raise ValueError(f"max_sequence_length must be in [1, {MAX_T5_LENGTH}], got {max_sequence_length}")
        clip_ids = self.tokenizer(
            prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True
        )["input_ids"]
        with paddle.no_grad():
            pooled = self.text_encoder(paddle.to_tensor(clip_ids, dtype="int64"), return_dict=True).pooler_output
            t5_ids = self.tokenizer_2(
                prompts, padding="max_length", max_length=max_sequence_length, truncation=True
            )["input_ids"]
            embeds = self.text_encoder_2(paddle.to_tensor(t5_ids, dtype="int64"), return_dict=True).last_hidden_state
        text_ids = paddle.zeros([embeds.shape[1], 3], dtype="float32")
        return embeds.astype(self.dtype), pooled.astype(self.dtype), text_ids

    # ------------------------------------------------------------ sampling
    def check_size(self, height, width):
        multiple = 2 * self.vae_scale_factor
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % multiple:
                raise ValueError(
                    f"{name} must be a positive multiple of {multiple} (2 x vae_scale_factor), got {value}"
                )

    def prepare_latents(self, batch, height, width, latents=None, seed=None):
        """Packed initial latents `[batch, seq, 4C]` in the pipeline dtype: `latents` checked, or drawn from `seed`."""
        h, w = height // self.vae_scale_factor, width // self.vae_scale_factor
        channels = self.transformer.config.in_channels // 4
        expected = [batch, (h // 2) * (w // 2), channels * 4]
        if latents is None:
            if seed is None:
                seed = int(np.random.default_rng().integers(2**31))
            latents = make_latents(seed, batch, channels, h, w)
        shape = list(latents.shape)
        if len(shape) != 3 or shape[1:] != expected[1:]:
            raise ValueError(f"latents must be packed {expected} for a {height}x{width} image, got {shape}")
        if shape[0] != batch:
            raise ValueError(f"latents batch {shape[0]} does not match prompts x num_images_per_prompt = {batch}")
        if not isinstance(latents, paddle.Tensor):
            latents = paddle.to_tensor(np.asarray(latents, dtype=np.float32))
        return latents.astype(self.dtype)

    def __call__(
        self,
        prompt=None,
        height=1024,
        width=1024,
        num_inference_steps=4,
        guidance_scale=3.5,
        latents=None,
        seed=None,
        num_images_per_prompt=1,
        max_sequence_length=None,
        sigmas=None,
        output_type="pil",
        prompt_embeds=None,
        pooled_prompt_embeds=None,
    ):
        if self.dtype != paddle.float32 and paddle.get_device() == "cpu":
            raise ValueError(
                f"dtype {str(self.dtype).replace('paddle.', '')} needs a GPU: Paddle's CPU build has no half-precision "
                "matmul/add kernels; load the pipeline with dtype='float32' on CPU"
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {list(OUTPUT_TYPES)}, got {output_type!r}")
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
        if not np.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale}")
        self.check_size(height, width)
        if prompt_embeds is None:
            prompt_embeds, pooled_prompt_embeds, text_ids = self.encode_prompt(prompt, max_sequence_length)
        else:
            if pooled_prompt_embeds is None:
                raise ValueError("pass pooled_prompt_embeds together with prompt_embeds")
            text_ids = paddle.zeros([prompt_embeds.shape[1], 3], dtype="float32")
        batch = prompt_embeds.shape[0] * num_images_per_prompt
        if num_images_per_prompt > 1:
            prompt_embeds = paddle.repeat_interleave(prompt_embeds, num_images_per_prompt, axis=0)
            pooled_prompt_embeds = paddle.repeat_interleave(pooled_prompt_embeds, num_images_per_prompt, axis=0)
        latents = self.prepare_latents(batch, height, width, latents, seed)
        h, w = height // self.vae_scale_factor, width // self.vae_scale_factor
        img_ids = latent_image_ids(h, w)

        timesteps = self.scheduler.set_timesteps(num_inference_steps, image_seq_len=latents.shape[1], sigmas=sigmas)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = paddle.full([batch], guidance_scale, dtype="float32")
        policy = self.transformer.cache_policy
        if policy is not None:
            policy.begin(len(timesteps))
        with paddle.no_grad():
            for i, t in enumerate(tqdm(timesteps, desc="denoising", disable=self.progress_bar_disabled)):
                if policy is not None:
                    policy.set_step(i)
                timestep = paddle.full([batch], np.float32(t) / np.float32(1000.0), dtype="float32")
                velocity = self.transformer(
                    hidden_states=latents,
                    encoder_hidden_states=prompt_embeds,
                    pooled_projections=pooled_prompt_embeds,
                    timestep=timestep,
                    img_ids=img_ids,
                    txt_ids=text_ids,
                    guidance=guidance,
                )
                latents = self.scheduler.step(velocity, i, latents)
            if output_type == "latent":
                return FluxPipelineOutput(images=latents)
            images = vae_io.decode(self.vae, unpack_latents(latents, h, w))
        images = (images.astype("float32") / 2 + 0.5).clip(0, 1).transpose([0, 2, 3, 1]).numpy()
        return FluxPipelineOutput(images=images if output_type == "np" else to_pil(images))


def to_pil(images):
    from PIL import Image

    return [Image.fromarray((np.asarray(img) * 255).round().astype(np.uint8)) for img in images]


def _prompt_list(prompt):
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")

"""From a data batch to the transformer's inputs: packed latents and the text conditioning.

Cached embeddings and latents are used as they are; otherwise captions go through the pipeline's text encoders and
pixels through its VAE (loaded on first use, so a fully cached dataset never loads T5).
"""

import json
import os

import numpy as np
import paddle

from ..models.latents import latent_image_ids, pack_latents
from ..objectives.base import Conditioning
from ..schedulers.flow_match import FlowMatchEulerScheduler
from ..utils.errors import ConfigError


def vae_scale_factor(pretrained):
    """Pixels per latent: 2 ** (len(vae block_out_channels) - 1), 8 when the folder has no VAE config."""
    path = os.path.join(pretrained, "vae", "config.json")
    if not os.path.isfile(path):
        return 8
    with open(path) as f:
        return 2 ** (len(json.load(f).get("block_out_channels", [0] * 4)) - 1)


class BatchEncoder:
    """`encode(batch) -> (packed latents float32, Conditioning)` for the trainer."""

    def __init__(self, pretrained, transformer, guidance, max_sequence_length=512, vae_latents="sample"):
        if vae_latents not in ("sample", "mode"):
            raise ConfigError(f"model.vae_latents must be sample or mode, got {vae_latents!r}")
        self.pretrained, self.transformer, self.max_sequence_length = pretrained, transformer, max_sequence_length
        self.vae_latents = vae_latents
        self.guidance = float(guidance) if transformer.config.guidance_embeds else None
        self._pipe = None

    @property
    def pipe(self):
        """A FluxPipeline around the training transformer (so FLUX is never loaded twice)."""
        if self._pipe is None:
            from paddlenlp.transformers import CLIPTokenizer, T5Tokenizer

            from ..models import text_encoders
            from ..models import vae as vae_io
            from ..pipelines.flux_pipeline import FluxPipeline

            sub = lambda name: os.path.join(self.pretrained, name)
            for name in ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"):
                if not os.path.isdir(sub(name)):
                    raise FileNotFoundError(f"model.pretrained {self.pretrained!r} has no {name}/ folder, needed to "
                                            "encode images and captions (or use a cached-embeddings dataset)")
            dtype = self.transformer.dtype
            dtype = "bfloat16" if dtype == paddle.bfloat16 else "float32"
            self._pipe = FluxPipeline(
                transformer=self.transformer, vae=vae_io.load_vae(sub("vae"), dtype),
                text_encoder=text_encoders.load_clip_text_model(sub("text_encoder"), dtype),
                text_encoder_2=text_encoders.load_t5_encoder(sub("text_encoder_2"), dtype),
                tokenizer=CLIPTokenizer.from_pretrained(sub("tokenizer")),
                tokenizer_2=T5Tokenizer.from_pretrained(sub("tokenizer_2")),
                scheduler=FlowMatchEulerScheduler.from_pretrained(sub("scheduler")))
            self._pipe.set_progress_bar_config(disable=True)
        return self._pipe

    @paddle.no_grad()
    def encode(self, batch, posterior_noise=None):
        """`posterior_noise(shape) -> [B, *shape]` standard normals for the VAE posterior draw (`vae_latents:
        sample`; without it the VAE draws from Paddle's global generator). Cached latents are used as stored."""
        if "prompt_embeds" in batch:
            prompt_embeds = paddle.to_tensor(batch["prompt_embeds"]).astype("float32")
            pooled = paddle.to_tensor(batch["pooled_prompt_embeds"]).astype("float32")
        else:
            prompt_embeds, pooled = self.pipe.encode_prompt(
                list(batch["caption"]), max_sequence_length=self.max_sequence_length)[:2]
        if "latents" in batch:
            latents = paddle.to_tensor(batch["latents"]).astype("float32")
        else:
            from ..models import vae as vae_io

            pipe = self.pipe
            pixels = paddle.to_tensor(batch["pixel_values"]).astype(pipe.vae.dtype)
            noise = None
            if self.vae_latents == "sample" and posterior_noise is not None:
                factor = vae_scale_factor(self.pretrained)
                c = pipe.vae.config.latent_channels
                noise = posterior_noise([c, pixels.shape[2] // factor, pixels.shape[3] // factor])
            latents = vae_io.encode(pipe.vae, pixels, sample=self.vae_latents == "sample", noise=noise)
        h, w = latents.shape[-2:]
        txt_ids = paddle.zeros([prompt_embeds.shape[1], 3], dtype="float32")
        cond = Conditioning(prompt_embeds, pooled, latent_image_ids(h, w), txt_ids, self.guidance)
        return pack_latents(latents.astype("float32")), cond


def collate(samples):
    """Stack array fields, keep strings as lists; None (bad records already replaced by the dataset) is dropped."""
    samples = [s for s in samples if s is not None]
    out = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], (np.ndarray, paddle.Tensor)):
            out[key] = np.stack([v.numpy() if isinstance(v, paddle.Tensor) else v for v in values])
        elif isinstance(values[0], (int, float, np.integer, np.floating)):
            out[key] = np.asarray(values)
        else:
            out[key] = values
    return out

"""Tiny random FLUX pipelines built with diffusers + transformers (PyTorch), saved in diffusers layout: the
independent reference the Paddle pipeline, text encoders and scheduler are compared with.

Two configurations differ in width, head_dim / RoPE axes, VAE depth and latent channels, scheduler shifting
(dynamic vs static) and guidance embedding (dev-like vs schnell-like). T5 and the transformer are saved sharded.
"""

import json
import os

import torch

from ppflux_lightning.models.tokenizers import make_clip_tokenizer, make_t5_tokenizer
from ppflux_lightning.pipelines.flux_pipeline import MODEL_INDEX

CORPUS = (
    "a photo of a red cat sitting on a wooden chair",
    "a watercolor painting of snowy mountains at sunset",
    "two dogs playing in the park on a sunny day",
    "a lighthouse on a rocky coast under a stormy sky",
    "macro photo of a bee on a yellow flower, 4k",
    "an astronaut riding a horse on the moon",
)

CONFIGS = {
    "dev": dict(
        clip=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4),
        t5=dict(d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4),
        vae=dict(block_out_channels=[16, 32], latent_channels=4, norm_num_groups=8),
        transformer=dict(num_layers=2, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                         axes_dims_rope=[4, 6, 6], guidance_embeds=True),
        scheduler=dict(shift=3.0, use_dynamic_shifting=True),
    ),
    "schnell": dict(
        clip=dict(hidden_size=24, intermediate_size=40, num_hidden_layers=1, num_attention_heads=2),
        t5=dict(d_model=40, d_kv=10, d_ff=64, num_layers=1, num_heads=4),
        vae=dict(block_out_channels=[8, 16, 16], latent_channels=8, norm_num_groups=4),
        transformer=dict(num_layers=1, num_single_layers=2, attention_head_dim=8, num_attention_heads=3,
                         axes_dims_rope=[2, 2, 4], guidance_embeds=False),
        scheduler=dict(shift=1.0, use_dynamic_shifting=False),
    ),
}


def _perturb(module, generator, std=0.05):
    """Add noise to every parameter so that zero biases / unit norms cannot hide a layout or mapping bug."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * std)
    return module.eval()


def build_reference(folder, name, seed=0):
    """Build the `name` configuration with PyTorch, save it to `folder` (diffusers layout) and return the
    diffusers FluxPipeline made of the same in-memory weights."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

    spec = CONFIGS[name]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    clip_vocab = make_clip_tokenizer(os.path.join(folder, "tokenizer"), CORPUS, vocab_size=620)
    t5_vocab = make_t5_tokenizer(os.path.join(folder, "tokenizer_2"), CORPUS, vocab_size=80)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=clip_vocab, max_position_embeddings=77, bos_token_id=clip_vocab - 2,
                                        eos_token_id=clip_vocab - 1, pad_token_id=1, **spec["clip"]))
    t5 = T5EncoderModel(T5Config(vocab_size=t5_vocab, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                                 relative_attention_num_buckets=8, relative_attention_max_distance=128, **spec["t5"]))
    levels = len(spec["vae"]["block_out_channels"])
    vae = AutoencoderKL(down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
                        layers_per_block=1, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611,
                        shift_factor=0.1159, **spec["vae"])
    transformer = FluxTransformer2DModel(in_channels=4 * spec["vae"]["latent_channels"],
                                         joint_attention_dim=spec["t5"]["d_model"],
                                         pooled_projection_dim=spec["clip"]["hidden_size"], **spec["transformer"])
    scheduler = FlowMatchEulerDiscreteScheduler(base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                                max_image_seq_len=4096, **spec["scheduler"])
    for module in (clip, t5, vae, transformer):
        _perturb(module, gen)
    clip.save_pretrained(os.path.join(folder, "text_encoder"))
    t5.save_pretrained(os.path.join(folder, "text_encoder_2"), max_shard_size="40KB")
    vae.save_pretrained(os.path.join(folder, "vae"))
    transformer.save_pretrained(os.path.join(folder, "transformer"), max_shard_size="60KB")
    scheduler.save_pretrained(os.path.join(folder, "scheduler"))
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(MODEL_INDEX, f, indent=2)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, text_encoder_2=t5, transformer=transformer,
                        tokenizer=CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer")),
                        tokenizer_2=T5TokenizerFast.from_pretrained(os.path.join(folder, "tokenizer_2")))
    pipe.set_progress_bar_config(disable=True)
    return pipe


_BUILT = {}


def cached_reference(tmp_path_factory, name):
    """(folder, diffusers pipeline) for configuration `name`, built once per test session."""
    if name not in _BUILT:
        folder = str(tmp_path_factory.mktemp(f"flux-{name}"))
        _BUILT[name] = (folder, build_reference(folder, name))
    return _BUILT[name]

"""A random TINY FLUX pipeline written in diffusers layout with Paddle only: a fixture for tests, demos and the
other tools (training, deploy, LoRA), loadable by `FluxPipeline.from_pretrained` and by diffusers."""

import json
import os

import paddle

from ..models.flux_transformer import FluxConfig, FluxTransformer2DModel
from ..models.text_encoders import build_clip_text_model, build_t5_encoder, save_text_encoder
from ..models.tokenizers import make_clip_tokenizer, make_t5_tokenizer
from ..models.vae import build_vae, save_vae
from ..schedulers.flow_match import FlowMatchConfig, FlowMatchEulerScheduler
from ..utils.atomic import atomic_dir, has_marker
from .flux_pipeline import MODEL_INDEX

MARKER_KIND = "tiny_pipeline"
TINY_CORPUS = (
    "a photo of a red cat sitting on a wooden chair",
    "a watercolor painting of snowy mountains at sunset",
    "two dogs playing in the park on a sunny day",
    "a bowl of fruit with apples, oranges and bananas",
    "a lighthouse on a rocky coast under a stormy sky",
    "portrait of an old man with a grey beard, studio lighting",
    "a futuristic city at night with neon lights and flying cars",
    "a small boat on a calm blue lake surrounded by green trees",
    "macro photo of a bee on a yellow flower",
    "an astronaut riding a horse on the moon, digital art",
)


def tiny_component_configs(clip_vocab, t5_vocab, guidance_embeds=True):
    """HF / diffusers config dicts of the tiny components (CLIP width 32, T5 width 32, 4-channel VAE with scale
    factor 2, a 1+1-block transformer with 2 heads of 16)."""
    clip = {"vocab_size": clip_vocab, "hidden_size": 32, "intermediate_size": 64, "projection_dim": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "bos_token_id": clip_vocab - 2,
            "eos_token_id": clip_vocab - 1, "pad_token_id": 1}
    t5 = {"vocab_size": t5_vocab, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4,
          "relative_attention_num_buckets": 8, "relative_attention_max_distance": 128, "dropout_rate": 0.0,
          "layer_norm_epsilon": 1e-6, "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new",
          "is_gated_act": True, "is_encoder_decoder": False, "pad_token_id": 0, "eos_token_id": 1}
    vae = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 2,
           "up_block_types": ["UpDecoderBlock2D"] * 2, "block_out_channels": [16, 32], "layers_per_block": 1,
           "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 8, "sample_size": 32,
           "scaling_factor": 0.3611, "shift_factor": 0.1159, "use_quant_conv": False, "use_post_quant_conv": False}
    transformer = FluxConfig(in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                             num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                             guidance_embeds=guidance_embeds, axes_dims_rope=(4, 6, 6))
    return {"text_encoder": clip, "text_encoder_2": t5, "vae": vae, "transformer": transformer}


def is_tiny_pipeline(path):
    return has_marker(path, MARKER_KIND)


def build_tiny_pipeline(out_dir, seed=0, guidance_embeds=True, overwrite=False):
    """Write a random tiny FLUX pipeline folder to `out_dir` (atomically; an existing tiny pipeline is replaced
    with `overwrite`) and return its path. Same `seed` -> same weights. `guidance_embeds=False` makes a
    schnell-like transformer."""
    with atomic_dir(out_dir, overwrite, is_tiny_pipeline, marker=MARKER_KIND) as tmp:
        clip_vocab = make_clip_tokenizer(os.path.join(tmp, "tokenizer"), TINY_CORPUS, vocab_size=640)
        t5_vocab = make_t5_tokenizer(os.path.join(tmp, "tokenizer_2"), TINY_CORPUS, vocab_size=96)
        configs = tiny_component_configs(clip_vocab, t5_vocab, guidance_embeds)
        paddle.seed(seed)
        save_text_encoder(build_clip_text_model(configs["text_encoder"]), os.path.join(tmp, "text_encoder"))
        save_text_encoder(build_t5_encoder(configs["text_encoder_2"]), os.path.join(tmp, "text_encoder_2"))
        save_vae(build_vae(configs["vae"]), os.path.join(tmp, "vae"))
        FluxTransformer2DModel(configs["transformer"]).save_pretrained(os.path.join(tmp, "transformer"))
        FlowMatchEulerScheduler(FlowMatchConfig(shift=3.0)).save_pretrained(os.path.join(tmp, "scheduler"))
        with open(os.path.join(tmp, "model_index.json"), "w") as f:
            json.dump(MODEL_INDEX, f, indent=2)
    return out_dir

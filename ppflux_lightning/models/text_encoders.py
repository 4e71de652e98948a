"""FLUX's text encoders as paddlenlp models, loaded from and saved to HF transformers folders (PyTorch layout).

paddlenlp's own `convert_from_torch` writes converted files into the user's folder and leaves T5's tied embedding
random, so the state dict is converted here instead: names mapped, Linear weights transposed, T5's `shared.weight`
tied to the encoder's token embedding. The folder is only read.
"""

import json
import os

from ..utils.atomic import atomic_dir
from ..utils.errors import ConfigError
from .torch_weights import (
    build_in_dtype,
    check_dtype,
    load_torch_layout,
    save_torch_layout,
    torch_layout_arrays,
    weight_files,
)

WEIGHTS_NAME = "model.safetensors"

# HF CLIPTextModel name part -> paddlenlp CLIPTextModel name part (substring renames, one-to-one both ways).
CLIP_RENAMES = (
    ("text_model.embeddings.token_embedding.", "text_model.token_embedding."),
    ("text_model.embeddings.position_embedding.", "text_model.positional_embedding."),
    ("text_model.encoder.layers.", "text_model.transformer.layers."),
    (".mlp.fc1.", ".linear1."),
    (".mlp.fc2.", ".linear2."),
    (".layer_norm1.", ".norm1."),
    (".layer_norm2.", ".norm2."),
    ("text_model.final_layer_norm.", "text_model.ln_final."),
)
CLIP_CONFIG_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "projection_dim", "num_hidden_layers", "num_attention_heads",
    "max_position_embeddings", "hidden_act", "layer_norm_eps", "attention_dropout", "dropout", "initializer_range",
    "initializer_factor", "pad_token_id", "bos_token_id", "eos_token_id",
)
T5_CONFIG_KEYS = (
    "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
    "relative_attention_num_buckets", "relative_attention_max_distance", "dropout_rate", "layer_norm_epsilon",
    "initializer_factor", "feed_forward_proj", "is_encoder_decoder", "use_cache", "pad_token_id", "eos_token_id",
    "decoder_start_token_id", "tie_word_embeddings",
)
T5_TIED = ("shared.weight", "encoder.embed_tokens.weight")


def clip_hf_to_paddle(key):
    for hf, pd in CLIP_RENAMES:
        key = key.replace(hf, pd)
    return key


def clip_paddle_to_hf(key):
    for hf, pd in CLIP_RENAMES:
        key = key.replace(pd, hf)
    return key


def read_hf_config(folder):
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config.json in text encoder folder {folder!r}")
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------- CLIP text model
def build_clip_text_model(hf_config, dtype="float32", lazy=False):
    """A paddlenlp CLIPTextModel from an HF `CLIPTextModel` config dict (random weights unless `lazy`)."""
    from paddlenlp.transformers import CLIPTextConfig, CLIPTextModel

    if "text_config" in hf_config:
        hf_config = hf_config["text_config"]
    model_type = hf_config.get("model_type", "clip_text_model")
    if model_type not in ("clip_text_model", "clip"):
        raise ConfigError(f"text_encoder config has model_type {model_type!r}, expected 'clip_text_model'")
    config = CLIPTextConfig(**{k: hf_config[k] for k in CLIP_CONFIG_KEYS if k in hf_config})
    # Built in float32 and cast afterwards: paddle's CPU `triu` (CLIP's causal-mask buffer) has no bf16 kernel.
    model = build_in_dtype(lambda: _construct(CLIPTextModel, config, lazy), "float32", lazy)
    model.target_dtype = check_dtype(dtype)
    if not lazy:
        model.to(dtype=model.target_dtype)
    model.hf_config = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
                       **{k: hf_config[k] for k in CLIP_CONFIG_KEYS if k in hf_config}}
    return model.eval()


def load_clip_text_model(folder, dtype="float32"):
    """CLIP text encoder from an HF folder (config.json + model.safetensors, single or sharded)."""
    model = build_clip_text_model(read_hf_config(folder), dtype, lazy=True)
    sources = {key: [clip_paddle_to_hf(key)] for key in model.state_dict()}
    files = weight_files(folder, WEIGHTS_NAME)
    load_torch_layout(model, files, sources, ignore=("position_ids",), what=f"CLIP text encoder {folder!r}")
    return model.to(dtype=model.target_dtype)


# ---------------------------------------------------------------- T5 encoder
def build_t5_encoder(hf_config, dtype="float32", lazy=False):
    """A paddlenlp T5EncoderModel from an HF `T5EncoderModel` config dict (random weights unless `lazy`)."""
    from paddlenlp.transformers import T5Config, T5EncoderModel

    if hf_config.get("model_type", "t5") != "t5":
        raise ConfigError(f"text_encoder_2 config has model_type {hf_config.get('model_type')!r}, expected 't5'")
    proj = hf_config.get("feed_forward_proj", "relu")
    if proj not in ("relu", "gated-gelu"):
        raise ConfigError(f"T5 feed_forward_proj {proj!r} is not supported; use 'relu' or 'gated-gelu'")
    act = hf_config.get("dense_act_fn")
    if act is not None and act != ("gelu_new" if proj == "gated-gelu" else "relu"):
        raise ConfigError(f"T5 dense_act_fn {act!r} does not match feed_forward_proj {proj!r}")
    distance = hf_config.get("relative_attention_max_distance", 128)
    if distance != 128:  # paddlenlp 2.8.1 ignores the key and always uses 128 (T5 v1.1 / FLUX use 128)
        raise ConfigError(f"T5 relative_attention_max_distance {distance} is not supported by paddlenlp; only 128")
    config = T5Config(**{k: hf_config[k] for k in T5_CONFIG_KEYS if k in hf_config})
    model = build_in_dtype(lambda: _construct(T5EncoderModel, config, lazy), dtype, lazy)
    model.hf_config = {"architectures": ["T5EncoderModel"], "model_type": "t5",
                       **{k: hf_config[k] for k in T5_CONFIG_KEYS if k in hf_config}}
    return model.eval()


def load_t5_encoder(folder, dtype="float32"):
    """T5 encoder from an HF folder; the token embedding is read from `shared.weight` or
    `encoder.embed_tokens.weight`, whichever the file holds (they are one tied tensor)."""
    model = build_t5_encoder(read_hf_config(folder), dtype, lazy=True)
    sources = {key: list(T5_TIED) if key in T5_TIED else [key] for key in model.state_dict()}
    files = weight_files(folder, WEIGHTS_NAME)
    return load_torch_layout(model, files, sources, what=f"T5 encoder {folder!r}")


# ---------------------------------------------------------------- saving
def save_text_encoder(model, folder, max_shard_bytes=None):
    """Write an HF transformers folder (config.json + model.safetensors in PyTorch layout) that both
    `load_*` here and transformers' `from_pretrained` read. T5's tied embedding is stored once, as HF does."""
    from paddlenlp.transformers import CLIPTextModel, T5EncoderModel

    if isinstance(model, CLIPTextModel):
        tensors, bf16 = torch_layout_arrays(model, rename=clip_paddle_to_hf)
    elif isinstance(model, T5EncoderModel):
        tensors, bf16 = torch_layout_arrays(model, skip=("encoder.embed_tokens.weight",))
    else:
        raise TypeError(f"cannot save a {type(model).__name__} as a text encoder (CLIPTextModel or T5EncoderModel)")
    config = dict(getattr(model, "hf_config", None) or model.config.to_dict())
    config["torch_dtype"] = str(model.parameters()[0].dtype).replace("paddle.", "")
    with atomic_dir(folder, overwrite=True, ours="config.json") as tmp:  # save_pretrained replaces a model folder
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        save_torch_layout(tensors, tmp, WEIGHTS_NAME, bf16=bf16, max_shard_bytes=max_shard_bytes)



def _construct(cls, config, lazy):
    """paddlenlp runs its own weight init after __init__; it must not touch lazily created parameters."""
    from paddlenlp.transformers.model_utils import no_init_weights

    with no_init_weights(_enable=lazy):
        return cls(config)

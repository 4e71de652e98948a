"""Read the small files a user hands us (JSON configs, pickles) and a pipeline folder's layout without loading any
weights, turning a parse failure into one line that names the file (`InputFileError`), not a bare decoder error.

Used by the tools to check a `--model` folder before anything heavy is imported or loaded.
"""

import json
import os
import pickle

from .atomic import has_marker
from .errors import InputFileError

SUBFOLDERS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
# The files each tokenizer folder needs (CLIP BPE, T5 SentencePiece); paddlenlp fails with a bare TypeError without.
TOKENIZER_FILES = {"tokenizer": ("vocab.json", "merges.txt"), "tokenizer_2": ("spiece.model",)}
DEPLOY_FILE = "deploy.yaml"  # the description of an export folder (export/export.py)
# Marks a toy-world model folder and holds the settings it was trained for (written by toy/build.py, read here and by
# eval/evaluate.py, which may not import toy/).
TOY_CONFIG_NAME = "toy_world.json"
# Transformer config keys that fix the architecture: a config.json without one of them is refused, never defaulted.
TRANSFORMER_KEYS = ("in_channels", "num_layers", "num_single_layers", "attention_head_dim", "num_attention_heads",
                    "joint_attention_dim", "pooled_projection_dim")


def read_json(path, what="file"):
    """The parsed JSON of `path`; missing -> FileNotFoundError, unparsable -> InputFileError, both naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputFileError(f"{what} {path!r} is not valid JSON ({e})") from None


def read_json_object(path, what="file"):
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise InputFileError(f"{what} {path!r} must hold a JSON object, got {type(data).__name__}")
    return data


def read_pickle(path, what="file"):
    """Unpickle `path` (a file we wrote); a truncated or foreign file -> InputFileError naming it."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError, TypeError) as e:
        raise InputFileError(f"{what} {path!r} is truncated or corrupt ({type(e).__name__}: {e})") from None


def read_transformer_config(folder):
    """A diffusers `transformer/config.json` as a dict; refuses one that leaves an architecture key out."""
    path = os.path.join(folder, "config.json")
    config = read_json_object(path, "transformer config")
    missing = [k for k in TRANSFORMER_KEYS if k not in config]
    if missing:
        raise InputFileError(f"transformer config {path!r} lacks {missing}: it does not describe a FLUX transformer")
    return config


def check_pipeline_folder(path, option="--model"):
    """Check a diffusers-layout FLUX folder without loading weights; returns what the tools validate against:
    {"vae_scale_factor", "t5_max_length", "guidance_embeds", "toy" (the TOY_CONFIG_NAME dict or None)}."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{option}: pipeline folder not found: {path!r}")
    read_json_object(os.path.join(path, "model_index.json"), f"{option} {path!r}: model_index.json")
    for name in SUBFOLDERS:
        if not os.path.isdir(os.path.join(path, name)):
            raise FileNotFoundError(f"{option}: pipeline folder {path!r} has no {name}/ subfolder")
    for name, files in TOKENIZER_FILES.items():
        for file in files:
            if not os.path.isfile(os.path.join(path, name, file)):
                raise FileNotFoundError(f"{option}: tokenizer file {os.path.join(path, name, file)!r} is missing")
    transformer = read_transformer_config(os.path.join(path, "transformer"))
    vae = read_json_object(os.path.join(path, "vae", "config.json"), "VAE config")
    for name in ("text_encoder", "text_encoder_2"):
        read_json_object(os.path.join(path, name, "config.json"), f"{name} config")
    tok2 = os.path.join(path, "tokenizer_2", "tokenizer_config.json")
    t5_max = read_json_object(tok2, "tokenizer_2 config").get("model_max_length", 512) if os.path.isfile(tok2) \
        else 512
    toy_path = os.path.join(path, TOY_CONFIG_NAME)
    return {"vae_scale_factor": 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1),
            "t5_max_length": min(512, int(t5_max)),
            "guidance_embeds": bool(transformer.get("guidance_embeds", True)),
            "toy": read_json_object(toy_path, "toy config") if os.path.isfile(toy_path) else None}


def is_export_folder(path):
    """An export folder we wrote: our marker, or a `deploy.yaml` with a `format_version` (exports before the marker)."""
    import yaml

    if has_marker(path, "export"):
        return True
    try:
        with open(os.path.join(path, DEPLOY_FILE)) as f:
            data = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "format_version" in data

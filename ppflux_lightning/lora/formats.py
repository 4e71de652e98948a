"""LoRA files in and out: diffusers/PEFT, kohya / sd-scripts / ComfyUI, XLabs, PaddleMIX and this project's own keys.

Every file is first read into one neutral form, `{module: Adapter}` with diffusers module names and PyTorch-layout
matrices (`down` [r, in], `up` [out, r]), checked whole against the model, and only then applied, so a bad file
changes nothing. Kohya and XLabs names are resolved through the BFL<->diffusers map of `models.checkpoint`. Each
file becomes one named adapter of the model.
"""

import dataclasses
import json
import os
import re

import numpy as np
import paddle
import paddle.nn as nn

from ..models.checkpoint import bfl_to_diffusers_map
from ..utils.errors import CheckpointError, ConfigError, abbreviate
from ..utils.safetensors_io import SafetensorsFile, save_file
from .adapters import adapter_layers, new_adapter_name, set_active, single_adapter, wrapped_layer
from .layers import LoRALinear, adapters_changed, check_adapter_name

DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
PADDLEMIX_WEIGHT_NAME = "paddle_lora_weights.safetensors"
# Prefixes in front of module names: diffusers pipelines, PEFT models, ComfyUI / BFL, kohya (underscored names).
PREFIXES = ("transformer.", "base_model.model.", "model.diffusion_model.", "diffusion_model.", "lora_unet_",
            "lora_transformer_")  # fmt: skip
# Key suffix -> (role, explicit layout). "ours" (lora_state_dict keys) is Paddle layout by construction.
SUFFIXES = (
    (".lora_A.default.weight", "down", None), (".lora_B.default.weight", "up", None),
    (".lora_A.weight", "down", None), (".lora_B.weight", "up", None),
    (".lora_down.weight", "down", "pt"), (".lora_up.weight", "up", "pt"),
    (".lora.down.weight", "down", "pt"), (".lora.up.weight", "up", "pt"),
    (".lora_A", "down", "pd"), (".lora_B", "up", "pd"),
    (".lora_A.weight.alpha", "alpha", None), (".alpha", "alpha", None),  # diffusers' tests write both forms
)  # fmt: skip
# XLabs (x-flux) double-block processors: qkv/proj_lora1 act on the image stream, ..._lora2 on the text stream; torch
# Linear layout (down [r, in], up [out, r]) and no alpha (alpha = rank).
XLABS_KEY = re.compile(r"(double_blocks\.\d+)\.processor\.(qkv|proj)_lora([12])\.(down|up)\.weight")


@dataclasses.dataclass
class Adapter:
    """One module's LoRA in PyTorch layout: `down` [r, in], `up` [out, r]; `alpha` None means alpha = rank."""

    down: np.ndarray
    up: np.ndarray
    alpha: float = None

    @property
    def rank(self):
        return self.down.shape[0]


# ---------------------------------------------------------------- reading
def _to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, paddle.Tensor):
        return value.astype("float32").numpy() if value.dtype == paddle.bfloat16 else value.numpy()
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().float().cpu().numpy()
    if isinstance(value, (int, float)):
        return np.asarray(value, dtype=np.float32)
    raise TypeError(f"cannot read a LoRA tensor of type {type(value).__name__}")


def resolve_file(path):
    """A LoRA weight file from a file path or a folder holding one (diffusers or PaddleMIX names first)."""
    if os.path.isdir(path):
        for name in (DIFFUSERS_WEIGHT_NAME, PADDLEMIX_WEIGHT_NAME):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        files = sorted(f for f in os.listdir(path) if f.endswith((".safetensors", ".pdparams")))
        if len(files) != 1:
            raise FileNotFoundError(f"expected one LoRA weight file in {path!r}, found {files}")
        return os.path.join(path, files[0])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LoRA file not found: {path!r}")
    return path


def read_lora(path_or_state_dict):
    """-> (`{key: float32 numpy}`, metadata dict) from a .safetensors / .pdparams file, a folder, or a dict."""
    if isinstance(path_or_state_dict, dict):
        return {k: _to_numpy(v).astype(np.float32) for k, v in path_or_state_dict.items()}, {}
    path = resolve_file(os.fspath(path_or_state_dict))
    if path.endswith(".pdparams"):
        return {k: _to_numpy(v).astype(np.float32) for k, v in paddle.load(path).items()}, {}
    reader = SafetensorsFile(path)
    return {k: reader.get(k).astype(np.float32) for k in reader.keys()}, dict(reader.metadata)  # noqa: SIM118 (not a dict)


def _strip_prefix(key):
    """Remove leading prefixes (possibly nested, e.g. `base_model.model.transformer.`); report the last one."""
    last, stripped = "", True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, last, stripped = key[len(prefix) :], prefix, True
                break
    return key, last


def _split_key(key):
    """`"transformer.x.to_q.lora_A.weight"` -> ("x.to_q", "down", layout or None, prefix) or None."""
    stem, prefix = _strip_prefix(key)
    xlabs = XLABS_KEY.fullmatch(stem)
    if xlabs:
        block, kind, stream, role = xlabs.groups()
        return f"{block}.{'img' if stream == '1' else 'txt'}_attn.{kind}", role, "pt", prefix
    for suffix, role, layout in SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)], role, layout, prefix
    return None


# ---------------------------------------------------------------- model-side names
def linear_shapes(model):
    """`{module name: (in, out)}` of every Linear (plain or LoRA-wrapped) in the model."""
    shapes = {}
    for name, layer in model.named_sublayers():
        if isinstance(layer, (nn.Linear, LoRALinear)):
            shapes[name] = tuple(layer.weight.shape)
    return shapes


def bfl_targets(model):
    """BFL module -> [(diffusers module, row transform)] (fused qkv / linear1 split, final modulation swapped);
    empty for models without a FLUX config."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "inner_dim"):
        return {}
    targets = {}
    for dst, (src, transform) in bfl_to_diffusers_map(config).items():
        if dst.endswith(".weight") and src.endswith(".weight"):
            targets.setdefault(src[: -len(".weight")], []).append((dst[: -len(".weight")], transform))
    return targets


def _underscored(names):
    """kohya writes module paths with `_` for `.`: map those back, dropping any that would be ambiguous."""
    table, clashes = {}, set()
    for name in names:
        flat = name.replace(".", "_")
        if flat in table and table[flat] != name:
            clashes.add(flat)
        table[flat] = name
    return {k: v for k, v in table.items() if k not in clashes}


# ---------------------------------------------------------------- metadata alphas
def metadata_alphas(metadata):
    """(default alpha, {pattern: alpha}) from diffusers' `lora_adapter_metadata` (a PEFT LoraConfig as JSON,
    keys optionally prefixed `transformer.`); (None, {}) when absent."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return None, {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"lora_adapter_metadata is not valid JSON: {raw[:80]!r}") from None
    config = {k[len("transformer.") :] if k.startswith("transformer.") else k: v for k, v in config.items()}
    alpha = config.get("lora_alpha")
    patterns = {k: float(v) for k, v in (config.get("alpha_pattern") or {}).items()}
    return (None if alpha is None else float(alpha)), patterns


def _pattern_alpha(name, patterns):
    for key, value in patterns.items():
        if name == key or name.endswith("." + key) or re.fullmatch(rf"(.*\.)?{key}", name):
            return value
    return None


# ---------------------------------------------------------------- parsing
def parse_lora(model, tensors, metadata=None, alpha=None):
    """Turn a LoRA state dict of any supported format into `{diffusers module: Adapter}` checked against `model`.

    Raises CheckpointError listing keys that match no module, incomplete pairs, or shapes that fit neither
    layout (a LoRA for another model width). `alpha`, when given, overrides the file's alphas.
    """
    metadata = metadata or {}
    shapes = linear_shapes(model)
    bfl = bfl_targets(model)
    flat_names = _underscored(list(shapes) + list(bfl))
    groups, unknown = {}, []
    layout_hint = "pd" if metadata.get("format") == "pd" else None
    for key, value in tensors.items():
        parsed = _split_key(key)
        if parsed is None:
            unknown.append(key)
            continue
        stem, role, layout, prefix = parsed
        if stem not in shapes and stem not in bfl and prefix in ("lora_unet_", "lora_transformer_"):
            stem = flat_names.get(stem, stem)
        if stem not in shapes and stem not in bfl:
            unknown.append(key)
            continue
        if layout:
            layout_hint = layout
        entry = groups.setdefault(stem, {})
        if role in entry:
            raise CheckpointError(f"LoRA file holds two {role} tensors for module {stem!r} (second: {key!r})")
        entry[role] = value
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} LoRA keys match no module of {type(model).__name__} (DoRA, text-encoder and other "
            f"models' LoRAs are not supported; nothing was loaded): {abbreviate(unknown)}"
        )
    if not groups:
        raise CheckpointError("the LoRA state dict holds no LoRA tensors")
    incomplete = sorted(s for s, e in groups.items() if "down" not in e or "up" not in e)
    if incomplete:
        raise CheckpointError(f"LoRA modules without both down/lora_A and up/lora_B tensors: {abbreviate(incomplete)}")

    direct = {s: e for s, e in groups.items() if s in shapes}
    layout = _choose_layout(direct, shapes, layout_hint)
    default_alpha, patterns = metadata_alphas(metadata)
    adapters = {}
    for stem, entry in groups.items():
        down, up = entry["down"], entry["up"]
        if stem in direct and layout == "pd":
            down, up = down.T, up.T
        file_alpha = float(entry["alpha"].reshape(-1)[0]) if "alpha" in entry else None
        targets = [(stem, None)] if stem in direct else bfl[stem]
        if stem not in direct:  # a fused BFL module: check the whole before splitting the up rows
            fused = (shapes[targets[0][0]][0], sum(shapes[name][1] for name, _ in targets))
            _check_shapes(f"{stem} (-> {', '.join(name for name, _ in targets)})", down, up, fused)
        for name, rows in targets:
            part_up = rows(up) if rows is not None else up
            _check_shapes(name, down, part_up, shapes[name])
            module_alpha = file_alpha if file_alpha is not None else _pattern_alpha(name, patterns)
            module_alpha = default_alpha if module_alpha is None else module_alpha
            if name in adapters:
                raise CheckpointError(f"LoRA file sets module {name!r} twice (diffusers and BFL/kohya names)")
            adapters[name] = Adapter(
                np.ascontiguousarray(down), np.ascontiguousarray(part_up), module_alpha if alpha is None else alpha
            )
    return adapters


def _choose_layout(direct, shapes, hint):
    """"pt" ([r, in] / [out, r]) or "pd" ([in, r] / [r, out]) for the whole file, from shapes; `hint` (metadata
    or key style) breaks ties. A pair that fits neither layout is reported with the model's shape."""
    if not direct:
        return "pt"

    def fits(layout):
        for stem, e in direct.items():
            down, up = (e["down"], e["up"]) if layout == "pt" else (e["down"].T, e["up"].T)
            if not _pair_ok(down, up, shapes[stem]):
                return False
        return True

    candidates = [lay for lay in ("pt", "pd") if fits(lay)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        return hint or "pt"
    # Neither layout fits every pair: report the first failure in the expected layout.
    expected = hint or "pt"
    for stem, e in direct.items():
        down, up = (e["down"], e["up"]) if expected == "pt" else (e["down"].T, e["up"].T)
        _check_shapes(stem, down, up, shapes[stem])
    raise CheckpointError("LoRA tensors mix PyTorch and Paddle layouts")


def _pair_ok(down, up, in_out):
    return (down.ndim == 2 and up.ndim == 2 and down.shape[1] == in_out[0] and up.shape[0] == in_out[1]
            and up.shape[1] == down.shape[0])  # fmt: skip


def _check_shapes(name, down, up, in_out):
    if not _pair_ok(down, up, in_out):
        raise CheckpointError(
            f"LoRA for {name!r} has down {list(down.shape)} and up {list(up.shape)} (as [r, in] / [out, r]) but the "
            f"model's layer maps {in_out[0]} -> {in_out[1]}: a LoRA for another model width?"
        )


# ---------------------------------------------------------------- applying
@paddle.no_grad()
def apply_adapters(model, adapters, adapter_name, scale=1.0):
    """Add `adapters` ({module: Adapter}) to the model as the new adapter `adapter_name` (frozen: loaded weights
    are not trained), with user weight `scale`; like diffusers, it becomes the only active adapter."""
    check_adapter_name(adapter_name)
    if adapter_layers(model, adapter_name):
        raise ValueError(f"adapter name {adapter_name!r} is already in use: delete_adapters({adapter_name!r}) first "
                         "or choose another name")  # fmt: skip
    for name, adapter in adapters.items():
        layer = wrapped_layer(model, name).add_adapter(adapter_name, adapter.rank, adapter.alpha)
        layer.scale = float(scale)
        layer.lora_A.set_value(paddle.to_tensor(adapter.down.T.copy()).astype(layer.lora_A.dtype))
        layer.lora_B.set_value(paddle.to_tensor(adapter.up.T.copy()).astype(layer.lora_B.dtype))
        layer.lora_A.stop_gradient = layer.lora_B.stop_gradient = True
    set_active(model, [adapter_name])
    adapters_changed()
    return sorted(adapters)


def load_lora_weights(model, path_or_state_dict, adapter_name=None, scale=1.0, alpha=None):
    """Load a LoRA file or state dict of any supported format into `model` as adapter `adapter_name` (default
    `default_<n>`, as diffusers), which becomes the active adapter; `set_adapters` combines several.

    `scale` is the adapter's weight (diffusers' `set_adapters` weight); `alpha` overrides the file's alpha, e.g.
    `alpha=8` for the released FLUX-Lightning LoRA (trained with alpha 8 at rank 32, saved without it). Everything is
    checked before anything changes. Returns the module names that carry the adapter.
    """
    tensors, metadata = read_lora(path_or_state_dict)
    adapters = parse_lora(model, tensors, metadata, alpha)
    return apply_adapters(model, adapters, adapter_name or new_adapter_name(model), scale)


def load_frozen_adapters(model, entries):
    """Load `model.extra_loras` entries (`[{path: FILE, weight: 1.0, alpha: None}]`) as frozen adapters `extra_0`,
    `extra_1`, ...; returns `{name: weight}`. Every file is checked before the next one loads."""
    weights = {}
    for i, entry in enumerate(entries or []):
        where = f"model.extra_loras[{i}]"
        if not isinstance(entry, dict) or "path" not in entry:
            raise ConfigError(f"{where} must be a mapping with 'path' (optional 'weight', 'alpha'), got {entry!r}")
        unknown = sorted(set(entry) - {"path", "weight", "alpha"})
        if unknown:
            raise ConfigError(f"{where} has unknown keys {unknown}; allowed: path, weight, alpha")
        weight, alpha = entry.get("weight", 1.0), entry.get("alpha")
        for key, value in (("weight", weight), ("alpha", alpha)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"{where}.{key} must be a number, got {value!r}")
        name = f"extra_{i}"
        load_lora_weights(model, str(entry["path"]), name, scale=float(weight), alpha=alpha)
        weights[name] = float(weight)
    return weights


# ---------------------------------------------------------------- writing
def save_lora_weights(model, path, format="diffusers", adapter_name=None):
    """Write one adapter (the model's only one unless `adapter_name` is given): "diffusers" (PEFT keys, PyTorch
    layout, `.alpha` keys where alpha != rank, loadable by diffusers' `FluxPipeline.load_lora_weights`) or
    "paddlemix" (Paddle layout, metadata `format: pd`; PaddleMIX assumes alpha = rank, so alpha / rank is folded
    into lora_B). A folder path gets the conventional file name. Returns the file written."""
    if format not in ("diffusers", "paddlemix"):
        raise ValueError(f"unknown LoRA format {format!r}; choose 'diffusers' or 'paddlemix'")
    name = single_adapter(model, adapter_name)
    layers = {} if name is None else adapter_layers(model, name)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LoRA adapters to save")
    if not str(path).endswith(".safetensors"):
        path = os.path.join(path, DIFFUSERS_WEIGHT_NAME if format == "diffusers" else PADDLEMIX_WEIGHT_NAME)
    tensors, bf16 = {}, set()
    for name, layer in layers.items():
        a, b = _to_numpy(layer.lora_A).astype(np.float32), _to_numpy(layer.lora_B).astype(np.float32)
        key = f"transformer.{name}"
        if format == "diffusers":
            tensors[key + ".lora_A.weight"], tensors[key + ".lora_B.weight"] = a.T.copy(), b.T.copy()
            if layer.alpha != layer.rank:
                tensors[key + ".alpha"] = np.asarray(layer.alpha, dtype=np.float32)
        else:
            tensors[key + ".lora_A.weight"], tensors[key + ".lora_B.weight"] = a, b * (layer.alpha / layer.rank)
        if layer.lora_A.dtype == paddle.bfloat16:
            bf16.update({key + ".lora_A.weight", key + ".lora_B.weight"})
    save_file(tensors, path, metadata={"format": "pt" if format == "diffusers" else "pd"}, bf16_keys=bf16)
    return path

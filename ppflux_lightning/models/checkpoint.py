"""Checkpoint layouts for the FLUX transformer: diffusers folders (single or sharded), Black Forest Labs single
files, and streaming them into a Paddle model one tensor at a time.

Layout rule: every 2-D parameter of the model is an `nn.Linear` weight, stored `[in, out]` in Paddle and
`[out, in]` in PyTorch files, so 2-D tensors are transposed on the way in and out; nothing else is.
"""

import json
import os
import re

import numpy as np
import paddle

from ..utils.atomic import atomic_dir
from ..utils.errors import CheckpointError, abbreviate
from ..utils.safetensors_io import SafetensorsFile
from .torch_weights import build_in_dtype, check_dtype, save_torch_layout

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
BFL_PREFIXES = ("model.diffusion_model.", "diffusion_model.")


def safetensors_files(folder):
    """The weight files of a diffusers model folder: the shards named by the index, or all *.safetensors."""
    index = [f for f in os.listdir(folder) if f.endswith(".safetensors.index.json")]
    if index:
        with open(os.path.join(folder, index[0])) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
        if missing:
            raise CheckpointError(f"shards {missing} named by {index[0]} are missing from {folder!r}")
        return [os.path.join(folder, n) for n in names]
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weight file in {folder!r}")
    return [os.path.join(folder, f) for f in files]


def build_and_load(cls, config, files, dtype, key_map=None):
    """Create `cls(config)` with uninitialised parameters in `dtype`, then fill them from `files` one tensor at a
    time. `key_map` maps model keys to `(file key, transform)`; None means the file uses the model's own keys.
    Strict: missing or unexpected keys raise an error listing them."""
    dtype = check_dtype(dtype)
    model = build_in_dtype(lambda: cls(config), dtype, lazy=True)
    readers = [SafetensorsFile(f) for f in files]
    where = {k: r for r in readers for k in r.keys()}
    params = model.state_dict()
    if key_map is None:
        key_map = {k: (k, None) for k in params}
        unexpected = sorted(set(where) - set(params))
    else:
        unexpected = sorted(set(where) - {src for src, _ in key_map.values()})
    missing = sorted({src for src, _ in key_map.values() if src not in where})
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not match the model: missing keys {abbreviate(missing)}, "
            f"unexpected keys {abbreviate(unexpected)}"
        )
    for name, param in params.items():
        src, transform = key_map[name]
        array = where[src].get(src)
        array = transform(array) if transform else array
        if array.ndim == 2:
            array = array.T
        if tuple(array.shape) != tuple(param.shape):
            raise CheckpointError(
                f"tensor {src!r} has shape {list(array.shape)} (after layout conversion), model expects "
                f"{list(param.shape)} for {name!r}"
            )
        param.set_value(paddle.to_tensor(np.ascontiguousarray(array, dtype=np.float32)).astype(dtype))
    model.eval()
    return model


def torch_layout_state(model):
    """model parameters as float32 numpy arrays in PyTorch layout, plus the set of keys that are bf16."""
    tensors, bf16 = {}, set()
    for name, param in model.state_dict().items():
        if name.endswith((".lora_A", ".lora_B")):  # adapters are saved with save_lora_weights, not here
            continue
        array = param.astype("float32").numpy() if param.dtype == paddle.bfloat16 else param.numpy()
        if param.dtype == paddle.bfloat16:
            bf16.add(name)
        tensors[name] = array.T.copy() if array.ndim == 2 else array
    return tensors, bf16


def save_diffusers_folder(model, path, config, max_shard_bytes=None):
    tensors, bf16 = torch_layout_state(model)
    with atomic_dir(path, overwrite=True, ours="config.json") as tmp:  # save_pretrained replaces a model folder
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        save_torch_layout(tensors, tmp, WEIGHTS_NAME, bf16, max_shard_bytes)


# ---------------------------------------------------------------- Black Forest Labs single-file layout
def strip_prefix(key):
    for prefix in BFL_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def strip_prefix_shapes(shapes):
    return {strip_prefix(k): v for k, v in shapes.items()}


def _block_count(shapes, stem):
    ids = {int(m.group(1)) for k in shapes for m in [re.match(stem + r"\.(\d+)\.", k)] if m}
    return max(ids) + 1 if ids else 0


def default_axes_dims(head_dim):
    """FLUX.1 uses (16, 56, 56) for head_dim 128; other widths keep the same 1/8 : 7/16 : 7/16 split."""
    first = head_dim // 8 + (head_dim // 8) % 2
    rest = (head_dim - first) // 2
    if rest % 2:
        first, rest = first + 2, rest - 1
    return (first, rest, rest)


def infer_flux_config(shapes):
    """A FluxConfig from BFL tensor shapes: widths from the embedders, head_dim from `query_norm.scale`."""
    from .flux_transformer import FluxConfig

    try:
        inner, in_channels = shapes["img_in.weight"]
        joint = shapes["txt_in.weight"][1]
        pooled = shapes["vector_in.in_layer.weight"][1]
        norm_key = next(k for k in shapes if k.endswith("norm.query_norm.scale"))
        out_channels = shapes["final_layer.linear.weight"][0]
    except (KeyError, StopIteration) as e:
        raise CheckpointError(f"not a FLUX single-file checkpoint: missing {e}") from None
    head_dim = shapes[norm_key][0]
    return FluxConfig(
        in_channels=in_channels,
        out_channels=out_channels,
        num_layers=_block_count(shapes, "double_blocks"),
        num_single_layers=_block_count(shapes, "single_blocks"),
        attention_head_dim=head_dim,
        num_attention_heads=inner // head_dim,
        joint_attention_dim=joint,
        pooled_projection_dim=pooled,
        guidance_embeds="guidance_in.in_layer.weight" in shapes,
        axes_dims_rope=default_axes_dims(head_dim),
    )


def _rows(start, stop):
    return lambda a: a[start:stop]


def _swap_halves(a):
    half = a.shape[0] // 2
    return np.concatenate([a[half:], a[:half]], axis=0)


def detect_prefix(keys):
    """The `model.diffusion_model.`-style prefix shared by a BFL file's keys, or ''."""
    for prefix in BFL_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


def bfl_to_diffusers_map(config, prefix=""):
    """model key -> (BFL key, transform). Fused qkv / linear1 rows are split; the final modulation's
    (shift, scale) halves are swapped into diffusers' (scale, shift)."""
    inner = config.inner_dim
    mlp = 4 * inner
    m = {}

    def linear(dst, src, transform=None):
        m[dst + ".weight"] = (src + ".weight", transform)
        m[dst + ".bias"] = (src + ".bias", transform)

    linear("x_embedder", "img_in")
    linear("context_embedder", "txt_in")
    linear("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer")
    linear("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer")
    linear("time_text_embed.text_embedder.linear_1", "vector_in.in_layer")
    linear("time_text_embed.text_embedder.linear_2", "vector_in.out_layer")
    if config.guidance_embeds:
        linear("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer")
        linear("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer")
    for i in range(config.num_layers):
        d, s = f"transformer_blocks.{i}", f"double_blocks.{i}"
        linear(f"{d}.norm1.linear", f"{s}.img_mod.lin")
        linear(f"{d}.norm1_context.linear", f"{s}.txt_mod.lin")
        for j, name in enumerate(("to_q", "to_k", "to_v")):
            linear(f"{d}.attn.{name}", f"{s}.img_attn.qkv", _rows(j * inner, (j + 1) * inner))
        for j, name in enumerate(("add_q_proj", "add_k_proj", "add_v_proj")):
            linear(f"{d}.attn.{name}", f"{s}.txt_attn.qkv", _rows(j * inner, (j + 1) * inner))
        m[f"{d}.attn.norm_q.weight"] = (f"{s}.img_attn.norm.query_norm.scale", None)
        m[f"{d}.attn.norm_k.weight"] = (f"{s}.img_attn.norm.key_norm.scale", None)
        m[f"{d}.attn.norm_added_q.weight"] = (f"{s}.txt_attn.norm.query_norm.scale", None)
        m[f"{d}.attn.norm_added_k.weight"] = (f"{s}.txt_attn.norm.key_norm.scale", None)
        linear(f"{d}.attn.to_out.0", f"{s}.img_attn.proj")
        linear(f"{d}.attn.to_add_out", f"{s}.txt_attn.proj")
        linear(f"{d}.ff.net.0.proj", f"{s}.img_mlp.0")
        linear(f"{d}.ff.net.2", f"{s}.img_mlp.2")
        linear(f"{d}.ff_context.net.0.proj", f"{s}.txt_mlp.0")
        linear(f"{d}.ff_context.net.2", f"{s}.txt_mlp.2")
    for i in range(config.num_single_layers):
        d, s = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
        for j, name in enumerate(("attn.to_q", "attn.to_k", "attn.to_v")):
            linear(f"{d}.{name}", f"{s}.linear1", _rows(j * inner, (j + 1) * inner))
        linear(f"{d}.proj_mlp", f"{s}.linear1", _rows(3 * inner, 3 * inner + mlp))
        linear(f"{d}.proj_out", f"{s}.linear2")
        m[f"{d}.attn.norm_q.weight"] = (f"{s}.norm.query_norm.scale", None)
        m[f"{d}.attn.norm_k.weight"] = (f"{s}.norm.key_norm.scale", None)
        linear(f"{d}.norm.linear", f"{s}.modulation.lin")
    linear("norm_out.linear", "final_layer.adaLN_modulation.1", _swap_halves)
    linear("proj_out", "final_layer.linear")
    return {k: (prefix + src, t) for k, (src, t) in m.items()}


def diffusers_to_bfl(tensors, config):
    """Inverse of `bfl_to_diffusers_map` on PyTorch-layout numpy arrays (for exporting to ComfyUI / BFL tools)."""
    out = {}
    inverse = {}
    for dst, (src, transform) in bfl_to_diffusers_map(config).items():
        inverse.setdefault(src, []).append((dst, transform))
    for src, parts in inverse.items():
        if len(parts) == 1 and parts[0][1] is None:
            out[src] = tensors[parts[0][0]]
        elif len(parts) == 1:  # the swapped final modulation
            out[src] = _swap_halves(tensors[parts[0][0]])
        else:
            out[src] = np.concatenate([tensors[dst] for dst, _ in parts], axis=0)
    return out

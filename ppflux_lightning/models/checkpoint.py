"""FLUX transformer checkpoint layouts: diffusers folders (one file or shards with an index) and Black Forest Labs
single files (with or without `model.diffusion_model.`), mapped onto our diffusers-named parameters, and the config
read from config.json and checked against (or completed from) the tensor shapes.

Only names, row slices and config are decided here; the PyTorch -> Paddle layout rule and the streaming load live in
`torch_weights`, shared with the VAE and the text encoders.
"""

import dataclasses
import os
import re

from ..utils.errors import CheckpointError
from ..utils.files import read_json_object
from ..utils.safetensors_io import SafetensorsFile
from .flux_config import FluxConfig, default_axes_dims
from .torch_weights import Rows, SwapHalves, weight_files

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
BFL_PREFIXES = ("model.diffusion_model.", "diffusion_model.")

# Where each layout keeps the tensors the config is read from (PyTorch layout, [out, in]).
SHAPE_KEYS = {
    "diffusers": dict(
        embed="x_embedder.weight", context="context_embedder.weight",
        pooled="time_text_embed.text_embedder.linear_1.weight",
        guidance="time_text_embed.guidance_embedder.linear_1.weight", out="proj_out.weight",
        head_norm=r"\.attn\.norm_q\.weight", double="transformer_blocks", single="single_transformer_blocks",
    ),
    "bfl": dict(
        embed="img_in.weight", context="txt_in.weight", pooled="vector_in.in_layer.weight",
        guidance="guidance_in.in_layer.weight", out="final_layer.linear.weight",
        head_norm=r"\.query_norm\.scale", double="double_blocks", single="single_blocks",
    ),
}


@dataclasses.dataclass
class FluxCheckpoint:
    """A resolved FLUX checkpoint: its layout, files, key prefix, config, and model key -> source (None: same key)."""

    path: str
    layout: str
    files: list
    prefix: str
    config: FluxConfig
    sources: dict = None
    config_file: str = None
    default_axes: bool = False

    def notes(self):
        notes = {"layout": self.layout + (" (sharded)" if len(self.files) > 1 else "")}
        if self.prefix:
            notes["key prefix"] = self.prefix
        notes["config"] = "inferred from tensor shapes" + (f", checked against {self.config_file}"
                                                           if self.config_file else "")
        notes.update({k: v for k, v in self.config.to_dict().items() if not k.startswith("_")})
        if self.default_axes:
            notes["axes_dims_rope"] = f"{notes['axes_dims_rope']} (FLUX.1's split for the head_dim: no tensor has it)"
        return notes


def open_checkpoint(path, config=None):
    """Resolve `path` (a diffusers `transformer/` folder, a pipeline folder holding one, or a single safetensors
    file in BFL or diffusers naming) from config.json and safetensors headers only; no tensor data is read.

    The config comes from `config` (a dict or FluxConfig) or the folder's config.json; keys it leaves out are
    inferred from tensor shapes (widths from the embedders, head_dim from the per-head norms, depth from the block
    indices, dev vs schnell from the guidance embedder), and keys it sets must agree with them."""
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")) and os.path.isdir(
        os.path.join(path, "transformer")
    ):
        path = os.path.join(path, "transformer")
    config_file = None
    if config is None and os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
        config_file = os.path.join(path, "config.json")
        config = read_json_object(config_file, "transformer config")
    if isinstance(config, FluxConfig):
        config = {k: v for k, v in config.to_dict().items() if not k.startswith("_")}
    config = dict(config or {})
    FluxConfig.check_keys(config, f"FLUX transformer config ({config_file or 'given'})")
    if os.path.isdir(path):
        files = weight_files(path, WEIGHTS_NAME)
    elif os.path.isfile(path):
        files = [path]
    else:
        raise FileNotFoundError(f"no FLUX transformer checkpoint at {path!r}")
    shapes = {}
    for file in files:
        shapes.update(SafetensorsFile(file).shapes())
    prefix = detect_prefix(list(shapes))
    stripped = {k[len(prefix) :]: v for k, v in shapes.items()}
    if SHAPE_KEYS["diffusers"]["embed"] in stripped and not prefix:
        layout = "diffusers"
    elif SHAPE_KEYS["bfl"]["embed"] in stripped:
        layout = "bfl"
    else:
        raise CheckpointError(
            f"{path!r} is not a FLUX transformer checkpoint: no x_embedder.weight (diffusers) or img_in.weight "
            f"(Black Forest Labs) among its {len(shapes)} tensors"
        )
    inferred = infer_config(stripped, layout, config.get("patch_size", 1))
    resolved = resolve_config(config, inferred, config_file or "the given config")
    sources = None
    if layout == "bfl":
        sources = {key: [source] for key, source in bfl_to_diffusers_map(resolved, prefix).items()}
    return FluxCheckpoint(path, layout, files, prefix, resolved, sources, config_file, "axes_dims_rope" not in config)


def detect_prefix(keys):
    """The `model.diffusion_model.`-style prefix shared by a BFL file's keys, or ''."""
    for prefix in BFL_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


def _block_count(shapes, stem):
    ids = {int(m.group(1)) for k in shapes for m in [re.match(re.escape(stem) + r"\.(\d+)\.", k)] if m}
    return max(ids) + 1 if ids else 0


def infer_config(shapes, layout, patch_size=1):
    """The config keys that tensor shapes determine (all but `patch_size` and `axes_dims_rope`): a dict of
    key -> (value, the tensor it was read from)."""
    names = SHAPE_KEYS[layout]
    try:
        inner, in_channels = shapes[names["embed"]]
        joint = shapes[names["context"]][1]
        pooled = shapes[names["pooled"]][1]
        out_rows = shapes[names["out"]][0]
        head_key = next(k for k in sorted(shapes) if re.search(names["head_norm"] + "$", k))
    except (KeyError, StopIteration, ValueError) as e:
        raise CheckpointError(f"not a complete FLUX transformer checkpoint ({layout} layout): missing {e}") from None
    head_dim = shapes[head_key][0]
    if inner % head_dim:
        raise CheckpointError(f"inner width {inner} is not a multiple of head_dim {head_dim} (from {head_key!r})")
    blocks = lambda stem: (_block_count(shapes, stem), f"{stem}.N")  # noqa: E731
    return dict(
        in_channels=(in_channels, names["embed"]),
        out_channels=(out_rows // patch_size**2, names["out"]),
        num_layers=blocks(names["double"]),
        num_single_layers=blocks(names["single"]),
        attention_head_dim=(head_dim, head_key),
        num_attention_heads=(inner // head_dim, f"{names['embed']} / {head_key}"),
        joint_attention_dim=(joint, names["context"]),
        pooled_projection_dim=(pooled, names["pooled"]),
        guidance_embeds=(names["guidance"] in shapes, names["guidance"]),
    )


def resolve_config(given, inferred, source):
    """`given` completed with the `inferred` values; a key set in both must agree (a CheckpointError naming
    `source` and the tensor otherwise). RoPE axes, which no tensor holds, default to FLUX.1's split for the head_dim."""
    out = {key: value for key, (value, _) in inferred.items()}
    for key, value in given.items():
        if key.startswith("_") or value is None:
            continue
        if key in inferred and value != inferred[key][0]:
            raise CheckpointError(
                f"{source} sets {key}={value!r}, but the weights give {inferred[key][0]!r} (from {inferred[key][1]!r})"
            )
        out[key] = value
    out.setdefault("axes_dims_rope", default_axes_dims(out["attention_head_dim"]))
    return FluxConfig.from_dict(out)


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
            linear(f"{d}.attn.{name}", f"{s}.img_attn.qkv", Rows(j * inner, (j + 1) * inner))
        for j, name in enumerate(("add_q_proj", "add_k_proj", "add_v_proj")):
            linear(f"{d}.attn.{name}", f"{s}.txt_attn.qkv", Rows(j * inner, (j + 1) * inner))
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
            linear(f"{d}.{name}", f"{s}.linear1", Rows(j * inner, (j + 1) * inner))
        linear(f"{d}.proj_mlp", f"{s}.linear1", Rows(3 * inner, 3 * inner + mlp))
        linear(f"{d}.proj_out", f"{s}.linear2")
        m[f"{d}.attn.norm_q.weight"] = (f"{s}.norm.query_norm.scale", None)
        m[f"{d}.attn.norm_k.weight"] = (f"{s}.norm.key_norm.scale", None)
        linear(f"{d}.norm.linear", f"{s}.modulation.lin")
    linear("norm_out.linear", "final_layer.adaLN_modulation.1", SwapHalves())
    linear("proj_out", "final_layer.linear")
    return {k: (prefix + src, t) for k, (src, t) in m.items()}

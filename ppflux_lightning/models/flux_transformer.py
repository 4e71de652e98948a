"""FLUX.1 transformer in Paddle, with diffusers' module names so that checkpoints and LoRA keys map one to one."""

import dataclasses
import json
import os

import paddle
import paddle.nn as nn

from ..utils.errors import ConfigError
from . import checkpoint, fused
from .blocks import ContinuousAdaNorm, DoubleStreamBlock, SingleStreamBlock
from .embeddings import CombinedTimestepTextEmbedding, rope_frequencies


@dataclasses.dataclass
class FluxConfig:
    """The diffusers `FluxTransformer2DModel` config keys. Defaults are FLUX.1-dev."""

    patch_size: int = 1
    in_channels: int = 64
    out_channels: int = None
    num_layers: int = 19
    num_single_layers: int = 38
    attention_head_dim: int = 128
    num_attention_heads: int = 24
    joint_attention_dim: int = 4096
    pooled_projection_dim: int = 768
    guidance_embeds: bool = True
    axes_dims_rope: tuple = (16, 56, 56)

    def __post_init__(self):
        self.axes_dims_rope = tuple(int(d) for d in self.axes_dims_rope)
        if self.out_channels is None:
            self.out_channels = self.in_channels
        if sum(self.axes_dims_rope) != self.attention_head_dim:
            raise ConfigError(
                f"axes_dims_rope {list(self.axes_dims_rope)} sums to {sum(self.axes_dims_rope)}, "
                f"but attention_head_dim is {self.attention_head_dim}"
            )
        if any(d % 2 for d in self.axes_dims_rope):
            raise ConfigError(f"axes_dims_rope {list(self.axes_dims_rope)} must hold even numbers")

    @property
    def inner_dim(self):
        return self.num_attention_heads * self.attention_head_dim

    @classmethod
    def from_dict(cls, d):
        """Build from a config.json dict; keys starting with `_` (diffusers bookkeeping) are ignored."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if not k.startswith("_") and k not in fields)
        if unknown:
            raise ConfigError(f"unknown FLUX transformer config keys {unknown}; valid keys: {sorted(fields)}")
        return cls(**{k: v for k, v in d.items() if k in fields})

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["axes_dims_rope"] = list(self.axes_dims_rope)
        return {"_class_name": "FluxTransformer2DModel", **d}


class FluxTransformer2DModel(nn.Layer):
    """Predicts the flow-matching velocity for packed latents `[B, S_img, in_channels]`.

    Sequence order inside the blocks is text first, then image. `cache_policy` (see `ppflux_lightning.acceleration`)
    may take over the block loop; by default every block runs.
    """

    config_name = "config.json"

    def __init__(self, config=None, **kwargs):
        super().__init__()
        if config is None:
            config = FluxConfig.from_dict(kwargs)
        elif kwargs:
            raise TypeError(f"pass either a FluxConfig or keyword arguments, not both: {sorted(kwargs)}")
        self.config = config
        dim, heads, head_dim = config.inner_dim, config.num_attention_heads, config.attention_head_dim
        self.x_embedder = nn.Linear(config.in_channels, dim)
        self.context_embedder = nn.Linear(config.joint_attention_dim, dim)
        self.time_text_embed = CombinedTimestepTextEmbedding(dim, config.pooled_projection_dim, config.guidance_embeds)
        self.transformer_blocks = nn.LayerList(
            [DoubleStreamBlock(dim, heads, head_dim) for _ in range(config.num_layers)]
        )
        self.single_transformer_blocks = nn.LayerList(
            [SingleStreamBlock(dim, heads, head_dim) for _ in range(config.num_single_layers)]
        )
        self.norm_out = ContinuousAdaNorm(dim)
        self.proj_out = nn.Linear(dim, config.patch_size**2 * config.out_channels)
        self.gradient_checkpointing = False
        self.cache_policy = None

    # ------------------------------------------------------------------ forward
    def embed(self, hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids, guidance):
        """Inputs -> (image tokens, text tokens, temb, rope). Timestep and guidance are in [0, 1]."""
        if hidden_states.ndim != 3 or hidden_states.shape[-1] != self.config.in_channels:
            raise ValueError(
                f"hidden_states must be packed latents [B, seq, {self.config.in_channels}], "
                f"got {list(hidden_states.shape)}"
            )
        if encoder_hidden_states.shape[-1] != self.config.joint_attention_dim:
            raise ValueError(
                f"encoder_hidden_states last dim {encoder_hidden_states.shape[-1]} != joint_attention_dim "
                f"{self.config.joint_attention_dim}"
            )
        if self.config.guidance_embeds and guidance is None:
            raise ValueError("this transformer has a guidance embedding (FLUX.1-dev style): pass `guidance`")
        dtype = self.x_embedder.weight.dtype
        batch = hidden_states.shape[0]
        timestep = _per_sample(timestep, batch) * 1000.0
        guidance = _per_sample(guidance, batch) * 1000.0 if self.config.guidance_embeds else None
        temb = self.time_text_embed(timestep, pooled_projections.astype(dtype), guidance)
        img_ids = img_ids[0] if img_ids.ndim == 3 else img_ids
        txt_ids = txt_ids[0] if txt_ids.ndim == 3 else txt_ids
        rope = rope_frequencies(paddle.concat([txt_ids, img_ids], axis=0), self.config.axes_dims_rope)
        hidden = self.x_embedder(hidden_states.astype(dtype))
        context = self.context_embedder(encoder_hidden_states.astype(dtype))
        return hidden, context, temb, rope

    def run_double_block(self, index, hidden, context, temb, rope):
        return self._call(self.transformer_blocks[index], hidden, context, temb, rope)

    def run_single_block(self, index, x, temb, rope):
        return self._call(self.single_transformer_blocks[index], x, temb, rope)

    def _call(self, block, *args):
        if self.gradient_checkpointing and self.training:
            from paddle.distributed.fleet.utils import recompute

            return recompute(block, *args, use_reentrant=False)
        return block(*args)

    def run_blocks(self, hidden, context, temb, rope, features=None):
        """All blocks in order; returns the image tokens. `features`, a list, receives the image tokens after
        every double and every single block (the adversarial discriminator's inputs)."""
        for i in range(len(self.transformer_blocks)):
            hidden, context = self.run_double_block(i, hidden, context, temb, rope)
            if features is not None:
                features.append(hidden)
        n_txt = context.shape[1]
        x = paddle.concat([context, hidden], axis=1)
        for i in range(len(self.single_transformer_blocks)):
            x = self.run_single_block(i, x, temb, rope)
            if features is not None:
                features.append(x[:, n_txt:])
        return x[:, n_txt:]

    def project_out(self, hidden, temb):
        return self.proj_out(self.norm_out(hidden, temb))

    def forward(
        self, hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids, guidance=None
    ):
        hidden, context, temb, rope = self.embed(
            hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids, guidance
        )
        if self.cache_policy is not None:
            hidden = self.cache_policy.run(self, hidden, context, temb, rope)
        else:
            hidden = self.run_blocks(hidden, context, temb, rope)
        return self.project_out(hidden, temb)

    def block_features(
        self, hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids, guidance=None
    ):
        """Image-token features after every double and single block: a list of `[B, S_img, inner]`."""
        hidden, context, temb, rope = self.embed(
            hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids, guidance
        )
        features = []
        self.run_blocks(hidden, context, temb, rope, features=features)
        return features

    def enable_gradient_checkpointing(self, enabled=True):
        """Recompute each block in the backward pass (Paddle recompute) instead of storing its activations."""
        self.gradient_checkpointing = enabled
        return self

    def fuse_projections(self):
        """One GEMM for each stream's q, k, v in double blocks and for q, k, v + MLP input in single blocks, used in
        eval mode (see `models/fused.py`); call again after changing weights in place outside LoRA fuse/unfuse."""
        fused.fuse_projections(self)
        return self

    def unfuse_projections(self):
        fused.unfuse_projections(self)
        return self

    @property
    def dtype(self):
        return self.x_embedder.weight.dtype

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_pretrained(cls, path, dtype="float32", subfolder=None):
        """Load a diffusers `transformer/` folder (config.json + safetensors, single or sharded, PyTorch layout)
        or this project's `save_pretrained` output. Tensors are streamed and cast one at a time."""
        if subfolder:
            path = os.path.join(path, subfolder)
        config_path = os.path.join(path, cls.config_name)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"no {cls.config_name} in transformer folder {path!r}")
        with open(config_path) as f:
            config = FluxConfig.from_dict(json.load(f))
        files = checkpoint.safetensors_files(path)
        return checkpoint.build_and_load(cls, config, files, dtype, key_map=None)

    @classmethod
    def from_single_file(cls, path, config=None, dtype="float32"):
        """Load a Black Forest Labs single file (`flux1-dev.safetensors` layout, with or without the
        `model.diffusion_model.` prefix). Without `config`, the config is inferred from the tensor shapes."""
        reader = checkpoint.SafetensorsFile(path)
        bfl_shapes = checkpoint.strip_prefix_shapes(reader.shapes())
        if config is None:
            config = checkpoint.infer_flux_config(bfl_shapes)
        elif isinstance(config, dict):
            config = FluxConfig.from_dict(config)
        key_map = checkpoint.bfl_to_diffusers_map(config, checkpoint.detect_prefix(reader.keys()))
        return checkpoint.build_and_load(cls, config, [path], dtype, key_map=key_map)

    def save_pretrained(self, path, max_shard_bytes=None):
        """Write config.json + diffusion_pytorch_model.safetensors in diffusers layout (PyTorch `[out, in]`
        weights), atomically; sharded with an index when `max_shard_bytes` is given. LoRA adapters are not part
        of the checkpoint: fuse them first to bake them in, or save them with `lora.save_lora_weights`."""
        unfused = [n for n, layer in self.named_sublayers() if getattr(layer, "lora_A", None) is not None
                   and getattr(layer, "fused_scale", None) is None]
        if unfused:
            raise ValueError(
                f"{len(unfused)} LoRA adapters (e.g. {unfused[0]!r}) are not fused: fuse_lora() to bake them into the "
                "weights, or unload_lora() and save them with save_lora_weights()"
            )
        checkpoint.save_diffusers_folder(self, path, self.config.to_dict(), max_shard_bytes=max_shard_bytes)


def _per_sample(value, batch):
    """A float, a 0-d or [1] tensor, or a [B] tensor -> float32 [B]."""
    if not isinstance(value, paddle.Tensor):
        value = paddle.to_tensor([float(value)], dtype="float32")
    value = value.astype("float32").reshape([-1])
    if value.shape[0] == 1 and batch != 1:
        value = value.expand([batch])
    return value

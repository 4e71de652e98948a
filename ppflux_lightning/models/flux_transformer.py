"""FLUX.1 transformer in Paddle, with diffusers' module names so that checkpoints and LoRA keys map one to one."""

import functools
import os

import paddle
import paddle.nn as nn

from . import checkpoint, fused
from .blocks import ContinuousAdaNorm, DoubleStreamBlock, SingleStreamBlock
from .embeddings import CombinedTimestepTextEmbedding, rope_frequencies
from .flux_config import FluxConfig
from .tokens import Tokens
from .torch_weights import build_in_dtype, check_dtype, plan_load, save_model_folder


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

    @property
    def num_blocks(self):
        return len(self.transformer_blocks) + len(self.single_transformer_blocks)

    def run_block(self, k, tokens, temb, rope, call=None):
        """Flat block k (double blocks first, then single blocks) on `tokens` (a `Tokens`). `call(block, *args)`
        evaluates the block; by default directly, or recomputed in backward under gradient checkpointing."""
        call = call or self._call
        n_double = len(self.transformer_blocks)
        if k < n_double:
            hidden, context = call(self.transformer_blocks[k], tokens.image, tokens.context, temb, rope)
            return Tokens.streams(context, hidden)
        return Tokens((call(self.single_transformer_blocks[k - n_double], tokens.joint, temb, rope),), tokens.n_txt)

    def _call(self, block, *args):
        if self.gradient_checkpointing and self.training:
            from paddle.distributed.fleet.utils import recompute

            return recompute(block, *args, use_reentrant=False)
        return block(*args)

    def run_block_range(self, tokens, temb, rope, start=0, stop=None, visit=None, call=None):
        """The block loop, written once for forward, the cache policies and the discriminator's teacher features:
        flat blocks start..stop-1 on `tokens`, joined into one sequence before the first single block. `visit(k,
        tokens, run)`, when given, stands in for block k's plain evaluation `run(tokens)` (to skip or record it)."""
        n_double = len(self.transformer_blocks)
        for k in range(start, self.num_blocks if stop is None else stop):
            if k >= n_double:
                tokens = tokens.joined()
            run = functools.partial(self.run_block, k, temb=temb, rope=rope, call=call)
            tokens = run(tokens) if visit is None else visit(k, tokens, run)
        return tokens

    def run_blocks(self, hidden, context, temb, rope, visit=None, call=None):
        """Every block on the embedded streams; returns the image tokens (see `run_block_range`)."""
        return self.run_block_range(Tokens.streams(context, hidden), temb, rope, visit=visit, call=call).image

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
        self, hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids, guidance=None,
        call=None,
    ):
        """Image-token features after every double and single block: a list of `[B, S_img, inner]`. `call` as in
        `run_block` (the discriminator's teacher recomputes blocks with its adapters off)."""
        hidden, context, temb, rope = self.embed(
            hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids, guidance
        )
        features = []

        def record(k, tokens, run):
            tokens = run(tokens)
            features.append(tokens.image)
            return tokens

        self.run_blocks(hidden, context, temb, rope, visit=record, call=call)
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
    def load_plan(cls, path, config=None, dtype="float32"):
        """What loading `path` does, decided from config.json and safetensors headers alone (no tensor data read):
        every parameter's source tensor, file, row slice and transpose, checked against the model built (lazily,
        without memory) from the resolved config. `plan.load()` executes it; `plan.format()` prints it."""
        dtype = check_dtype(dtype)
        ckpt = checkpoint.open_checkpoint(path, config)
        model = build_in_dtype(lambda: cls(ckpt.config), dtype, lazy=True)
        return plan_load(model, ckpt.files, ckpt.sources, what=f"FLUX transformer {ckpt.path!r}", notes=ckpt.notes())

    @classmethod
    def from_pretrained(cls, path, dtype="float32", subfolder=None):
        """Load a diffusers `transformer/` folder (config.json + safetensors, single or sharded, PyTorch layout)
        or this project's `save_pretrained` output. Tensors are streamed and cast one at a time."""
        if subfolder:
            path = os.path.join(path, subfolder)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no transformer folder {path!r}")
        return cls.load_plan(path, dtype=dtype).load()

    @classmethod
    def from_single_file(cls, path, config=None, dtype="float32"):
        """Load a Black Forest Labs single file (`flux1-dev.safetensors` layout, with or without the
        `model.diffusion_model.` prefix). Without `config`, the config is inferred from the tensor shapes."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no checkpoint file {path!r}")
        return cls.load_plan(path, config=config, dtype=dtype).load()

    def save_pretrained(self, path, max_shard_bytes=None):
        """Write config.json + diffusion_pytorch_model.safetensors in diffusers layout (PyTorch `[out, in]`
        weights), atomically; sharded with an index when `max_shard_bytes` is given. LoRA adapters are not part
        of the checkpoint: fuse them first to bake them in, or save them with `lora.save_lora_weights`."""
        unfused = [n for n, layer in self.named_sublayers()  # LoRA layers with an adapter not fused into `weight`
                   if len(getattr(layer, "fused_scales", ())) < len(getattr(layer, "adapters", ()))]
        if unfused:
            raise ValueError(
                f"{len(unfused)} LoRA adapters (e.g. {unfused[0]!r}) are not fused: fuse_lora() to bake them into the "
                "weights, or unload_lora() and save them with save_lora_weights()"
            )
        adapters = [k for k in self.state_dict() if k.endswith((".lora_A", ".lora_B"))]
        save_model_folder(self, path, self.config.to_dict(), checkpoint.WEIGHTS_NAME, skip=adapters,
                          max_shard_bytes=max_shard_bytes)


def _per_sample(value, batch):
    """A float, a 0-d or [1] tensor, or a [B] tensor -> float32 [B]."""
    if not isinstance(value, paddle.Tensor):
        value = paddle.to_tensor([float(value)], dtype="float32")
    value = value.astype("float32").reshape([-1])
    if value.shape[0] == 1 and batch != 1:
        value = value.expand([batch])
    return value

"""FLUX's double-stream (image | text) and single-stream transformer blocks with AdaLN modulation."""

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .attention import JointAttention
from .fused import FusedProjections
from .linear import Linear, linear


def layer_norm(x, eps=1e-6):
    """LayerNorm over the last axis without affine parameters."""
    return F.layer_norm(x, x.shape[-1:], epsilon=eps)


@paddle.jit.not_to_static
def by_batch(v, one, many):
    """`one()` when the per-sample vector `v` [B, N] has batch 1, else `many()`. Decided here in eager mode or for
    a static batch; in a graph traced with a dynamic batch, at run time by a `cond` op holding both."""
    batch = v.shape[0]
    if batch == 1:
        return one()
    if batch > 1 or paddle.in_dynamic_mode():
        return many()
    return paddle.static.nn.cond(paddle.shape(v)[0] == 1, one, many)


def _row(v):
    """[1, N] -> [N]: Paddle's CPU kernels broadcast that row-wise against [1, S, N]; the [B, 1, N] form takes their
    generic broadcast, several times slower (docs/models.md)."""
    return v.reshape([v.shape[-1]])


def modulate(x, shift, scale):
    """LN(x) * (1 + scale) + shift; at batch 1 row-wise broadcasts, and one affine LayerNorm (float32, no
    gradients: with gradients, Paddle 3.3's layer_norm gave wrong ones for a computed weight in the trainer's
    gradient-accumulation test)."""

    def one():
        if x.dtype == paddle.float32 and not paddle.is_grad_enabled():
            return F.layer_norm(x, x.shape[-1:], weight=1 + _row(scale), bias=_row(shift), epsilon=1e-6)
        return layer_norm(x) * (1 + _row(scale)) + _row(shift)

    return by_batch(shift, one, lambda: layer_norm(x) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1))


def gated(x, gate, y):
    """The gated residual x + gate * y."""
    return by_batch(gate, lambda: x + _row(gate) * y, lambda: x + gate.unsqueeze(1) * y)


class Modulation(nn.Layer):
    """`linear(silu(temb))` split into `n` chunks (AdaLayerNormZero: shift, scale, gate, ...)."""

    def __init__(self, dim, n):
        super().__init__()
        self.n = n
        self.linear = Linear(dim, n * dim)

    def forward(self, temb):
        return paddle.chunk(self.linear(F.silu(temb)), self.n, axis=-1)


class GELUProj(nn.Layer):
    def __init__(self, dim, hidden):
        super().__init__()
        self.proj = Linear(dim, hidden)

    def forward(self, x):
        return F.gelu(self.proj(x), approximate=True)


class FeedForward(nn.Layer):
    """`net.0.proj` (x4, tanh-GELU) -> `net.2`, the diffusers key layout (net.1 is a parameterless dropout)."""

    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.LayerList([GELUProj(dim, dim * mult), nn.Identity(), Linear(dim * mult, dim)])

    def forward(self, x):
        return self.net[2](self.net[0](x))


class DoubleStreamBlock(nn.Layer):
    """Separate weights for image and text tokens, joint attention over both (diffusers `FluxTransformerBlock`)."""

    def __init__(self, dim, heads, head_dim):
        super().__init__()
        self.norm1 = Modulation(dim, 6)
        self.norm1_context = Modulation(dim, 6)
        self.attn = JointAttention(dim, heads, head_dim, joint=True)
        self.ff = FeedForward(dim)
        self.ff_context = FeedForward(dim)

    def forward(self, hidden, context, temb, rope):
        shift, scale, gate, shift_mlp, scale_mlp, gate_mlp = self.norm1(temb)
        c_shift, c_scale, c_gate, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(temb)
        img_attn, txt_attn = self.attn(modulate(hidden, shift, scale), rope, modulate(context, c_shift, c_scale))
        hidden = gated(hidden, gate, img_attn)
        hidden = gated(hidden, gate_mlp, self.ff(modulate(hidden, shift_mlp, scale_mlp)))
        context = gated(context, c_gate, txt_attn)
        context = gated(context, c_gate_mlp, self.ff_context(modulate(context, c_shift_mlp, c_scale_mlp)))
        if context.dtype == paddle.float16:
            context = context.clip(-65504.0, 65504.0)
        return hidden, context


class SingleStreamBlock(FusedProjections, nn.Layer):
    """One weight set over cat([text, image]): parallel attention and MLP, fused output projection. In eval mode
    after `fuse_projections()`, q, k, v and the MLP input come from one GEMM (BFL's `linear1`)."""

    fused_groups = {"qkv_mlp": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}

    def __init__(self, dim, heads, head_dim, mlp_ratio=4):
        super().__init__()
        self.norm = Modulation(dim, 3)
        self.proj_mlp = Linear(dim, dim * mlp_ratio)
        self.attn = JointAttention(dim, heads, head_dim, pre_only=True)
        self.proj_out = Linear(heads * head_dim + dim * mlp_ratio, dim)

    def forward(self, x, temb, rope):
        shift, scale, gate = self.norm(temb)
        normed = modulate(x, shift, scale)
        fused = self.fused_weights("qkv_mlp")
        if fused is None:
            attn, mlp = self.attn(normed, rope), self.proj_mlp(normed)
        else:
            inner = self.attn.heads * self.attn.head_dim
            q, k, v, mlp = paddle.split(linear(normed, *fused), [inner, inner, inner, -1], axis=-1)
            attn = self.attn.attend(q, k, v, rope)
        mlp = F.gelu(mlp, approximate=True)
        out = gated(x, gate, self.proj_out(paddle.concat([attn, mlp], axis=-1)))
        if out.dtype == paddle.float16:
            out = out.clip(-65504.0, 65504.0)
        return out


class ContinuousAdaNorm(nn.Layer):
    """The output norm (diffusers `AdaLayerNormContinuous`): chunks in order scale, shift (BFL's are shift, scale)."""

    def __init__(self, dim):
        super().__init__()
        self.linear = Linear(dim, 2 * dim)

    def forward(self, x, temb):
        scale, shift = paddle.chunk(self.linear(F.silu(temb)), 2, axis=-1)
        return modulate(x, shift, scale)

"""Joint attention for FLUX: per-head RMSNorm on q/k, 3-axis RoPE, scaled dot-product attention."""

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .embeddings import apply_rope
from .fused import FusedProjections
from .linear import Linear, linear

# CPU attention works on blocks of query rows whose score tile [B, H, rows, S_k] takes about this many bytes, so the
# softmax runs on data that is still in cache (measured in docs/models.md: the full [B, H, S, S] matrix is 2-3x slower).
ATTENTION_BLOCK_BYTES = 4 << 20


class RMSNorm(nn.Layer):
    """RMS norm over the last axis, statistics in fp32, learned scale (diffusers `RMSNorm`, BFL `query_norm.scale`)."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = self.create_parameter([dim], default_initializer=nn.initializer.Constant(1.0))

    def forward(self, x):
        x32 = x if x.dtype == paddle.float32 else x.astype("float32")
        # paddle.square: about 10x faster than pow(2) on the CPU, forward and backward
        x32 = x32 * paddle.rsqrt(paddle.square(x32).mean(-1, keepdim=True) + self.eps)
        if x32.dtype != self.weight.dtype:
            x32 = x32.astype(self.weight.dtype)
        return x32 * self.weight


def attention(q, k, v, block_bytes=None):
    """q, k, v: [B, S, H, D] -> [B, S, H*D]. The fused kernel on a GPU; elsewhere softmax(q k^T / sqrt(D)) v over
    blocks of query rows (exact, the same result row by row as the full matrix); `block_bytes` defaults to
    ATTENTION_BLOCK_BYTES."""
    if paddle.device.get_device().startswith("gpu"):
        return F.scaled_dot_product_attention(q, k, v).reshape([0, 0, -1])
    qh = (q * q.shape[-1] ** -0.5).transpose([0, 2, 1, 3])
    kh, vh = k.transpose([0, 2, 1, 3]), v.transpose([0, 2, 1, 3])
    blocks = query_blocks(q, k, block_bytes)
    if len(blocks) == 1:
        out = paddle.matmul(F.softmax(paddle.matmul(qh, kh, transpose_y=True), axis=-1), vh)
    else:
        out = paddle.concat(
            [paddle.matmul(F.softmax(paddle.matmul(qh[:, :, a:b], kh, transpose_y=True), axis=-1), vh)
             for a, b in blocks],
            axis=2,
        )
    return out.transpose([0, 2, 1, 3]).reshape([0, 0, -1])


@paddle.jit.not_to_static
def query_blocks(q, k, block_bytes):
    """[(start, stop)] of the query-row blocks: one block when the sizes are not static (a traced graph with a
    dynamic sequence length) or the whole score matrix fits in `block_bytes`."""
    batch, s_q, heads, _ = q.shape
    s_k = k.shape[1]
    block_bytes = ATTENTION_BLOCK_BYTES if block_bytes is None else block_bytes
    if s_q <= 0 or s_k <= 0:
        return [(0, None)]
    rows = max(16, block_bytes // (4 * max(batch, 1) * heads * s_k))
    return [(a, min(a + rows, s_q)) for a in range(0, s_q, rows)]


class JointAttention(FusedProjections, nn.Layer):
    """Attention with q/k/v projections for the image stream and, when `context_dim` is set, the text stream.

    Double blocks attend over cat([text, image]) and project both outputs back (`to_out.0`, `to_add_out`);
    single blocks (`pre_only`) have no output projection: their output is mixed by the block's `proj_out`.
    In eval mode after `fuse_projections()`, each stream's q, k, v come from one GEMM (see `fused.py`).
    """

    def __init__(self, dim, heads, head_dim, joint=False, pre_only=False):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q, self.to_k, self.to_v = Linear(dim, inner), Linear(dim, inner), Linear(dim, inner)
        self.norm_q, self.norm_k = RMSNorm(head_dim), RMSNorm(head_dim)
        self.to_out = None if pre_only else nn.LayerList([Linear(inner, dim)])
        self.joint = joint
        # A single block fuses q, k, v with its MLP input projection instead (SingleStreamBlock.fused_groups).
        self.fused_groups = {} if pre_only else {"qkv": ("to_q", "to_k", "to_v")}
        if joint:
            self.add_q_proj, self.add_k_proj = Linear(dim, inner), Linear(dim, inner)
            self.add_v_proj = Linear(dim, inner)
            self.norm_added_q, self.norm_added_k = RMSNorm(head_dim), RMSNorm(head_dim)
            self.to_add_out = Linear(inner, dim)
            self.fused_groups["add_qkv"] = ("add_q_proj", "add_k_proj", "add_v_proj")

    def _heads(self, x):
        return x.reshape([0, 0, self.heads, self.head_dim])

    def _project(self, x, group, names):
        fused = self.fused_weights(group) if group in self.fused_groups else None
        if fused is not None:
            return [self._heads(t) for t in paddle.split(linear(x, *fused), 3, axis=-1)]
        return [self._heads(getattr(self, name)(x)) for name in names]

    def attend(self, q, k, v, rope):
        """Single-stream attention of already projected q, k, v ([B, S, inner] each); output projected if the
        layer has `to_out`."""
        q, k = self.norm_q(self._heads(q)), self.norm_k(self._heads(k))
        out = attention(apply_rope(q, rope), apply_rope(k, rope), self._heads(v))
        return out if self.to_out is None else self.to_out[0](out)

    def forward(self, x, rope, context=None):
        q, k, v = self._project(x, "qkv", ("to_q", "to_k", "to_v"))
        q, k = self.norm_q(q), self.norm_k(k)
        if context is not None:
            cq, ck, cv = self._project(context, "add_qkv", ("add_q_proj", "add_k_proj", "add_v_proj"))
            q = paddle.concat([self.norm_added_q(cq), q], 1)
            k = paddle.concat([self.norm_added_k(ck), k], 1)
            v = paddle.concat([cv, v], 1)
        out = attention(apply_rope(q, rope), apply_rope(k, rope), v)
        if context is None:
            return out if self.to_out is None else self.to_out[0](out)
        n_txt = context.shape[1]
        return self.to_out[0](out[:, n_txt:]), self.to_add_out(out[:, :n_txt])

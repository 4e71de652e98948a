"""Joint attention for FLUX: per-head RMSNorm on q/k, 3-axis RoPE, scaled dot-product attention."""

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .embeddings import apply_rope


class RMSNorm(nn.Layer):
    """RMS norm over the last axis, statistics in fp32, learned scale (diffusers `RMSNorm`, BFL `query_norm.scale`)."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = self.create_parameter([dim], default_initializer=nn.initializer.Constant(1.0))

    def forward(self, x):
        x32 = x.astype("float32")
        # paddle.square: about 10x faster than pow(2) on the CPU, forward and backward
        x32 = x32 * paddle.rsqrt(paddle.square(x32).mean(-1, keepdim=True) + self.eps)
        return x32.astype(self.weight.dtype) * self.weight


def scaled_dot_product_attention(q, k, v):
    """q, k, v: [B, S, H, D] -> [B, S, H*D]. Uses the fused kernel on GPU, plain matmuls elsewhere."""
    if paddle.device.get_device().startswith("gpu"):
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        scale = q.shape[-1] ** -0.5
        qh, kh, vh = (t.transpose([0, 2, 1, 3]) for t in (q, k, v))
        weights = F.softmax(paddle.matmul(qh * scale, kh, transpose_y=True), axis=-1)
        out = paddle.matmul(weights, vh).transpose([0, 2, 1, 3])
    return out.reshape([0, 0, -1])


class JointAttention(nn.Layer):
    """Attention with q/k/v projections for the image stream and, when `context_dim` is set, the text stream.

    Double blocks attend over cat([text, image]) and project both outputs back (`to_out.0`, `to_add_out`);
    single blocks (`pre_only`) have no output projection: their output is mixed by the block's `proj_out`.
    """

    def __init__(self, dim, heads, head_dim, joint=False, pre_only=False):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, inner), nn.Linear(dim, inner), nn.Linear(dim, inner)
        self.norm_q, self.norm_k = RMSNorm(head_dim), RMSNorm(head_dim)
        self.to_out = None if pre_only else nn.LayerList([nn.Linear(inner, dim)])
        self.joint = joint
        if joint:
            self.add_q_proj, self.add_k_proj = nn.Linear(dim, inner), nn.Linear(dim, inner)
            self.add_v_proj = nn.Linear(dim, inner)
            self.norm_added_q, self.norm_added_k = RMSNorm(head_dim), RMSNorm(head_dim)
            self.to_add_out = nn.Linear(inner, dim)

    def _heads(self, x):
        return x.reshape([0, 0, self.heads, self.head_dim])

    def forward(self, x, rope, context=None):
        q = self.norm_q(self._heads(self.to_q(x)))
        k = self.norm_k(self._heads(self.to_k(x)))
        v = self._heads(self.to_v(x))
        if context is not None:
            cq = self.norm_added_q(self._heads(self.add_q_proj(context)))
            ck = self.norm_added_k(self._heads(self.add_k_proj(context)))
            cv = self._heads(self.add_v_proj(context))
            q, k, v = paddle.concat([cq, q], 1), paddle.concat([ck, k], 1), paddle.concat([cv, v], 1)
        out = scaled_dot_product_attention(apply_rope(q, rope), apply_rope(k, rope), v)
        if context is None:
            return out if self.to_out is None else self.to_out[0](out)
        n_txt = context.shape[1]
        return self.to_out[0](out[:, n_txt:]), self.to_add_out(out[:, :n_txt])

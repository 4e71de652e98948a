"""Timestep, guidance and pooled-text embeddings, and FLUX's 3-axis rotary position embedding."""

import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .linear import Linear


def sinusoidal_embedding(t, dim=256, max_period=10000.0):
    """[B] -> [B, dim] as (cos | sin) halves (diffusers `Timesteps(flip_sin_to_cos=True, shift=0)`), in fp32."""
    half = dim // 2
    freqs = paddle.exp(-math.log(max_period) * paddle.arange(half, dtype="float32") / half)
    args = t.astype("float32").unsqueeze(-1) * freqs.unsqueeze(0)
    return paddle.concat([paddle.cos(args), paddle.sin(args)], axis=-1)


class MLPEmbedder(nn.Layer):
    """linear_1 -> SiLU -> linear_2 (diffusers `TimestepEmbedding` / `PixArtAlphaTextProjection`)."""

    def __init__(self, in_dim, dim):
        super().__init__()
        self.linear_1 = Linear(in_dim, dim)
        self.linear_2 = Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x.astype(self.linear_1.weight.dtype))))


class CombinedTimestepTextEmbedding(nn.Layer):
    """temb = MLP(sin(1000 t)) [+ MLP(sin(1000 g))] + MLP(pooled CLIP)."""

    def __init__(self, dim, pooled_projection_dim, guidance_embeds):
        super().__init__()
        self.timestep_embedder = MLPEmbedder(256, dim)
        self.guidance_embedder = MLPEmbedder(256, dim) if guidance_embeds else None
        self.text_embedder = MLPEmbedder(pooled_projection_dim, dim)

    def forward(self, timestep, pooled, guidance=None):
        temb = self.timestep_embedder(sinusoidal_embedding(timestep))
        if self.guidance_embedder is not None:
            temb = temb + self.guidance_embedder(sinusoidal_embedding(guidance))
        return temb + self.text_embedder(pooled)


class RopeTables(tuple):
    """`(cos, sin)`, each `[S, D]`, plus the derived tensors every attention layer of one forward pass needs: the
    tables expanded over the head axes and the pair-rotation constant. Built once per forward (the position ids are
    the same for every block) instead of once per block call; on the CPU, Paddle's broadcasting multiply is several
    times slower when the operand broadcasts over a middle axis ([S, 1, D] against [B, S, H, D]) than when it matches
    the trailing axes exactly, hence the expansion."""

    def __new__(cls, cos, sin):
        return super().__new__(cls, (cos, sin))

    def __init__(self, cos, sin):
        self._cache = {}

    def cached(self, key, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]


def rope_frequencies(ids, axes_dims, theta=10000.0):
    """ids [S, n_axes] -> `RopeTables` (cos, sin) each [S, sum(axes_dims)], pair-interleaved, angles in float64."""
    ids = ids.astype("float64")
    cos_parts, sin_parts = [], []
    for axis, dim in enumerate(axes_dims):
        inv_freq = 1.0 / (theta ** (paddle.arange(0, dim, 2, dtype="float64") / dim))
        angles = ids[:, axis : axis + 1] * inv_freq.unsqueeze(0)
        cos_parts.append(paddle.repeat_interleave(paddle.cos(angles), 2, axis=1))
        sin_parts.append(paddle.repeat_interleave(paddle.sin(angles), 2, axis=1))
    return RopeTables(
        paddle.concat(cos_parts, axis=-1).astype("float32"),
        paddle.concat(sin_parts, axis=-1).astype("float32"),
    )


def _pair_swap_matrix(dim):
    """[dim, dim] float32 R with x @ R = (-x1, x0, -x3, x2, ...)."""
    r = np.zeros((dim, dim), np.float32)
    even = np.arange(0, dim, 2)
    r[even + 1, even] = -1.0
    r[even, even + 1] = 1.0
    return paddle.to_tensor(r)


def _pair_sign(dim):
    """(-1, 1, -1, 1, ...) of length dim, float32."""
    return paddle.to_tensor(np.tile(np.array([-1.0, 1.0], np.float32), dim // 2))


def _constant(rope, name, dim, build):
    """A per-forward constant kept on `rope` when it is a `RopeTables` (a plain (cos, sin) tuple rebuilds it)."""
    if isinstance(rope, RopeTables):
        return rope.cached((name, dim), lambda: build(dim))
    return build(dim)


def rotate_pairs(x, use_matmul, rope=None):
    """(x0, x1) -> (-x1, x0) for every interleaved pair of the last axis of fp32 `x`.

    On the CPU one matmul with a fixed +-1 permutation matrix (exact: one nonzero per column) is several times
    faster than slicing and stacking the pairs. GPU fp32 matmuls may run in TF32, which would round `x`, so there the
    pairs are flipped and the sign applied separately.
    """
    dim = x.shape[-1]
    if use_matmul:
        return paddle.matmul(x, _constant(rope, "swap", dim, _pair_swap_matrix))
    keep = [0] * (x.ndim - 1)  # 0: copy the axis (works with dynamic axes in a traced graph)
    flipped = x.reshape(keep + [dim // 2, 2]).flip(-1).reshape(keep + [dim])
    return flipped * _constant(rope, "sign", dim, _pair_sign)


def _expanded(rope, middle):
    """cos, sin as [S, *middle, D] so that they match the trailing axes of [B, S, *middle, D] exactly."""

    def build():
        cos, sin = rope[0], rope[1]
        shape = [cos.shape[0]] + [1] * len(middle) + [cos.shape[1]]
        full = [cos.shape[0]] + list(middle) + [cos.shape[1]]
        return cos.reshape(shape).expand(full), sin.reshape(shape).expand(full)

    if isinstance(rope, RopeTables):
        return rope.cached(("expanded", tuple(middle)), build)
    return build()


def apply_rope(x, rope, use_matmul=None):
    """Rotate interleaved pairs (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin). x: [B, S, *heads, D] (any number of
    head axes), rope: (cos, sin) each [S, D].

    `use_matmul` picks the pair rotation of `rotate_pairs` (default: the matmul on the CPU only)."""
    cos, sin = _expanded(rope, x.shape[2:-1])
    x32 = x if x.dtype == paddle.float32 else x.astype("float32")
    if use_matmul is None:
        use_matmul = paddle.device.get_device() == "cpu"
    rotated = rotate_pairs(x32, use_matmul, rope)
    out = x32 * cos + rotated * sin
    return out if out.dtype == x.dtype else out.astype(x.dtype)

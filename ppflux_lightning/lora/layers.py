"""`LoRALinear`: a frozen Paddle `nn.Linear` plus a trainable low-rank update, `y = x W + b + s (x A) B`.

The base `weight` and `bias` are the wrapped layer's own Parameter objects, kept under the same attribute names, so
a model's state-dict keys for them do not change (`...to_q.weight`); the adapter adds `...to_q.lora_A` ([in, r])
and `...to_q.lora_B` ([r, out]) in Paddle layout. `s = scale * alpha / rank`.
"""

import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


class LoRALinear(nn.Layer):
    """Wraps `base` (an `nn.Linear`) with rank-`rank` adapters: A kaiming-uniform as in PEFT, B zero, so a new
    adapter changes nothing until trained. `enabled=False` or a fused state skip the low-rank branch."""

    def __init__(self, base, rank, alpha=None, dropout=0.0, dtype=None):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps a paddle.nn.Linear, got {type(base).__name__}")
        rank = int(rank)
        if rank <= 0:
            raise ValueError(f"LoRA rank must be a positive integer, got {rank}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        # The original layer is kept unregistered (no state-dict keys of its own) so `unload` can hand it back.
        object.__setattr__(self, "_base_layer", base)
        flags = [p.stop_gradient for p in (base.weight, base.bias) if p is not None]
        object.__setattr__(self, "_base_stop_gradient", flags)
        self.weight = base.weight
        self.bias = base.bias
        self.weight.stop_gradient = True
        if self.bias is not None:
            self.bias.stop_gradient = True
        self.in_features, self.out_features = self.weight.shape
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.scale = 1.0
        self.enabled = True
        self.fused_scale = None  # the scaling folded into `weight` by fuse(), None when unfused
        dtype = dtype or self.weight.dtype
        bound = 1.0 / math.sqrt(self.in_features)  # kaiming_uniform(a=sqrt(5)) on torch's [r, in] A, as in PEFT
        self.lora_A = self.create_parameter(
            [self.in_features, rank], dtype=dtype, default_initializer=nn.initializer.Uniform(-bound, bound)
        )
        self.lora_B = self.create_parameter(
            [rank, self.out_features], dtype=dtype, default_initializer=nn.initializer.Constant(0.0)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    @property
    def scaling(self):
        """The factor on `x A B`: user scale times alpha / rank."""
        return self.scale * self.alpha / self.rank

    @property
    def fused(self):
        return self.fused_scale is not None

    def forward(self, x):
        out = F.linear(x, self.weight, self.bias)
        if not self.enabled or self.fused or self.scale == 0.0:
            return out
        h = self.dropout(x) if self.dropout is not None else x
        h = h.astype(self.lora_A.dtype)
        delta = paddle.matmul(paddle.matmul(h, self.lora_A) * self.scaling, self.lora_B)  # scale the rank-r tensor
        return out + delta.astype(out.dtype)

    def delta_weight(self, scaling):
        """`scaling * A @ B` in float32, shaped like `weight` ([in, out])."""
        return paddle.matmul(self.lora_A.astype("float32"), self.lora_B.astype("float32")) * scaling

    @paddle.no_grad()
    def fuse(self, scale=1.0):
        """Fold the adapter into `weight` (`weight += scale * scaling * A B`); forward then skips the branch."""
        if self.fused:
            raise ValueError("this LoRA layer is already fused; call unfuse() first")
        scaling = float(scale) * self.scaling
        merged = self.weight.astype("float32") + self.delta_weight(scaling)
        self.weight.set_value(merged.astype(self.weight.dtype))
        self.fused_scale = scaling

    @paddle.no_grad()
    def unfuse(self):
        """Subtract exactly what `fuse` added (recomputed from A, B: no copy of the weight is kept)."""
        if not self.fused:
            return
        restored = self.weight.astype("float32") - self.delta_weight(self.fused_scale)
        self.weight.set_value(restored.astype(self.weight.dtype))
        self.fused_scale = None

    def unload(self):
        """The plain `nn.Linear` with this layer's (possibly fused) weight and bias, trainable as it was before."""
        base = self._base_layer
        if base.weight is not self.weight:
            base.weight = self.weight
        if base.bias is not self.bias:
            base.bias = self.bias
        for param, stop in zip([p for p in (self.weight, self.bias) if p is not None], self._base_stop_gradient):
            param.stop_gradient = stop
        return base

    def extra_repr(self):
        sizes = f"in={self.in_features}, out={self.out_features}, rank={self.rank}"
        return f"{sizes}, alpha={self.alpha}, scale={self.scale}, fused={self.fused}"

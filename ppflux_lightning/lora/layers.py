"""`LoRALinear`: a frozen Paddle `nn.Linear` plus named low-rank adapters, `y = x W + b + sum_i s_i (x A_i) B_i`.

The base `weight` and `bias` are the wrapped layer's own Parameter objects, kept under the same attribute names, so
a model's state-dict keys for them do not change (`...to_q.weight`). Each adapter is a `LoRAAdapter` under
`adapters.<name>`, adding `...to_q.adapters.<name>.lora_A` ([in, r]) and `.lora_B` ([r, out]) in Paddle layout.
`s_i = weight_i * alpha_i / rank_i`, as PEFT's `set_adapters` weights.
"""

import itertools
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

_SERIAL = itertools.count()  # creation order, so a model lists its adapters in load order


def check_adapter_name(name):
    """Adapter names become state-dict path parts: a non-empty string without dots."""
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"adapter names must be non-empty strings without '.', got {name!r}")
    return name


class LoRAAdapter(nn.Layer):
    """One adapter on one Linear: A kaiming-uniform as in PEFT, B zero (a new adapter changes nothing until
    trained), `alpha`, the user weight `scale`, and dropout on the adapter input."""

    def __init__(self, in_features, out_features, rank, alpha=None, dropout=0.0, dtype="float32"):
        super().__init__()
        rank = int(rank)
        if rank <= 0:
            raise ValueError(f"LoRA rank must be a positive integer, got {rank}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.serial = next(_SERIAL)
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.scale = 1.0
        bound = 1.0 / math.sqrt(in_features)  # kaiming_uniform(a=sqrt(5)) on torch's [r, in] A, as in PEFT
        self.lora_A = self.create_parameter(
            [in_features, rank], dtype=dtype, default_initializer=nn.initializer.Uniform(-bound, bound)
        )
        self.lora_B = self.create_parameter(
            [rank, out_features], dtype=dtype, default_initializer=nn.initializer.Constant(0.0)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    @property
    def scaling(self):
        """The factor on `x A B`: user weight times alpha / rank."""
        return self.scale * self.alpha / self.rank

    def delta(self, x):
        h = self.dropout(x) if self.dropout is not None else x
        h = h.astype(self.lora_A.dtype)
        return paddle.matmul(paddle.matmul(h, self.lora_A) * self.scaling, self.lora_B)  # scale the rank-r tensor

    def delta_weight(self, scaling):
        """`scaling * A @ B` in float32, shaped like the base weight ([in, out])."""
        return paddle.matmul(self.lora_A.astype("float32"), self.lora_B.astype("float32")) * scaling

    def extra_repr(self):
        return f"rank={self.rank}, alpha={self.alpha}, scale={self.scale}"


class LoRALinear(nn.Layer):
    """Wraps `base` (an `nn.Linear`) with named adapters. `active` lists the adapters forward adds (a model-wide
    list: names this layer lacks are skipped); `enabled=False` skips them all; fused adapters are in `weight`."""

    def __init__(self, base, rank=None, alpha=None, dropout=0.0, dtype=None, adapter_name="default"):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps a paddle.nn.Linear, got {type(base).__name__}")
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
        self.adapters = nn.LayerDict()
        self.active = []
        self.enabled = True
        self.fused_scales = {}  # adapter name -> the scaling folded into `weight` by fuse()
        if rank is not None:
            self.add_adapter(adapter_name, rank, alpha, dropout, dtype)
            self.active = [adapter_name]

    def add_adapter(self, name, rank, alpha=None, dropout=0.0, dtype=None):
        """A new adapter `name` (not activated: the model-level API sets `active`)."""
        check_adapter_name(name)
        if name in self.adapters:
            raise ValueError(f"adapter {name!r} already exists on this layer")
        adapter = LoRAAdapter(self.in_features, self.out_features, rank, alpha, dropout, dtype or self.weight.dtype)
        self.adapters[name] = adapter
        return adapter

    def remove_adapter(self, name):
        if name in self.fused_scales:
            raise ValueError(f"adapter {name!r} is fused into the base weights: call unfuse_lora first")
        self.adapters.pop(name)

    # Single-adapter conveniences (the training API and `FluxTransformer2DModel.save_pretrained`'s check).
    @property
    def lora_A(self):
        """The first adapter's A (the only one in single-adapter use)."""
        return next(iter(self.adapters.values())).lora_A if len(self.adapters) else None

    @property
    def lora_B(self):
        return next(iter(self.adapters.values())).lora_B if len(self.adapters) else None

    @property
    def fused(self):
        return bool(self.fused_scales)

    @property
    def fused_scale(self):
        """None while some adapter is not fused into `weight` (the adapters are then not baked in)."""
        if not self.fused_scales or len(self.fused_scales) < len(self.adapters):
            return None
        return dict(self.fused_scales)

    def running(self):
        """The adapters forward adds: active, present here, not fused, non-zero weight."""
        if not self.enabled:
            return []
        return [self.adapters[n] for n in self.active
                if n in self.adapters and n not in self.fused_scales and self.adapters[n].scale != 0.0]  # fmt: skip

    def forward(self, x):
        out = F.linear(x, self.weight, self.bias)
        running = self.running()
        if not running:
            return out
        delta = running[0].delta(x)
        for adapter in running[1:]:
            delta = delta + adapter.delta(x)
        return out + delta.astype(out.dtype)

    @paddle.no_grad()
    def fuse(self, names, scale=1.0):
        """Fold the named adapters present here into `weight` (`weight += scale * scaling * A B` each, in float32);
        forward then skips them. Returns how many were fused."""
        todo = [n for n in names if n in self.adapters and n not in self.fused_scales]
        if not todo:
            return 0
        merged = self.weight.astype("float32")
        for name in todo:
            scaling = float(scale) * self.adapters[name].scaling
            merged = merged + self.adapters[name].delta_weight(scaling)
            self.fused_scales[name] = scaling
        self.weight.set_value(merged.astype(self.weight.dtype))
        return len(todo)

    @paddle.no_grad()
    def unfuse(self):
        """Subtract exactly what `fuse` added (recomputed from A, B: no copy of the weight is kept)."""
        if not self.fused_scales:
            return
        restored = self.weight.astype("float32")
        for name, scaling in self.fused_scales.items():
            restored = restored - self.adapters[name].delta_weight(scaling)
        self.weight.set_value(restored.astype(self.weight.dtype))
        self.fused_scales = {}

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
        fused = sorted(self.fused_scales)
        return f"in={self.in_features}, out={self.out_features}, active={self.active}, fused={fused}"

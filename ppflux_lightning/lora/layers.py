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
_GENERATION = [0]  # bumped by every change of which adapters run and how; layers re-plan their forward on a change


def adapters_changed():
    """Invalidate every layer's forward plan (done by the API; call it after editing a frozen adapter's tensors in
    place by hand, since frozen adapters run from a cached concatenation)."""
    _GENERATION[0] += 1


def check_adapter_name(name):
    """Adapter names become state-dict path parts: a non-empty string without dots."""
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"adapter names must be non-empty strings without '.', got {name!r}")
    return name


class LoRAAdapter(nn.Layer):
    """One adapter on one Linear: A kaiming-uniform as in PEFT, B zero (a new adapter changes nothing until
    trained), `alpha`, the user weight `scale`, and dropout on the adapter input.

    Frozen adapters (A and B with stop_gradient, e.g. loaded files) run together from a per-layer cache of their
    concatenated A and weighted B: two matmuls per layer however many are stacked. Edits through this package
    refresh it; after changing a frozen adapter's tensors in place by hand, call `adapters_changed()`.
    """

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
    def scale(self):
        """The user weight (diffusers' `set_adapters` weight)."""
        return self._scale

    @scale.setter
    def scale(self, value):
        if float(value) != self.__dict__.get("_scale"):
            self._scale = float(value)
            adapters_changed()

    @property
    def scaling(self):
        """The factor on `x A B`: user weight times alpha / rank."""
        return self.scale * self.alpha / self.rank

    @property
    def frozen(self):
        """True when nothing trains this adapter and forward is deterministic: its product can be cached."""
        return self.lora_A.stop_gradient and self.lora_B.stop_gradient and (self.dropout is None or not self.training)

    def delta(self, x):
        """`scaling * (x A) B`; the casts and the product with 1.0 are skipped (each op counts at small widths)."""
        h = self.dropout(x) if self.dropout is not None else x
        h = h if h.dtype == self.lora_A.dtype else h.astype(self.lora_A.dtype)
        h = paddle.matmul(h, self.lora_A)
        scaling = self.scaling
        return paddle.matmul(h if scaling == 1.0 else h * scaling, self.lora_B)  # scale the rank-r tensor

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
        adapters_changed()
        return adapter

    def remove_adapter(self, name):
        if name in self.fused_scales:
            raise ValueError(f"adapter {name!r} is fused into the base weights: call unfuse_lora first")
        self.adapters.pop(name)
        adapters_changed()

    @property
    def active(self):
        """The adapters forward adds, in order (a model-wide list: names this layer lacks are skipped)."""
        return list(self._active)

    @active.setter
    def active(self, names):
        if tuple(names) != self.__dict__.get("_active"):
            self._active = tuple(names)
            adapters_changed()

    @property
    def enabled(self):
        return self._enabled

    @enabled.setter
    def enabled(self, value):
        if bool(value) != self.__dict__.get("_enabled"):
            self._enabled = bool(value)
            adapters_changed()

    # Single-adapter conveniences (the single-adapter training API).
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
        adapters = self.adapters
        return [adapters[n] for n in self._active
                if n in adapters and n not in self.fused_scales and adapters[n].scale != 0.0]  # fmt: skip

    def forward(self, x):
        out = F.linear(x, self.weight, self.bias)
        live, pair = self._plan()
        for adapter in live:
            delta = adapter.delta(x)
            out = out + (delta if delta.dtype == out.dtype else delta.astype(out.dtype))
        if pair is not None:  # every frozen adapter at once: x [A_1 | A_2 ...] [s_1 B_1; s_2 B_2 ...]
            a_cat, b_cat = pair
            h = x if x.dtype == a_cat.dtype else x.astype(a_cat.dtype)
            delta = paddle.matmul(paddle.matmul(h, a_cat), b_cat)
            out = out + (delta if delta.dtype == out.dtype else delta.astype(out.dtype))
        return out

    def _plan(self):
        """(adapters to run one by one, cached (A_cat, B_cat) of the frozen ones or None), rebuilt when the
        adapters change (generation), train/eval flips, or an adapter is frozen / unfrozen."""
        cached = self.__dict__.get("_plan_cache")
        if (cached is not None and cached[0] == _GENERATION[0] and cached[1] == self.training
                and tuple(p.stop_gradient for p in cached[2]) == cached[3]):  # fmt: skip
            return cached[4]
        running = self.running()
        params = [p for a in running for p in (a.lora_A, a.lora_B)]
        live = [a for a in running if not a.frozen]
        frozen = [a for a in running if a.frozen]
        pair = None
        if frozen:
            with paddle.no_grad():
                dtype = frozen[0].lora_A.dtype
                parts_a = [a.lora_A.astype(dtype) for a in frozen]
                parts_b = [a.lora_B.astype(dtype) * a.scaling for a in frozen]
                pair = (paddle.concat(parts_a, axis=1) if len(frozen) > 1 else parts_a[0],
                        paddle.concat(parts_b, axis=0) if len(frozen) > 1 else parts_b[0])  # fmt: skip
        plan = (live, pair)
        flags = tuple(p.stop_gradient for p in params)
        object.__setattr__(self, "_plan_cache", (_GENERATION[0], self.training, params, flags, plan))
        return plan

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
        adapters_changed()
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
        adapters_changed()

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

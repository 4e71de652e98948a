"""Fused projections for inference: `nn.Linear` layers that read the same input run as one GEMM, as in the Black
Forest Labs FLUX code (`qkv` per stream in double blocks, `linear1` = q|k|v|mlp in single blocks).

The separate layers stay the model's parameters, under the names checkpoints and LoRA files use; the fused weight
is a derived copy (it costs that much memory again). It is used only in eval mode and only while every layer of the
group computes a plain `x W + b` (no unfused LoRA adapter active). It is rebuilt when a layer is replaced, changes
dtype or has a LoRA adapter fused or unfused, and dropped by any training-mode forward (an optimizer changes the
weights in place): after other in-place weight changes call `fuse_projections` again.
"""

import paddle


def _resolve(layer, path):
    for name in path.split("."):
        layer = getattr(layer, name)
    return layer


def _is_plain(layer):
    """True when `layer(x) == x W + b` with its current weight: an `nn.Linear`, or a LoRA layer none of whose
    adapters runs unfused (each is fused into the weight, inactive, disabled or at weight 0)."""
    running = getattr(layer, "running", None)
    return running is None or not running()


def _fused_state(layer):
    """Which adapters (at which scaling) a LoRA layer has folded into its weight; () for a plain Linear."""
    return tuple(sorted(getattr(layer, "fused_scales", {}).items()))


def _signature(layers, tracing=False):
    """What the fused copy depends on. While tracing, parameters are graph values: only the layers are compared."""
    if tracing:
        return tuple((id(layer), _fused_state(layer)) for layer in layers)
    return tuple(
        (id(layer), _fused_state(layer), id(layer.weight), id(layer.bias), str(layer.weight.dtype))
        for layer in layers
    )


class FusedProjections:
    """Mixin for a layer with groups of Linear sublayers that share an input: `self.fused_groups` maps a group name
    to the sublayers' attribute paths (output order of the fused GEMM)."""

    fused_groups = {}

    def fuse_projections(self):
        """Use one GEMM per group in eval mode from now on; builds the fused weights now."""
        self._fusion_on = True
        self._drop_fused()
        with paddle.no_grad():
            for group in self.fused_groups:
                self._build(group)

    def unfuse_projections(self):
        """Back to the separate layers; frees the fused copies."""
        self._fusion_on = False
        self._drop_fused()

    def _build(self, group):
        layers = [_resolve(self, path) for path in self.fused_groups[group]]
        if not all(_is_plain(layer) for layer in layers):
            return None
        weight = paddle.concat([layer.weight for layer in layers], axis=1)
        biases = [layer.bias if layer.bias is not None else paddle.zeros([layer.weight.shape[1]], layer.weight.dtype)
                  for layer in layers]
        bias = None if all(layer.bias is None for layer in layers) else paddle.concat(biases)
        self._fusion[group] = (_signature(layers), weight, bias)
        # Registered as non-persistable buffers: not in state_dict(), but saved with a traced graph that uses them.
        for suffix, tensor in (("weight", weight), ("bias", bias)):
            if tensor is not None:
                self.register_buffer(f"fused_{group}_{suffix}", tensor, persistable=False)
        return weight, bias

    def _drop_fused(self):
        self._fusion = {}
        for group in self.fused_groups:
            for suffix in ("weight", "bias"):
                self._buffers.pop(f"fused_{group}_{suffix}", None)

    @paddle.jit.not_to_static
    def fused_weights(self, group):
        """(weight, bias) of the fused GEMM for `group`, or None when the separate layers must run."""
        if not getattr(self, "_fusion_on", False):
            return None
        if self.training:
            if self._fusion:
                self._drop_fused()  # the weights are about to change: never reuse a copy made before
            return None
        layers = [_resolve(self, path) for path in self.fused_groups[group]]
        if not all(_is_plain(layer) for layer in layers):
            return None
        cached = self._fusion.get(group)
        if not paddle.in_dynamic_mode():  # tracing: only a copy made beforehand (fuse_projections) can be used
            valid = cached is not None and tuple(sig[:2] for sig in cached[0]) == _signature(layers, tracing=True)
            return (cached[1], cached[2]) if valid else None
        if cached is not None and cached[0] == _signature(layers):
            return cached[1], cached[2]
        with paddle.no_grad():
            return self._build(group)


def fuse_projections(model):
    """`fuse_projections()` on every layer of `model` that has fusable groups; returns how many."""
    layers = [layer for layer in model.sublayers(include_self=True) if isinstance(layer, FusedProjections)]
    for layer in layers:
        layer.fuse_projections()
    return len(layers)


def unfuse_projections(model):
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, FusedProjections):
            layer.unfuse_projections()

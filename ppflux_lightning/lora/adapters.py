"""Adding, switching, fusing and removing LoRA adapters across a model (module names as in diffusers).

Target selection follows PEFT: a list of names matches a module whose name equals an entry or ends with
`"." + entry`; a single string is a regular expression that must match the whole module name.
"""

import contextlib
import re

import paddle
import paddle.nn as nn

from .layers import LoRALinear

# FLUX-Lightning's 12 target names (reference.md section 4), matched by suffix as PEFT does: 12 modules in every
# double-stream block and, through "attn.to_q/k/v", 3 in every single-stream block (342 on FLUX.1-dev).
LIGHTNING_TARGETS = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
)  # fmt: skip
DEFAULT_TARGETS = LIGHTNING_TARGETS
# The pre-reference default (double blocks only, 228 modules on FLUX.1-dev): set lora.target_modules to it to resume
# or reproduce runs made before the suffix matching.
DOUBLE_BLOCK_TARGETS = r"transformer_blocks\.\d+\.(" + "|".join(re.escape(t) for t in LIGHTNING_TARGETS) + ")"


def target_matcher(target_modules):
    """A predicate on module names from a regex string or a list of names / suffixes."""
    if target_modules is None:
        target_modules = DEFAULT_TARGETS
    if isinstance(target_modules, str):
        pattern = re.compile(target_modules)
        return lambda name: pattern.fullmatch(name) is not None
    targets = tuple(target_modules)
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"target_modules must be a regex string or a non-empty list of names, got {target_modules!r}")
    return lambda name: any(name == t or name.endswith("." + t) for t in targets)


def replace_sublayer(model, name, layer):
    """Put `layer` at dotted path `name` (works inside LayerLists: `attn.to_out.0`)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_sublayer(parent_name) if parent_name else model
    setattr(parent, child, layer)


def lora_layers(model):
    """`{module name: LoRALinear}` in model order."""
    return {name: layer for name, layer in model.named_sublayers() if isinstance(layer, LoRALinear)}


def add_lora(model, rank, alpha=None, target_modules=None, dropout=0.0, freeze_base=True, dtype=None):
    """Wrap every matching `nn.Linear` in `LoRALinear` in place and return the names wrapped.

    `freeze_base` stops gradients for all non-LoRA parameters (PEFT's behaviour). Modules that already carry a
    LoRA are left alone. A selection that matches no Linear is an error, never a silent no-op.
    """
    matches = target_matcher(target_modules)
    existing = lora_layers(model)
    names = [n for n, layer in model.named_sublayers() if isinstance(layer, nn.Linear) and matches(n)]
    if not names and not any(matches(n) for n in existing):
        raise ValueError(f"target_modules {target_modules!r} match no nn.Linear in {type(model).__name__}")
    for name in names:
        replace_sublayer(model, name, LoRALinear(model.get_sublayer(name), rank, alpha, dropout, dtype))
    if freeze_base:
        lora = {id(p) for p in lora_parameters(model)}
        for param in model.parameters():
            if id(param) not in lora:
                param.stop_gradient = True
    return names


def lora_parameters(model):
    """The trainable adapter parameters (A and B of every LoRA layer), for the optimizer."""
    return [p for layer in lora_layers(model).values() for p in (layer.lora_A, layer.lora_B)]


def set_lora_scale(model, scale):
    """Set the user scale of every adapter (the factor is `scale * alpha / rank`)."""
    layers = lora_layers(model)
    fused = [n for n, layer in layers.items() if layer.fused]
    if fused:
        raise ValueError(f"cannot change the scale of fused adapters ({fused[0]}, ...): call unfuse_lora first")
    for layer in layers.values():
        layer.scale = float(scale)


def set_lora_enabled(model, enabled):
    for layer in lora_layers(model).values():
        layer.enabled = bool(enabled)


@contextlib.contextmanager
def lora_disabled(model):
    """Run the base model (the distillation teacher): adapters are skipped, no weight is copied."""
    layers = lora_layers(model)
    fused = [n for n, layer in layers.items() if layer.fused]
    if fused:
        raise ValueError(f"adapters are fused into the base weights ({fused[0]}, ...): call unfuse_lora first")
    previous = {n: layer.enabled for n, layer in layers.items()}
    try:
        for layer in layers.values():
            layer.enabled = False
        yield model
    finally:
        for n, layer in layers.items():
            layer.enabled = previous[n]


def lora_state_dict(model):
    """`{"<module>.lora_A": [in, r], "<module>.lora_B": [r, out]}`: the adapter tensors (the same keys as in
    `model.state_dict()`), for training checkpoints."""
    out = {}
    for name, layer in lora_layers(model).items():
        out[name + ".lora_A"] = layer.lora_A
        out[name + ".lora_B"] = layer.lora_B
    return out


@paddle.no_grad()
def set_lora_state_dict(model, state_dict):
    """Load `lora_state_dict` output (tensors or numpy arrays). Keys and shapes must match exactly; nothing is
    changed when they do not."""
    params = lora_state_dict(model)
    missing = sorted(set(params) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"LoRA state dict does not match the model: missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    for key, param in params.items():
        if tuple(state_dict[key].shape) != tuple(param.shape):
            shape = list(state_dict[key].shape)
            raise ValueError(f"LoRA tensor {key!r} has shape {shape}, the model has {list(param.shape)}")
    for key, param in params.items():
        value = state_dict[key]
        value = value if isinstance(value, paddle.Tensor) else paddle.to_tensor(value)
        param.set_value(value.astype(param.dtype))


def fuse_lora(model, scale=1.0):
    """Fold every adapter into its base weight at `scale` times its current scaling; returns the number fused."""
    layers = [layer for layer in lora_layers(model).values() if not layer.fused]
    for layer in layers:
        layer.fuse(scale)
    return len(layers)


def unfuse_lora(model):
    """Undo `fuse_lora` (exact up to float32 round-off in float32 models)."""
    for layer in lora_layers(model).values():
        layer.unfuse()


def unload_lora(model, names=None):
    """Remove the adapters (all, or those in `names`), restoring plain `nn.Linear` layers. Fused weights stay
    fused, as in diffusers; unfuse first to get the base model back."""
    layers = lora_layers(model)
    for name in layers if names is None else names:
        replace_sublayer(model, name, layers[name].unload())

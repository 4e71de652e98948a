"""Adding, switching, fusing and removing named LoRA adapters across a model (module and method names as in
diffusers / PEFT): several adapters may sit on one model, with different targets and ranks, each with a weight.

Target selection follows PEFT: a list of names matches a module whose name equals an entry or ends with
`"." + entry`; a single string is a regular expression that must match the whole module name.
"""

import contextlib
import re

import paddle
import paddle.nn as nn

from .layers import LoRALinear, adapters_changed, check_adapter_name

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


# ---------------------------------------------------------------- names and activity
def adapter_names(model):
    """Every adapter on the model, in load order (diffusers' `get_list_adapters()["transformer"]`)."""
    first = {}
    for layer in lora_layers(model).values():
        for name, adapter in layer.adapters.items():
            first[name] = min(first.get(name, adapter.serial), adapter.serial)
    return sorted(first, key=first.get)


def active_adapters(model):
    """The adapters forward uses (when enabled), in the order given to `set_adapters`."""
    layers = lora_layers(model)
    return list(next(iter(layers.values())).active) if layers else []


def new_adapter_name(model):
    """diffusers' default name for the next adapter: `default_<count>`, skipping names in use."""
    names = set(adapter_names(model))
    index = len(names)
    while f"default_{index}" in names:
        index += 1
    return f"default_{index}"


def resolve_names(model, names):
    """A name or a list of names -> a list, each checked to be loaded."""
    names = [names] if isinstance(names, str) else list(names)
    loaded = adapter_names(model)
    missing = [n for n in names if n not in loaded]
    if missing:
        raise ValueError(f"adapter(s) {missing} not loaded; loaded adapters: {loaded}")
    return names


def _fused_names(model):
    return sorted({n for layer in lora_layers(model).values() for n in layer.fused_scales})


def _refuse_fused(model, action):
    fused = _fused_names(model)
    if fused:
        raise ValueError(f"cannot {action}: adapters {fused} are fused into the base weights; call unfuse_lora first")


def set_active(model, names):
    """Make `names` the active list of every LoRA layer (no checks: the public entry is `set_adapters`)."""
    for layer in lora_layers(model).values():
        layer.active = list(names)


def set_adapters(model, names, weights=None):
    """diffusers' `set_adapters`: make exactly `names` (a name or a list) active, with `weights` (None -> 1.0, a
    float for all, or one per name; None entries -> 1.0). Adapters not named stay loaded but inactive."""
    names = resolve_names(model, names)
    if len(set(names)) != len(names):
        raise ValueError(f"adapter names repeat: {names}")
    weights = list(weights) if isinstance(weights, (list, tuple)) else [weights] * len(names)
    if len(weights) != len(names):
        raise ValueError(f"{len(names)} adapter names but {len(weights)} weights")
    _refuse_fused(model, "change the active adapters")
    weights = dict(zip(names, (1.0 if w is None else float(w) for w in weights)))
    for layer in lora_layers(model).values():
        layer.active = list(names)
        for name, adapter in layer.adapters.items():
            if name in weights:
                adapter.scale = weights[name]


def set_lora_scale(model, scale, adapter_names=None):
    """Set the user weight of every adapter (or of `adapter_names`); the factor is `weight * alpha / rank`."""
    names = None if adapter_names is None else set(resolve_names(model, adapter_names))
    _refuse_fused(model, "change adapter weights")
    for layer in lora_layers(model).values():
        for name, adapter in layer.adapters.items():
            if names is None or name in names:
                adapter.scale = float(scale)


def set_lora_enabled(model, enabled):
    """diffusers' `enable_lora` / `disable_lora`: switch every adapter on or off without forgetting which are
    active."""
    if not enabled:
        _refuse_fused(model, "disable the adapters")
    for layer in lora_layers(model).values():
        layer.enabled = bool(enabled)


@contextlib.contextmanager
def lora_disabled(model, adapter_names=None):
    """Run without adapters (the distillation teacher): all of them, or only `adapter_names` (the teacher of a
    student trained on top of frozen extra adapters). No weight is copied."""
    layers = lora_layers(model)
    names = None if adapter_names is None else set(resolve_names(model, adapter_names))
    _refuse_fused(model, "switch adapters off")
    previous = {n: (layer.enabled, layer.active) for n, layer in layers.items()}
    try:
        for layer in layers.values():
            if names is None:
                layer.enabled = False
            else:
                layer.active = [a for a in layer.active if a not in names]
        yield model
    finally:
        for n, layer in layers.items():
            layer.enabled, layer.active = previous[n]


# ---------------------------------------------------------------- adding and removing
def add_lora(model, rank, alpha=None, target_modules=None, dropout=0.0, freeze_base=True, dtype=None,
             adapter_name="default"):  # fmt: skip
    """Add adapter `adapter_name` to every matching `nn.Linear` (wrapping it in `LoRALinear`) and return the
    module names. As in PEFT's `add_adapter`, the new adapter becomes the only active one.

    `freeze_base` stops gradients for every parameter except this adapter's (base weights and other adapters).
    A selection that matches no Linear is an error, never a silent no-op.
    """
    check_adapter_name(adapter_name)
    if adapter_name in adapter_names(model):
        raise ValueError(f"adapter {adapter_name!r} already exists: delete_adapters first or choose another name")
    matches = target_matcher(target_modules)
    names = [n for n, layer in model.named_sublayers() if isinstance(layer, (nn.Linear, LoRALinear)) and matches(n)]
    if not names:
        raise ValueError(f"target_modules {target_modules!r} match no nn.Linear in {type(model).__name__}")
    for name in names:
        wrapped_layer(model, name).add_adapter(adapter_name, rank, alpha, dropout, dtype)
    set_active(model, [adapter_name])
    if freeze_base:
        own = {id(p) for p in lora_parameters(model, [adapter_name])}
        for param in model.parameters():
            if id(param) not in own:
                param.stop_gradient = True
    return names


def wrapped_layer(model, name):
    """The `LoRALinear` at `name`, wrapping the plain Linear there first if needed."""
    layer = model.get_sublayer(name)
    if not isinstance(layer, LoRALinear):
        active = active_adapters(model)
        layer = LoRALinear(layer)
        layer.active = active
        replace_sublayer(model, name, layer)
    return layer


def delete_adapters(model, names):
    """diffusers' `delete_adapters`: remove the named adapters; a layer left with none becomes a plain Linear. When
    no active adapter is left, the first remaining one becomes active (as PEFT does)."""
    names = resolve_names(model, names)
    fused = [n for n in _fused_names(model) if n in names]
    if fused:
        raise ValueError(f"adapters {fused} are fused into the base weights: call unfuse_lora first")
    active = [n for n in active_adapters(model) if n not in names]
    for module, layer in lora_layers(model).items():
        for name in names:
            if name in layer.adapters:
                layer.remove_adapter(name)
        if not len(layer.adapters):
            replace_sublayer(model, module, layer.unload())
    remaining = adapter_names(model)
    set_active(model, active or remaining[:1])


def unload_lora(model, names=None):
    """Remove the adapters (all, or every adapter of the modules in `names`), restoring plain `nn.Linear` layers.
    Fused weights stay fused, as in diffusers; unfuse first to get the base model back."""
    layers = lora_layers(model)
    for name in layers if names is None else names:
        replace_sublayer(model, name, layers[name].unload())


# ---------------------------------------------------------------- parameters and state dicts
def lora_parameters(model, adapter_names=None):
    """The adapter parameters (A and B) of every adapter or of `adapter_names`, for the optimizer."""
    names = None if adapter_names is None else set(resolve_names(model, adapter_names))
    return [p for layer in lora_layers(model).values() for name, adapter in layer.adapters.items()
            if names is None or name in names for p in (adapter.lora_A, adapter.lora_B)]  # fmt: skip


def single_adapter(model, adapter_name=None):
    """`adapter_name`, or the model's only adapter when None (an error with several); None without adapters."""
    if adapter_name is not None:
        return resolve_names(model, adapter_name)[0]
    names = adapter_names(model)
    if len(names) > 1:
        raise ValueError(f"the model has several adapters {names}: name the one to use (adapter_name=...)")
    return names[0] if names else None


def adapter_layers(model, adapter_name):
    """`{module name: LoRAAdapter}` of one adapter, in model order."""
    layers = lora_layers(model).items()
    return {n: layer.adapters[adapter_name] for n, layer in layers if adapter_name in layer.adapters}


def lora_state_dict(model, adapter_name=None):
    """`{"<module>.lora_A": [in, r], "<module>.lora_B": [r, out]}`: one adapter's tensors (the model's only one by
    default), for training checkpoints."""
    name = single_adapter(model, adapter_name)
    out = {}
    for module, adapter in ({} if name is None else adapter_layers(model, name)).items():
        out[module + ".lora_A"] = adapter.lora_A
        out[module + ".lora_B"] = adapter.lora_B
    return out


@paddle.no_grad()
def set_lora_state_dict(model, state_dict, adapter_name=None):
    """Load `lora_state_dict` output (tensors or numpy arrays) into one adapter. Keys and shapes must match
    exactly; nothing is changed when they do not."""
    name = single_adapter(model, adapter_name)
    params = lora_state_dict(model, name)
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
    adapters_changed()  # frozen adapters' cached products are rebuilt


# ---------------------------------------------------------------- fusing
def weights_changed(model):
    """Tell the model its Linear weights changed (fuse / unfuse), for caches built from them (e.g. fused qkv)."""
    hook = getattr(model, "on_weights_changed", None)
    if callable(hook):
        hook()


def fuse_lora(model, scale=1.0, adapter_names=None):
    """Fold the active adapters (or `adapter_names`) into the base weights, each at `scale` times its scaling;
    returns the number of (layer, adapter) pairs fused. Unlike PEFT, adapter weights are left unchanged."""
    names = active_adapters(model) if adapter_names is None else resolve_names(model, adapter_names)
    count = sum(layer.fuse(names, scale) for layer in lora_layers(model).values())
    if count:
        weights_changed(model)
    return count


def unfuse_lora(model):
    """Undo `fuse_lora` for every adapter (exact up to float32 round-off in float32 models)."""
    layers = [layer for layer in lora_layers(model).values() if layer.fused]
    for layer in layers:
        layer.unfuse()
    if layers:
        weights_changed(model)

"""LoRA adapters for the FLUX transformer: several named, weighted adapters (training, enable / disable, delete,
fusing) and file interop with diffusers/PEFT, kohya/ComfyUI, XLabs and PaddleMIX."""

from .adapters import (
    DEFAULT_TARGETS,
    LIGHTNING_TARGETS,
    active_adapters,
    adapter_names,
    add_lora,
    delete_adapters,
    fuse_lora,
    lora_disabled,
    lora_layers,
    lora_parameters,
    lora_state_dict,
    set_adapters,
    set_lora_enabled,
    set_lora_scale,
    set_lora_state_dict,
    unfuse_lora,
    unload_lora,
)
from .formats import load_frozen_adapters, load_lora_weights, parse_lora, read_lora, save_lora_weights
from .layers import LoRAAdapter, LoRALinear, adapters_changed
from .pipeline_mixin import FluxLoraLoaderMixin

__all__ = [
    "DEFAULT_TARGETS",
    "LIGHTNING_TARGETS",
    "FluxLoraLoaderMixin",
    "LoRAAdapter",
    "LoRALinear",
    "active_adapters",
    "adapters_changed",
    "adapter_names",
    "add_lora",
    "delete_adapters",
    "fuse_lora",
    "load_frozen_adapters",
    "lora_disabled",
    "lora_layers",
    "lora_parameters",
    "load_lora_weights",
    "lora_state_dict",
    "parse_lora",
    "read_lora",
    "save_lora_weights",
    "set_adapters",
    "set_lora_enabled",
    "set_lora_scale",
    "set_lora_state_dict",
    "unfuse_lora",
    "unload_lora",
]

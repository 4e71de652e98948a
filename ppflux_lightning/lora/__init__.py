"""LoRA adapters for the FLUX transformer: training (add / enable / disable), fusing, and file interop with
diffusers/PEFT, kohya/ComfyUI and PaddleMIX."""

from .adapters import (
    DEFAULT_TARGETS,
    LIGHTNING_TARGETS,
    add_lora,
    fuse_lora,
    lora_disabled,
    lora_layers,
    lora_parameters,
    lora_state_dict,
    set_lora_enabled,
    set_lora_scale,
    set_lora_state_dict,
    unfuse_lora,
    unload_lora,
)
from .formats import load_lora_weights, parse_lora, read_lora, save_lora_weights
from .layers import LoRALinear
from .pipeline_mixin import FluxLoraLoaderMixin

__all__ = [
    "DEFAULT_TARGETS",
    "LIGHTNING_TARGETS",
    "FluxLoraLoaderMixin",
    "LoRALinear",
    "add_lora",
    "fuse_lora",
    "lora_disabled",
    "lora_layers",
    "lora_parameters",
    "load_lora_weights",
    "lora_state_dict",
    "parse_lora",
    "read_lora",
    "save_lora_weights",
    "set_lora_enabled",
    "set_lora_scale",
    "set_lora_state_dict",
    "unfuse_lora",
    "unload_lora",
]

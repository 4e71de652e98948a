"""LoRA methods shared by pipelines (load / fuse / unfuse / unload / save), delegating to ppflux_lightning.lora.

Mirrors diffusers' `FluxLoraLoaderMixin` on `self.transformer`, with one adapter at a time: loading a second
adapter under another name is refused rather than silently stacked or replaced.
"""

from . import adapters, formats


class FluxLoraLoaderMixin:
    """Mix into a pipeline that has `self.transformer` (a `FluxTransformer2DModel`)."""

    _lora_adapter_name = None

    def load_lora_weights(self, path_or_state_dict, adapter_name=None, scale=1.0, alpha=None):
        """Load a diffusers/PEFT, kohya/ComfyUI, PaddleMIX or ppflux LoRA into the transformer (format detected).
        `scale` multiplies the adapter (diffusers' `lora_scale`); `alpha` overrides the file's alpha."""
        name = adapter_name or "default_0"
        current = self._lora_adapter_name if adapters.lora_layers(self.transformer) else None
        if current is not None and current != name:
            raise ValueError(
                f"adapter {current!r} is already loaded and only one adapter is supported: call "
                f"unload_lora_weights() first, or pass adapter_name={current!r} to replace it"
            )
        modules = formats.load_lora_weights(self.transformer, path_or_state_dict, scale=scale, alpha=alpha)
        self._lora_adapter_name = name
        return modules

    def fuse_lora(self, lora_scale=1.0):
        """Fold the adapter into the transformer weights (faster steps); `lora_scale` multiplies its current scale."""
        if not adapters.lora_layers(self.transformer):
            raise ValueError("no LoRA is loaded: call load_lora_weights() first")
        adapters.fuse_lora(self.transformer, lora_scale)

    def unfuse_lora(self):
        adapters.unfuse_lora(self.transformer)

    def unload_lora_weights(self):
        """Remove the adapter. If it is fused, the fused weights stay (as in diffusers): unfuse first to undo it."""
        adapters.unload_lora(self.transformer)
        self._lora_adapter_name = None

    def set_lora_scale(self, scale):
        adapters.set_lora_scale(self.transformer, scale)

    def enable_lora(self):
        adapters.set_lora_enabled(self.transformer, True)

    def disable_lora(self):
        adapters.set_lora_enabled(self.transformer, False)

    def save_lora_weights(self, save_directory, format="diffusers"):
        """Write the adapter as `pytorch_lora_weights.safetensors` (diffusers) or `paddle_lora_weights.safetensors`
        (PaddleMIX) in `save_directory`; returns the file path."""
        return formats.save_lora_weights(self.transformer, save_directory, format=format)

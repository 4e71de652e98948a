"""LoRA methods shared by pipelines, with diffusers' `FluxLoraLoaderMixin` names and semantics on
`self.transformer`: several named adapters, weighted and combined with `set_adapters`, switched off and on, deleted,
fused together. Differences from diffusers 0.31 are listed in docs/lora.md."""

from ..utils.lora_specs import parse_lora_specs  # noqa: F401  (re-exported: the pipeline API's parser)
from . import adapters, formats


class FluxLoraLoaderMixin:
    """Mix into a pipeline that has `self.transformer` (a `FluxTransformer2DModel`)."""

    def load_lora_weights(self, path_or_state_dict, adapter_name=None, scale=1.0, alpha=None):
        """Load a diffusers/PEFT, kohya/ComfyUI, XLabs, PaddleMIX or ppflux LoRA (format detected) as adapter
        `adapter_name` (default `default_<n>`); it becomes the active adapter, as in diffusers: call `set_adapters`
        to combine it with others. `scale` is its weight; `alpha` overrides the file's alpha. Returns the modules."""
        return formats.load_lora_weights(self.transformer, path_or_state_dict, adapter_name, scale=scale, alpha=alpha)

    def load_lora_stack(self, specs, weight=1.0, alpha=None):
        """Load several LoRAs (`parse_lora_specs` input, e.g. `["lightning.safetensors:0.25", "style.safetensors:0.8"]`)
        as adapters `default_<n>` and activate them all at their weights. Every file is checked before the next
        loads; on an error the ones already loaded are removed again. Returns the specs with an "adapter" name each."""
        specs = parse_lora_specs(specs, weight, alpha)
        names = []
        try:
            for spec in specs:
                name = adapters.new_adapter_name(self.transformer)
                self.load_lora_weights(spec["file"], name, scale=spec["weight"], alpha=spec["alpha"])
                names.append(name)
        except Exception:
            if names:
                self.delete_adapters(names)
            raise
        if names:
            self.set_adapters(names, [spec["weight"] for spec in specs])
        return [dict(spec, adapter=name) for spec, name in zip(specs, names)]

    def set_adapters(self, adapter_names, adapter_weights=None):
        """Activate exactly `adapter_names` (a name or a list) with `adapter_weights` (None -> 1.0, one float, or
        a list); the others stay loaded but inactive."""
        adapters.set_adapters(self.transformer, adapter_names, adapter_weights)

    def get_active_adapters(self):
        return adapters.active_adapters(self.transformer)

    def get_list_adapters(self):
        """`{"transformer": [names in load order]}` (empty dict without adapters), as diffusers."""
        names = adapters.adapter_names(self.transformer)
        return {"transformer": names} if names else {}

    def disable_lora(self):
        adapters.set_lora_enabled(self.transformer, False)

    def enable_lora(self):
        adapters.set_lora_enabled(self.transformer, True)

    def delete_adapters(self, adapter_names):
        adapters.delete_adapters(self.transformer, adapter_names)

    def set_lora_scale(self, scale, adapter_names=None):
        """Set the weight of every adapter (or of `adapter_names`) without changing which are active."""
        adapters.set_lora_scale(self.transformer, scale, adapter_names)

    def fuse_lora(self, lora_scale=1.0, adapter_names=None):
        """Fold the active adapters (or `adapter_names`) into the transformer weights, each at `lora_scale` times
        its weight (faster steps); `unfuse_lora` undoes it."""
        if not adapters.lora_layers(self.transformer):
            raise ValueError("no LoRA is loaded: call load_lora_weights() first")
        adapters.fuse_lora(self.transformer, lora_scale, adapter_names)

    def unfuse_lora(self):
        adapters.unfuse_lora(self.transformer)

    def unload_lora_weights(self):
        """Remove every adapter. Fused weights stay fused (as in diffusers): unfuse first to undo them."""
        adapters.unload_lora(self.transformer)

    def save_lora_weights(self, save_directory, adapter_name=None, format="diffusers"):
        """Write one adapter (the only one unless named) as `pytorch_lora_weights.safetensors` (diffusers) or
        `paddle_lora_weights.safetensors` (PaddleMIX) in `save_directory`; returns the file path."""
        return formats.save_lora_weights(self.transformer, save_directory, format=format, adapter_name=adapter_name)

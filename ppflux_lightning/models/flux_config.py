"""`FluxConfig`: the diffusers `FluxTransformer2DModel` config keys (defaults are FLUX.1-dev)."""

import dataclasses

from ..utils.errors import ConfigError


def default_axes_dims(head_dim):
    """FLUX.1 uses (16, 56, 56) for head_dim 128; other widths keep the same 1/8 : 7/16 : 7/16 split."""
    first = head_dim // 8 + (head_dim // 8) % 2
    rest = (head_dim - first) // 2
    if rest % 2:
        first, rest = first + 2, rest - 1
    return (first, rest, rest)


@dataclasses.dataclass
class FluxConfig:
    """The diffusers `FluxTransformer2DModel` config keys. Defaults are FLUX.1-dev."""

    patch_size: int = 1
    in_channels: int = 64
    out_channels: int = None
    num_layers: int = 19
    num_single_layers: int = 38
    attention_head_dim: int = 128
    num_attention_heads: int = 24
    joint_attention_dim: int = 4096
    pooled_projection_dim: int = 768
    guidance_embeds: bool = True
    axes_dims_rope: tuple = (16, 56, 56)

    def __post_init__(self):
        self.axes_dims_rope = tuple(int(d) for d in self.axes_dims_rope)
        if self.out_channels is None:
            self.out_channels = self.in_channels
        if sum(self.axes_dims_rope) != self.attention_head_dim:
            raise ConfigError(
                f"axes_dims_rope {list(self.axes_dims_rope)} sums to {sum(self.axes_dims_rope)}, "
                f"but attention_head_dim is {self.attention_head_dim}"
            )
        if any(d % 2 for d in self.axes_dims_rope):
            raise ConfigError(f"axes_dims_rope {list(self.axes_dims_rope)} must hold even numbers")

    @property
    def inner_dim(self):
        return self.num_attention_heads * self.attention_head_dim

    @classmethod
    def check_keys(cls, d, where="FLUX transformer config"):
        """Unknown keys (other than diffusers' `_`-prefixed bookkeeping) are a ConfigError naming them."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if not k.startswith("_") and k not in fields)
        if unknown:
            raise ConfigError(f"unknown {where} keys {unknown}; valid keys: {sorted(fields)}")

    @classmethod
    def from_dict(cls, d):
        """Build from a config.json dict; keys starting with `_` (diffusers bookkeeping) are ignored."""
        cls.check_keys(d)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["axes_dims_rope"] = list(self.axes_dims_rope)
        return {"_class_name": "FluxTransformer2DModel", **d}

"""The `--lora FILE[:WEIGHT]` syntax of the CLIs and configs; no Paddle import, so tools check it before loading."""

from .errors import ConfigError


def parse_lora_specs(values, weight=1.0, alpha=None):
    """The CLIs' repeatable `--lora FILE[:WEIGHT]` (a string, a list of strings, or `{"file", "weight", "alpha"}`
    dicts) -> `[{"file", "weight", "alpha"}]`; `weight` and `alpha` fill what an entry leaves out."""
    if not values:
        return []
    specs = []
    for value in [values] if isinstance(values, (str, dict)) else values:
        if isinstance(value, dict):
            spec = {"file": value.get("file"), "weight": value.get("weight", weight),
                    "alpha": value.get("alpha", alpha)}  # fmt: skip
        else:
            path, sep, tail = str(value).rpartition(":")
            try:
                spec = {"file": path, "weight": float(tail), "alpha": alpha} if sep else None
            except ValueError:
                spec = None
            spec = spec or {"file": str(value), "weight": weight, "alpha": alpha}
        if not spec["file"]:
            raise ConfigError(f"--lora expects FILE or FILE:WEIGHT, got {value!r}")
        spec["weight"] = float(spec["weight"])
        specs.append(spec)
    return specs

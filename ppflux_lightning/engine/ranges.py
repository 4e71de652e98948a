"""Range checks of a training config, run before anything loads: every number finite, counts and rates in range.

`config.validate` checks keys and types against `engine.schema.DEFAULTS`; this checks values. Any numeric value
anywhere in the config must be finite (NaN and inf are never a setting); the keys below also have bounds.
"""

import math

from ..utils.errors import ConfigError

SEED_LIMIT = 2**32
# key -> (lowest allowed, highest allowed, lowest excluded?)
BOUNDS = {
    "model.guidance": (0, None, False),
    "model.max_sequence_length": (1, 512, False),
    "lora.rank": (1, None, False),
    "lora.alpha": (0, None, True),
    "train.max_steps": (1, None, False),
    "train.batch_size": (1, None, False),
    "train.grad_accum_steps": (1, None, False),
    "train.seed": (0, SEED_LIMIT - 1, False),
    "train.lr": (0, None, True),
    "train.weight_decay": (0, None, False),
    "train.eps": (0, None, True),
    "train.max_grad_norm": (0, None, False),
    "train.warmup_steps": (0, None, False),
    "train.min_lr_ratio": (0, 1, False),
    "train.checkpoint_every": (0, None, False),
    "train.keep_last": (0, None, False),
    "train.log_every": (1, None, False),
    "train.validate_every": (0, None, False),
    "train.validation_size": (0, None, False),
    "train.num_workers": (0, None, False),
    "data.resolution": (16, None, False),
}
# Under objectives.*: these names are weights, rates or scales, never negative.
NON_NEGATIVE = ("weight", "lr", "weight_decay", "huber_c", "head_channels", "num_timesteps", "num_phases",
                "teacher_steps")


def _numbers(node, prefix=""):
    """(dotted key, value) of every int/float (also inside lists) in a nested config."""
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _numbers(value, name + ".")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    yield f"{name}[{i}]", v
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name, value


def check_ranges(cfg):
    """Raise ConfigError naming the first key whose value is non-finite or out of range."""
    for name, value in _numbers(cfg):
        if not math.isfinite(value):
            raise ConfigError(f"config key {name!r} must be a finite number, got {value!r}")
        low, high, open_low = BOUNDS.get(name, (None, None, False))
        if name.startswith("objectives.") and name.rsplit(".", 1)[-1] in NON_NEGATIVE:
            low = 0 if low is None else low
        if low is not None and (value <= low if open_low else value < low):
            raise ConfigError(f"config key {name!r} must be {'>' if open_low else '>='} {low}, got {value!r}")
        if high is not None and value > high:
            raise ConfigError(f"config key {name!r} must be <= {high}, got {value!r}")
    for name in ("train.betas", "objectives.adversarial.betas"):
        section, _, key = name.rpartition(".")
        node = cfg
        for part in section.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        betas = node.get(key) if isinstance(node, dict) else None
        if betas is not None and (len(betas) != 2 or not all(0 <= b < 1 for b in betas)):
            raise ConfigError(f"config key {name!r} must be two numbers in [0, 1), got {betas!r}")
    resolution = cfg.get("data", {}).get("resolution")
    if isinstance(resolution, int) and resolution % 16:
        raise ConfigError(f"config key 'data.resolution' must be a multiple of 16, got {resolution!r}")

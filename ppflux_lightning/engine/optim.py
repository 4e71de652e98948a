"""AdamW groups, global-norm gradient clipping and learning-rate schedules (constant, warmup, cosine)."""

import math

import paddle

from ..utils.errors import ConfigError

SCHEDULES = ("constant", "warmup", "cosine")


def lr_factor(step, schedule, warmup_steps=0, max_steps=1, min_ratio=0.0):
    """Multiplier of the base lr at `step` (0-based): linear warmup over `warmup_steps` for every schedule, then
    constant, or a cosine from 1 down to `min_ratio` at `max_steps` (warmup = constant after the ramp)."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"train.lr_schedule must be one of {SCHEDULES}, got {schedule!r}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule != "cosine":
        return 1.0
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def adamw(parameters, lr, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8):
    """Paddle AdamW with decoupled weight decay; the lr is set every step by the trainer. Low-precision (bf16/fp16)
    parameters get fp32 master weights and moments (`multi_precision`, the reference's O2 optimizer)."""
    parameters = list(parameters)
    if not parameters:
        raise ValueError("the optimizer got no trainable parameters")
    low = any(p.dtype in (paddle.bfloat16, paddle.float16) for p in parameters)
    return paddle.optimizer.AdamW(learning_rate=float(lr), beta1=float(betas[0]), beta2=float(betas[1]),
                                  epsilon=float(eps), parameters=parameters, weight_decay=float(weight_decay),
                                  multi_precision=low)


def global_grad_norm(parameters):
    """sqrt(sum of squared gradients) as a float32 0-d tensor (no host sync)."""
    squares = [(p.grad.astype("float32") ** 2).sum() for p in parameters if p.grad is not None]
    if not squares:
        return paddle.zeros([], dtype="float32")
    return paddle.sqrt(paddle.add_n(squares))


def clip_grad_norm(parameters, max_norm):
    """Scale gradients in place so their global norm is at most `max_norm` (0 disables); returns the norm before
    clipping. The scale is computed on the device: min(1, max_norm / (norm + 1e-6))."""
    norm = global_grad_norm(parameters)
    if max_norm and max_norm > 0:
        scale = paddle.clip(max_norm / (norm + 1e-6), max=1.0)
        for p in parameters:
            if p.grad is not None:
                p.grad.set_value(p.grad * scale.astype(p.grad.dtype))
    return norm

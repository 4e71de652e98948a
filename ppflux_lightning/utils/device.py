"""The compute dtype for a device: `auto` is bfloat16 on a GPU with native bf16 (compute capability >= 8), else
float32 (Paddle's CPU build has no half-precision matmul kernels)."""

from .errors import ConfigError

DTYPES = ("auto", "float32", "bfloat16", "float16")


def gpu_supports_bf16():
    import paddle

    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0 and \
        paddle.device.cuda.get_device_capability()[0] >= 8


def has_gpu():
    import paddle

    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def resolve_dtype(name, option="model.dtype", allowed=DTYPES):
    """`name` (auto | float32 | bfloat16 | float16) -> the dtype to run in; a half dtype without a GPU is refused."""
    if name not in allowed:
        raise ConfigError(f"{option} must be one of {', '.join(allowed)}, got {name!r}")
    if name == "auto":
        return "bfloat16" if gpu_supports_bf16() else "float32"
    if name == "bfloat16" and not gpu_supports_bf16():
        raise ConfigError(f"{option}=bfloat16 needs a GPU with compute capability >= 8; use float32 (or auto) on CPU")
    if name == "float16" and not has_gpu():
        raise ConfigError(f"{option}=float16 needs a GPU; use float32 (or auto) on CPU")
    return name

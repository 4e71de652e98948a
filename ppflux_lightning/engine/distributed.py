"""Data parallelism on top of `paddle.distributed.launch`: rank helpers and one fused gradient all-reduce."""

import os

import paddle
import paddle.distributed as dist


def world_size():
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def rank():
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


def is_main():
    return rank() == 0


def init():
    """Initialise the process group when launched with more than one process; returns (rank, world_size)."""
    if world_size() > 1 and not dist.is_initialized():
        dist.init_parallel_env()
    return rank(), world_size()


def batch_share(global_batch, what="batch_size"):
    """This process's slice of a global batch that every process draws identically (same seed), for averaging the
    gradients afterwards; `what` names the setting in the error when the batch does not split evenly."""
    r, n = rank(), world_size()
    if global_batch % n:
        raise ValueError(f"{what} {global_batch} must divide evenly over {n} processes")
    size = global_batch // n
    return slice(r * size, (r + 1) * size)


def barrier():
    if world_size() > 1:
        dist.barrier()


def all_reduce_mean(parameters, extra):
    """Average the gradients of `parameters` and the float32 scalar `extra` (the loss) over processes, with one
    all-reduce of a flat buffer. Returns the averaged `extra`. A no-op for one process."""
    n = world_size()
    if n == 1:
        return extra
    params = [p for p in parameters if p.grad is not None]
    flat = paddle.concat([p.grad.astype("float32").reshape([-1]) for p in params] + [extra.reshape([1])])
    dist.all_reduce(flat)
    flat = flat / n
    offset = 0
    for p in params:
        size = int(p.grad.numel())
        p.grad.set_value(flat[offset : offset + size].reshape(p.grad.shape).astype(p.grad.dtype))
        offset += size
    return flat[offset]

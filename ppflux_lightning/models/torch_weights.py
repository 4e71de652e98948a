"""Move weights between PyTorch-layout safetensors folders (HF transformers / diffusers) and paddle Layers.

Only `nn.Linear` weights differ in layout (Paddle `[in, out]`, PyTorch `[out, in]`); which parameters those are is
read from the layer types, not guessed from shapes (embeddings are 2-D too). Tensors stream one at a time.
"""

import json
import os

import numpy as np
import paddle
import paddle.nn as nn

from ..utils.errors import CheckpointError, ConfigError, abbreviate
from ..utils.safetensors_io import SafetensorsFile, save_file

DTYPES = ("float32", "bfloat16", "float16")


def check_dtype(dtype):
    """A dtype name from `paddle.float32`-style objects or strings; unknown ones are a one-line ConfigError."""
    name = str(dtype).replace("paddle.", "")
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {list(DTYPES)}")
    return name


def linear_weight_names(model):
    """State-dict keys of every nn.Linear weight in `model`."""
    return {f"{name}.weight" if name else "weight" for name, layer in model.named_sublayers(include_self=True)
            if isinstance(layer, nn.Linear)}


def build_in_dtype(factory, dtype, lazy=False):
    """Call `factory()` with parameters created in `dtype`; `lazy` skips the random init of weights that are
    about to be loaded anyway."""
    dtype = check_dtype(dtype)
    previous = paddle.get_default_dtype()
    paddle.set_default_dtype(dtype)
    try:
        if not lazy:
            return factory()
        with paddle.LazyGuard():
            return factory()
    finally:
        paddle.set_default_dtype(previous)


def weight_files(folder, weights_name):
    """`weights_name` or the shards its `.index.json` names, in `folder`."""
    index = os.path.join(folder, weights_name + ".index.json")
    if os.path.isfile(index):
        with open(index) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
        if missing:
            raise CheckpointError(f"shards {missing} named by {os.path.basename(index)} are missing from {folder!r}")
        return [os.path.join(folder, n) for n in names]
    single = os.path.join(folder, weights_name)
    if os.path.isfile(single):
        return [single]
    raise FileNotFoundError(f"no {weights_name} (or its .index.json) in {folder!r}")


def load_torch_layout(model, files, sources, ignore=(), what="model"):
    """Fill `model` from PyTorch-layout safetensors `files`. `sources[key]` lists the file keys that may hold the
    model parameter `key` (the first present wins: tied weights have several). File keys ending with one of
    `ignore` are allowed to be left over. Strict: missing or unexpected keys raise a CheckpointError."""
    readers = [SafetensorsFile(f) for f in files]
    where = {k: r for r in readers for k in r.keys()}  # noqa: SIM118 (a reader, not a dict)
    params = model.state_dict()
    linear = linear_weight_names(model)
    chosen, missing = {}, []
    for key in params:
        found = [src for src in sources.get(key, [key]) if src in where]
        if found:
            chosen[key] = found[0]
        else:
            missing.append(sources.get(key, [key])[0])
    known = {src for key in params for src in sources.get(key, [key])}
    unexpected = sorted(k for k in where if k not in known and not k.endswith(tuple(ignore)))
    if missing or unexpected:
        raise CheckpointError(
            f"{what} weights do not match: missing keys {abbreviate(sorted(missing))}, "
            f"unexpected keys {abbreviate(unexpected)}"
        )
    for key, param in params.items():
        array = where[chosen[key]].get(chosen[key])
        if key in linear:
            array = array.T
        if tuple(array.shape) != tuple(param.shape):
            raise CheckpointError(
                f"{what} tensor {chosen[key]!r} has shape {list(array.shape)} (Paddle layout), expected "
                f"{list(param.shape)}"
            )
        param.set_value(paddle.to_tensor(np.ascontiguousarray(array, dtype=np.float32)).astype(param.dtype))
    model.eval()
    return model


def torch_layout_arrays(model, rename=lambda k: k, skip=()):
    """(tensors, bf16 keys): the model's parameters as float32 numpy in PyTorch layout under `rename(key)`."""
    linear = linear_weight_names(model)
    tensors, bf16 = {}, set()
    for key, param in model.state_dict().items():
        if key in skip:
            continue
        array = param.astype("float32").numpy()
        name = rename(key)
        tensors[name] = np.ascontiguousarray(array.T) if key in linear else array
        if param.dtype == paddle.bfloat16:
            bf16.add(name)
    return tensors, bf16


def save_torch_layout(tensors, folder, weights_name, bf16=(), max_shard_bytes=None):
    """Write `tensors` into `folder` as `weights_name`, or as HF-style shards plus `<weights_name>.index.json`."""
    bf16 = set(bf16)
    if not max_shard_bytes:
        save_file(tensors, os.path.join(folder, weights_name), metadata={"format": "pt"}, bf16_keys=bf16)
        return
    shards, current, size = [], {}, 0
    for key in sorted(tensors):
        nbytes = tensors[key].size * (2 if key in bf16 else tensors[key].itemsize)
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[key] = tensors[key]
        size += nbytes
    shards.append(current)
    stem = weights_name[: -len(".safetensors")]
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(folder, name), metadata={"format": "pt"}, bf16_keys=bf16 & set(shard))
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.size * (2 if k in bf16 else t.itemsize) for k, t in tensors.items())
    with open(os.path.join(folder, weights_name + ".index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)

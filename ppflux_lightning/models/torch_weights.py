"""PyTorch-layout safetensors weights <-> Paddle layers: the one module every loader and saver uses (the FLUX
transformer, the VAE, the text encoders).

The layout rule, stated once: the weight of an `nn.Linear` (or of an adapter wrapping one) is `[in, out]` in Paddle
and `[out, in]` in PyTorch files, so it is transposed on the way in and out; nothing else is (conv kernels, norm
weights and embeddings keep their layout). Which parameters are Linear weights is read from the layer types, never
guessed from shapes: embeddings are 2-D too.

A load is planned before it runs: `plan_load` maps every parameter to its source tensor (file, key, row slice,
transpose) and checks names and shapes from the safetensors headers alone; `LoadPlan.load()` then streams the
tensors one at a time. The dry run and the load are the same code.
"""

import dataclasses
import json
import os

import numpy as np
import paddle
import paddle.nn as nn

from ..utils.atomic import atomic_dir
from ..utils.errors import CheckpointError, ConfigError, abbreviate
from ..utils.safetensors_io import SafetensorsFile, save_file

DTYPES = ("float32", "bfloat16", "float16")
BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def check_dtype(dtype):
    """A dtype name from `paddle.float32`-style objects or strings; unknown ones are a one-line ConfigError."""
    name = str(dtype).replace("paddle.", "")
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {list(DTYPES)}")
    return name


def build_in_dtype(factory, dtype, lazy=False):
    """Call `factory()` with parameters created in `dtype`; `lazy` skips the random init (and the memory) of weights
    that are about to be loaded anyway: a lazily built FLUX.1-dev costs nothing until its tensors are filled."""
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


# ---------------------------------------------------------------- the layout rule
def is_linear(layer):
    """`nn.Linear`, or an adapter that wraps one and computes with its weight (LoRA's `LoRALinear` keeps the wrapped
    layer as `_base_layer`; it is matched by that, so this module does not import the LoRA package)."""
    return isinstance(layer, nn.Linear) or isinstance(getattr(layer, "_base_layer", None), nn.Linear)


def linear_weight_names(model):
    """State-dict keys of every Linear weight in `model`: the parameters stored transposed in PyTorch files."""
    return {f"{name}.weight" if name else "weight" for name, layer in model.named_sublayers(include_self=True)
            if is_linear(layer)}


def owner_types(model):
    """State-dict key -> type name of the layer that owns it (for load plans)."""
    owners = {}
    for name, layer in model.named_sublayers(include_self=True):
        own = [*layer.named_parameters(include_sublayers=False), *layer.named_buffers(include_sublayers=False)]
        for pname, _ in own:
            owners[f"{name}.{pname}" if name else pname] = type(layer).__name__
    return owners


# ---------------------------------------------------------------- row transforms of fused PyTorch tensors
@dataclasses.dataclass(frozen=True)
class Rows:
    """Rows start:stop of a fused PyTorch-layout tensor (one of q | k | v | mlp), taken before the transpose."""

    start: int
    stop: int

    def __call__(self, array):
        return array[self.start : self.stop]

    def shape(self, shape):
        if not shape or shape[0] < self.stop:
            raise CheckpointError(f"cannot take rows {self} of a tensor shaped {list(shape)}")
        return (self.stop - self.start, *shape[1:])

    def __str__(self):
        return f"rows {self.start}:{self.stop}"


@dataclasses.dataclass(frozen=True)
class SwapHalves:
    """The two halves of the rows exchanged: BFL's final modulation (shift, scale) <-> diffusers' (scale, shift)."""

    def __call__(self, array):
        half = array.shape[0] // 2
        return np.concatenate([array[half:], array[:half]], axis=0)

    def shape(self, shape):
        return tuple(shape)

    def __str__(self):
        return "swap halves"


# ---------------------------------------------------------------- files
def weight_files(folder, weights_name):
    """The safetensors files of a model folder: the shards named by `<weights_name>.index.json`, the single
    `weights_name`, or else the one `*.safetensors.index.json` / all `*.safetensors` present. A shard index is
    checked against the shards' headers (every key where the index says, nothing more)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no model folder {folder!r}")
    index = os.path.join(folder, weights_name + ".index.json")
    if not os.path.isfile(index):
        if os.path.isfile(os.path.join(folder, weights_name)):
            return [os.path.join(folder, weights_name)]
        others = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors.index.json"))
        if len(others) > 1:
            raise CheckpointError(f"several shard indexes in {folder!r}: {others}")
        if not others:
            files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
            if not files:
                raise FileNotFoundError(f"no {weights_name} (or its .index.json, or any *.safetensors) in {folder!r}")
            return [os.path.join(folder, f) for f in files]
        index = os.path.join(folder, others[0])
    with open(index) as f:
        weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index!r} has no weight_map")
    names = sorted(set(weight_map.values()))
    missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise CheckpointError(f"shards {missing} named by {os.path.basename(index)} are missing from {folder!r}")
    for name in names:
        listed = {k for k, shard in weight_map.items() if shard == name}
        held = set(SafetensorsFile(os.path.join(folder, name)).keys())
        if listed != held:
            raise CheckpointError(
                f"{os.path.basename(index)} does not match shard {name}: listed but absent "
                f"{abbreviate(listed - held)}, present but unlisted {abbreviate(held - listed)}"
            )
    return [os.path.join(folder, n) for n in names]


def open_readers(files):
    """Header-only readers and key -> reader; a key held by two files is an error."""
    readers = [SafetensorsFile(f) for f in files]
    where = {}
    for reader in readers:
        for key in reader.keys():
            if key in where:
                raise CheckpointError(f"tensor {key!r} is in both {where[key].path!r} and {reader.path!r}")
            where[key] = reader
    return readers, where


# ---------------------------------------------------------------- load plans
@dataclasses.dataclass(frozen=True)
class TensorLoad:
    """One parameter's load: `param` (Paddle shape `shape`, owned by a `layer`) <- `source` in `file`, through
    `transform` (rows of a fused tensor or swapped halves, in PyTorch layout) and the transpose when `transpose`."""

    param: str
    shape: tuple
    layer: str
    source: str
    file: str
    source_shape: tuple
    source_dtype: str
    transform: object
    transpose: bool

    def read(self, reader):
        """The tensor in Paddle layout as numpy (the only step that touches tensor data)."""
        array = reader.get(self.source)
        if self.transform is not None:
            array = self.transform(array)
        return array.T if self.transpose else array

    def describe(self, with_file=False):
        how = [str(self.transform)] if self.transform is not None else []
        how += ["transposed"] if self.transpose else []
        where = f"{os.path.basename(self.file)}:" if with_file else ""
        return (f"{self.param} {list(self.shape)} {self.layer} <- {where}{self.source} "
                f"{self.source_dtype}{list(self.source_shape)}{' (' + ', '.join(how) + ')' if how else ''}")


@dataclasses.dataclass
class LoadPlan:
    """Every parameter of `model` (built lazily: no memory) mapped to its source; `notes` describe the layout."""

    model: object
    steps: list
    files: list
    what: str
    notes: dict = dataclasses.field(default_factory=dict)

    @property
    def source_bytes(self):
        """Bytes of tensor data the load reads (each source tensor once, however many parameters it feeds)."""
        sources = {(s.file, s.source): (s.source_shape, s.source_dtype) for s in self.steps}
        return sum(int(np.prod(shape, dtype=np.int64)) * BYTES[dtype] for shape, dtype in sources.values())

    def counts(self):
        return {
            "parameters": len(self.steps),
            "source tensors": len({(s.file, s.source) for s in self.steps}),
            "transposed": sum(s.transpose for s in self.steps),
            "row slices": sum(isinstance(s.transform, Rows) for s in self.steps),
            "swapped halves": sum(isinstance(s.transform, SwapHalves) for s in self.steps),
            "elements": sum(int(np.prod(s.shape, dtype=np.int64)) for s in self.steps),
        }

    def format(self, limit=None):
        """A readable plan: the notes, files, counts, then one line per parameter (the first `limit` of them)."""
        lines = [f"load plan for {self.what}"]
        lines += [f"  {k}: {v}" for k, v in self.notes.items()]
        lines += [f"  file: {f}" for f in self.files]
        lines += [f"  {k}: {v:,}" for k, v in self.counts().items()]
        lines.append(f"  bytes a load reads: {self.source_bytes:,}")
        shown = self.steps if limit is None else self.steps[:limit]
        lines += ["  " + s.describe(with_file=len(self.files) > 1) for s in shown]
        if len(shown) < len(self.steps):
            lines.append(f"  ... {len(self.steps) - len(shown)} more (--all lists every parameter)")
        return "\n".join(lines)

    def load(self):
        """Execute the plan: read, convert and cast one tensor at a time into the model; returns it in eval mode."""
        readers = {path: SafetensorsFile(path) for path in self.files}
        params = self.model.state_dict()
        for step in self.steps:
            param = params[step.param]
            array = np.ascontiguousarray(step.read(readers[step.file]), dtype=np.float32)
            param.set_value(paddle.to_tensor(array).astype(param.dtype))
        self.model.eval()
        return self.model


def _source(spec):
    return (spec, None) if isinstance(spec, str) else tuple(spec)


def plan_load(model, files, sources=None, ignore=(), what="model", notes=None):
    """The plan that fills `model` from PyTorch-layout safetensors `files`, from their headers alone.

    `sources[key]` lists the candidates for parameter `key`, each a file key or `(file key, transform)`; the first
    present wins (tied weights have several); keys absent from `sources` load from the same key. File keys ending
    with one of `ignore` may be left over. Strict: missing or unexpected keys raise one CheckpointError listing them,
    and a shape that does not fit (after the transform and the layout rule) names the tensor."""
    sources = sources or {}
    readers, where = open_readers(files)
    params = model.state_dict()
    linear = linear_weight_names(model)
    owners = owner_types(model)
    chosen, missing = {}, []
    for key in params:
        candidates = [_source(s) for s in sources.get(key, [key])]
        found = [c for c in candidates if c[0] in where]
        if found:
            chosen[key] = found[0]
        else:
            missing.append(candidates[0][0])
    known = {_source(s)[0] for key in params for s in sources.get(key, [key])}
    unexpected = sorted(k for k in where if k not in known and not k.endswith(tuple(ignore)))
    if missing or unexpected:
        raise CheckpointError(
            f"{what} weights do not match: missing keys {abbreviate(sorted(missing))}, "
            f"unexpected keys {abbreviate(unexpected)}"
        )
    steps = []
    for key, param in params.items():
        src, transform = chosen[key]
        reader = where[src]
        source_shape = tuple(reader.shapes()[src])
        shape = transform.shape(source_shape) if transform is not None else source_shape
        transpose = key in linear and len(shape) == 2
        shape = shape[::-1] if transpose else shape
        if tuple(shape) != tuple(param.shape):
            raise CheckpointError(
                f"{what} tensor {src!r} has shape {list(source_shape)}, which gives {list(shape)} in Paddle layout; "
                f"parameter {key!r} is {list(param.shape)}"
            )
        steps.append(TensorLoad(key, tuple(param.shape), owners.get(key, "?"), src, reader.path, source_shape,
                                reader.dtype(src), transform, transpose))
    return LoadPlan(model, steps, [r.path for r in readers], what, notes or {})


def load_torch_layout(model, files, sources=None, ignore=(), what="model"):
    """`plan_load(...).load()`: fill `model` (built lazily) from PyTorch-layout safetensors files."""
    return plan_load(model, files, sources, ignore, what).load()


# ---------------------------------------------------------------- saving
def torch_layout_arrays(model, rename=lambda k: k, skip=()):
    """(tensors, bf16 keys): the model's parameters as numpy in PyTorch layout under `rename(key)`; bf16 parameters
    become float32 arrays listed in the bf16 set (numpy has no bf16), the other dtypes are kept."""
    linear = linear_weight_names(model)
    tensors, bf16 = {}, set()
    for key, param in model.state_dict().items():
        if key in skip:
            continue
        name = rename(key)
        if param.dtype == paddle.bfloat16:
            array = param.astype("float32").numpy()
            bf16.add(name)
        else:
            array = param.numpy()
        tensors[name] = np.ascontiguousarray(array.T) if key in linear and array.ndim == 2 else array
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


def save_model_folder(model, folder, config, weights_name, rename=lambda k: k, skip=(), max_shard_bytes=None):
    """Write `folder` atomically: `config.json` (the dict `config`) and the model's weights in PyTorch layout."""
    tensors, bf16 = torch_layout_arrays(model, rename=rename, skip=skip)
    with atomic_dir(folder, overwrite=True, ours="config.json") as tmp:  # save_pretrained replaces a model folder
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        save_torch_layout(tensors, tmp, weights_name, bf16=bf16, max_shard_bytes=max_shard_bytes)

"""A small safetensors reader/writer on numpy that also handles bfloat16 (numpy has no bf16 dtype).

Tensors are read one at a time from a memory map, so a large checkpoint is never held twice in memory.
"""

import json
import os
import struct

import numpy as np

from .atomic import atomic_file
from .errors import CheckpointError

_NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
       "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "BF16": np.uint16}
_CODE = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
         np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8",
         np.dtype(np.bool_): "BOOL"}


def bf16_bits_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (uint16)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = u + (0x7FFF + ((u >> 16) & 1))
    return (rounded >> 16).astype(np.uint16)


class SafetensorsFile:
    """Lazy reader: `keys()`, `shapes()`, `dtype(key)`, `metadata` come from the header alone; `get(key)` -> numpy
    (bf16 decoded to float32) maps the file on first use."""

    def __init__(self, path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weight file not found: {path!r}")
        self.path = path
        size = os.path.getsize(path)
        try:
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n <= 0 or 8 + n > size:
                    raise ValueError("header length out of range")
                header = json.loads(f.read(n))
        except (ValueError, struct.error, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path!r} is not a valid safetensors file ({e})") from None
        self.metadata = header.pop("__metadata__", None) or {}
        self._header = header
        self._data_start = 8 + n
        for key, info in header.items():
            begin, end = info["data_offsets"]
            if info["dtype"] not in _NP or self._data_start + end > size:
                raise CheckpointError(f"{path!r} is truncated or corrupt at tensor {key!r}")
        self._map = None

    def keys(self):
        return list(self._header)

    def shapes(self):
        return {k: tuple(v["shape"]) for k, v in self._header.items()}

    def dtype(self, key):
        return self._header[key]["dtype"]

    def get(self, key):
        info = self._header[key]
        begin, end = info["data_offsets"]
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        raw = self._map[self._data_start + begin : self._data_start + end]
        arr = np.frombuffer(raw.tobytes(), dtype=_NP[info["dtype"]]).reshape(info["shape"])
        return bf16_bits_to_f32(arr) if info["dtype"] == "BF16" else arr


def load_file(path):
    reader = SafetensorsFile(path)
    return {k: reader.get(k) for k in reader.keys()}


def save_file(tensors, path, metadata=None, bf16_keys=()):
    """Write numpy arrays atomically. Keys in `bf16_keys` are stored as BF16 (given as float32 arrays)."""
    header, offset, blobs = {}, 0, []
    for key in sorted(tensors):
        arr = np.ascontiguousarray(tensors[key])
        if key in bf16_keys:
            code, data = "BF16", f32_to_bf16_bits(arr).tobytes()
        else:
            if arr.dtype not in _CODE:
                raise TypeError(f"cannot store tensor {key!r} of dtype {arr.dtype} in safetensors")
            code, data = _CODE[arr.dtype], arr.tobytes()
        header[key] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(head)))
            f.write(head)
            for blob in blobs:
                f.write(blob)

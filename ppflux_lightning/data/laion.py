"""PaddleMIX's LAION layout: a file list naming tab-separated text files, one record per line.

Each record line has the caption JSON in field 2 (0-based; key `blip_caption_en` by default) and the base64-encoded
image in field 5, as read by PaddleMIX's FLUX-Lightning and text-image-pair loaders. List entries are paths relative
to the list file's folder (or absolute). PaddleMIX's Lightning reader uses only each file's first line; here every
non-empty line of every listed file is a record.
"""

import ast
import base64
import binascii
import hashlib
import json
import logging
import os

import numpy as np
from tqdm import tqdm

from ..utils.atomic import atomic_file
from .base import SkippingDataset
from .registry import DATASETS
from .transforms import BadRecord, ImageTransform, open_rgb

CAPTION_FIELD, IMAGE_FIELD = 2, 5
logger = logging.getLogger(__name__)


def offsets_cache_dir():
    """Where line-offset indexes of LAION files are kept: `$PPFLUX_CACHE/laion_offsets` or under ~/.cache."""
    root = os.environ.get("PPFLUX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ppflux_lightning")
    return os.path.join(root, "laion_offsets")


def read_file_list(list_path):
    """Absolute paths of the text files named in `list_path` (blank lines and `#` comments ignored)."""
    if not os.path.isfile(list_path):
        raise FileNotFoundError(f"LAION file list not found: {list_path!r}")
    root = os.path.dirname(os.path.abspath(list_path))
    files = []
    with open(list_path, encoding="utf-8") as f:
        for line in f:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                path = entry if os.path.isabs(entry) else os.path.join(root, entry)
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"file {entry!r} named in {list_path!r} not found")
                files.append(path)
    return files


def line_offsets(path, chunk=1 << 24):
    """Byte offsets of the non-empty lines of `path`, found by scanning it once in chunks."""
    offsets, start, pos, pending = [], 0, 0, False
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            for nl in _newlines(block):
                end = pos + nl
                if end > start:
                    offsets.append(start)
                start, pending = end + 1, False
            pos += len(block)
            pending = pos > start
    if pending:
        offsets.append(start)
    return offsets


def cached_line_offsets(path):
    """`line_offsets(path)`, remembered per (path, size, mtime) so a restart does not reread every image."""
    stat = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    cache = os.path.join(offsets_cache_dir(), key + ".npy")
    if os.path.isfile(cache):
        try:
            return np.load(cache)
        except (OSError, ValueError):
            pass
    offsets = np.asarray(line_offsets(path), dtype=np.int64)
    try:
        with atomic_file(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, offsets)
    except OSError as e:  # a read-only home only costs the rescan next time
        logger.warning("cannot keep the line index of %s: %s", path, e)
    return offsets


def _newlines(block):
    i = block.find(b"\n")
    while i >= 0:
        yield i
        i = block.find(b"\n", i + 1)


def parse_caption(text, key):
    """The caption under `key` in a JSON (or Python-literal, as some dumps are) object; missing/empty -> BadRecord."""
    try:
        obj = json.loads(text)
    except ValueError:
        try:
            obj = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise BadRecord(f"caption field is not JSON: {text[:60]!r}") from None
    caption = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(caption, str) or not caption.strip():
        raise BadRecord(f"no caption under key {key!r}")
    return caption


def parse_record(line, caption_key="blip_caption_en"):
    """One LAION line -> (caption, PIL image)."""
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) <= IMAGE_FIELD:
        raise BadRecord(f"expected at least {IMAGE_FIELD + 1} tab-separated fields, got {len(fields)}")
    caption = parse_caption(fields[CAPTION_FIELD], caption_key)
    try:
        raw = base64.b64decode(fields[IMAGE_FIELD], validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadRecord(f"bad base64 image: {e}") from None
    return caption, open_rgb(raw)


@DATASETS.register(name="laion")
class LaionDataset(SkippingDataset):
    """`path` is the file list. Samples: `{pixel_values [3,R,R] float32 in [-1,1], caption, index, skipped}`."""

    def __init__(self, path, resolution, center_crop=True, random_flip=False, caption_key="blip_caption_en", seed=0):
        super().__init__()
        self.caption_key = caption_key
        self.transform = ImageTransform(resolution, center_crop, random_flip, seed)
        self.source_path = path
        self.files = read_file_list(path)
        found = [cached_line_offsets(f) for f in tqdm(self.files, desc="indexing LAION files",
                                                       disable=len(self.files) < 8)]
        self.file_ids = np.repeat(np.arange(len(found), dtype=np.int32), [len(o) for o in found])
        self.offsets = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def __len__(self):
        return len(self.offsets)

    def read_line(self, index):
        with open(self.files[self.file_ids[index]], "rb") as f:
            f.seek(int(self.offsets[index]))
            raw = f.readline()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRecord("line is not UTF-8") from None

    def load(self, index):
        caption, image = parse_record(self.read_line(index), self.caption_key)
        return {"pixel_values": self.transform(image, index), "caption": caption}

"""A JSON-lines file of `{"image": path, "caption": text}` records; image paths are relative to the file's folder."""

import json
import os

from .base import SkippingDataset
from .registry import DATASETS
from .transforms import BadRecord, ImageTransform, open_rgb


def parse_line(line, caption_key):
    """-> (image path, caption). The caption is read from `caption_key` if present, else from `caption`."""
    try:
        record = json.loads(line)
    except ValueError:
        raise BadRecord(f"line is not JSON: {line[:60]!r}") from None
    if not isinstance(record, dict):
        raise BadRecord(f"line is not a JSON object: {line[:60]!r}")
    caption = record.get(caption_key) if caption_key in record else record.get("caption")
    image = record.get("image")
    if not isinstance(caption, str) or not caption.strip():
        raise BadRecord(f"record has no caption: {line[:60]!r}")
    if not isinstance(image, str) or not image:
        raise BadRecord(f"record has no image path: {line[:60]!r}")
    return image, caption


@DATASETS.register(name="jsonl")
class JsonlDataset(SkippingDataset):
    """`path` is the .jsonl file; blank lines are ignored, every other line is one record."""

    def __init__(self, path, resolution, center_crop=True, random_flip=False, caption_key="caption", seed=0):
        super().__init__()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"jsonl file not found: {path!r}")
        self.root = os.path.dirname(os.path.abspath(path))
        self.source_path = path
        self.caption_key = caption_key
        self.transform = ImageTransform(resolution, center_crop, random_flip, seed)
        with open(path, encoding="utf-8", errors="replace") as f:
            self.lines = [line for line in f if line.strip()]

    def __len__(self):
        return len(self.lines)

    def load(self, index):
        image, caption = parse_line(self.lines[index], self.caption_key)
        path = image if os.path.isabs(image) else os.path.join(self.root, image)
        if not os.path.isfile(path):
            raise BadRecord(f"image not found: {path!r}")
        return {"pixel_values": self.transform(open_rgb(path), index), "caption": caption}

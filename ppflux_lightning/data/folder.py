"""An image folder (searched recursively) where `name.png` is captioned by `name.txt` beside it."""

import os

from .base import SkippingDataset
from .registry import DATASETS
from .transforms import BadRecord, ImageTransform, open_rgb

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def list_images(folder):
    """Sorted relative paths of the images under `folder`, so the order is the same on every machine."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder!r}")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found.extend(os.path.relpath(os.path.join(root, f), folder) for f in files
                     if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
    return sorted(found)


def read_caption(path):
    """The stripped text of a caption file; a missing or empty file is a `BadRecord`."""
    try:
        with open(path, encoding="utf-8") as f:
            caption = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise BadRecord(f"cannot read caption {path!r}: {e}") from None
    if not caption:
        raise BadRecord(f"empty caption file {path!r}")
    return caption


@DATASETS.register(name="folder")
class FolderDataset(SkippingDataset):
    """`path` is the folder. `caption_key` is accepted for a uniform `data` section and unused (captions are text)."""

    def __init__(self, path, resolution, center_crop=True, random_flip=False, caption_key=None, seed=0):
        super().__init__()
        self.root = path
        self.transform = ImageTransform(resolution, center_crop, random_flip, seed)
        self.images = list_images(path)

    def __len__(self):
        return len(self.images)

    def load(self, index):
        image_path = os.path.join(self.root, self.images[index])
        caption = read_caption(os.path.splitext(image_path)[0] + ".txt")
        return {"pixel_values": self.transform(open_rgb(image_path), index), "caption": caption}

"""Image folders and prompt files as the evaluation tools exchange them.

Convention: a folder holds one image per prompt, and sorted file names give prompt order (the tools write
`00000.png`, `00001.png`, ...). A prompts file is plain text (one prompt per line), a JSON list of strings, or a
COCO captions file (`annotations` with `image_id` and `caption`: the first caption of each image, by image id).
"""

import os

import numpy as np
from PIL import Image

from ..utils.atomic import atomic_file
from ..utils.errors import InputFileError
from ..utils.files import read_json

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def list_images(folder):
    """Sorted paths of the image files in `folder`."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    paths = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise InputFileError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return paths


def load_images(folder, count=None):
    """The first `count` (default all) images of a folder as uint8 `[N, H, W, 3]`; all must share one size."""
    paths = list_images(folder)
    if count is not None:
        if len(paths) < count:
            raise InputFileError(f"{folder} holds {len(paths)} images, need {count}")
        paths = paths[:count]
    images = [_read_rgb(p) for p in paths]
    for path, image in zip(paths, images):
        if image.shape != images[0].shape:
            raise InputFileError(f"{path} is {image.shape[1]}x{image.shape[0]}, the folder's first image is "
                             f"{images[0].shape[1]}x{images[0].shape[0]}")
    return np.stack(images)


def _read_rgb(path):
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        raise InputFileError(f"{path!r} is not a readable image ({e})") from None


def to_uint8(image):
    """Float image in [0, 1] (or uint8) -> uint8."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.clip(np.round(image.astype(np.float64) * 255), 0, 255).astype(np.uint8)


def save_images(images, folder):
    """Write images as `00000.png`, `00001.png`, ... (each file atomically); returns the paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = os.path.join(folder, f"{i:05d}.png")
        with atomic_file(path) as tmp:
            Image.fromarray(to_uint8(image)).save(tmp, format="PNG")
        paths.append(path)
    return paths


def read_prompts(path, limit=None):
    """Prompts from a text, JSON-list or COCO captions file, optionally only the first `limit`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prompts file not found: {path}")
    if path.lower().endswith(".json"):
        data = read_json(path, "prompts file")
        if isinstance(data, dict) and "annotations" in data:
            first = {}
            for ann in sorted(data["annotations"], key=lambda a: (a["image_id"], a.get("id", 0))):
                first.setdefault(ann["image_id"], " ".join(ann["caption"].split()))
            prompts = list(first.values())
        elif isinstance(data, list) and all(isinstance(p, str) for p in data):
            prompts = data
        else:
            raise InputFileError(f"{path} is neither a JSON list of prompts nor a COCO captions file")
    else:
        with open(path, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
    if not prompts:
        raise InputFileError(f"no prompts in {path}")
    if limit is not None and limit < 1:
        raise InputFileError(f"the prompt limit must be >= 1, got {limit}")
    return prompts[:limit] if limit else prompts


def write_prompts(prompts, path):
    """One prompt per line, atomically."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(p.replace("\n", " ") + "\n" for p in prompts)

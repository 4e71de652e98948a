"""Save one image, or several as a near-square grid, to an image file (atomically; format from the suffix)."""

import math
import os

from ..utils.atomic import atomic_file

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}


def image_grid(images):
    """PIL images of one size -> one PIL image with ceil(sqrt(n)) columns."""
    from PIL import Image

    if not images:
        raise ValueError("no images to put in a grid")
    w, h = images[0].size
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, img in enumerate(images):
        grid.paste(img, ((i % cols) * w, (i // cols) * h))
    return grid


def save_image_grid(images, path):
    """Write `images` to `path` in the format its suffix names (PNG for an unknown suffix)."""
    image = images[0] if len(images) == 1 else image_grid(images)
    with atomic_file(path) as tmp:
        image.save(tmp, format=FORMATS.get(os.path.splitext(path)[1].lower(), "PNG"))
    return path

"""Image decoding and the resize -> crop -> [-1, 1] CHW transform shared by every image dataset."""

import io

import numpy as np
from PIL import Image

from ..utils.errors import ConfigError


class BadRecord(Exception):
    """A record that cannot be turned into a sample (corrupt image, bad base64, missing caption): skip it."""


def check_resolution(resolution):
    """FLUX packs 2x2 latents of an 8x VAE, so the side must be a positive multiple of 16."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0 or resolution % 16:
        raise ConfigError(f"data.resolution must be a positive multiple of 16, got {resolution!r}")
    return resolution


def open_rgb(source):
    """Decode a path or raw bytes into a fully loaded RGB image; any decoding failure is a `BadRecord`."""
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        image.load()
        return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise BadRecord(f"cannot decode image: {e}") from None


class ImageTransform:
    """Resize the shorter side to `resolution` (Lanczos, as the reference), crop a square, optionally flip, scale to
    float32 [-1, 1].

    The random crop offset and flip come from a generator seeded by (seed, sample index), so a sample looks the same
    on any rank, worker or resume.
    """

    def __init__(self, resolution, center_crop=True, random_flip=False, seed=0):
        self.resolution = check_resolution(resolution)
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.seed = seed

    def __call__(self, image, index=0):
        size = self.resolution
        w, h = image.size
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), Image.LANCZOS)
        rng = np.random.default_rng([self.seed, index])
        if self.center_crop:
            left, top = (new_w - size) // 2, (new_h - size) // 2
        else:
            left, top = int(rng.integers(0, new_w - size + 1)), int(rng.integers(0, new_h - size + 1))
        image = image.crop((left, top, left + size, top + size))
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        if self.random_flip and rng.random() < 0.5:
            pixels = pixels[:, :, ::-1]
        return np.ascontiguousarray(pixels)

"""FLUX's packed latent layout: 2x2 latent patches become tokens, with (0, row, col) RoPE position ids."""

import numpy as np
import paddle


def pack_latents(latents):
    """[B, C, h, w] -> [B, (h/2)(w/2), 4C]: every 2x2 patch becomes one token (channel-major inside the token)."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f"latent height and width must be even to pack 2x2 patches, got {h}x{w}")
    x = latents.reshape([b, c, h // 2, 2, w // 2, 2]).transpose([0, 2, 4, 1, 3, 5])
    return x.reshape([b, (h // 2) * (w // 2), c * 4])


def unpack_latents(packed, h, w):
    """Inverse of `pack_latents` for a latent grid of `h` x `w` cells."""
    b, _, d = packed.shape
    c = d // 4
    x = packed.reshape([b, h // 2, w // 2, c, 2, 2])
    x = x.transpose([0, 3, 1, 4, 2, 5])
    return x.reshape([b, c, h, w])


def latent_image_ids(h, w):
    """Position ids `(0, row, col)` of the packed tokens of an `h` x `w` latent grid: float32 `[(h/2)(w/2), 3]`."""
    rows, cols = np.meshgrid(np.arange(h // 2), np.arange(w // 2), indexing="ij")
    ids = np.stack([np.zeros_like(rows), rows, cols], axis=-1).reshape(-1, 3)
    return paddle.to_tensor(ids.astype(np.float32))

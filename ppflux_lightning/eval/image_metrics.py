"""PSNR and SSIM (Gaussian-window SSIM of Wang et al. 2004) for images `[H, W, C]` or batches `[N, H, W, C]`."""

import numpy as np


def _as_batch(images, name):
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 2:
        images = images[None, :, :, None]
    elif images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"{name} must be [H, W], [H, W, C] or [N, H, W, C], got shape {images.shape}")
    return images


def _pair(a, b):
    a, b = _as_batch(a, "first images"), _as_batch(b, "second images")
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    return a, b


def psnr(a, b, data_range=1.0):
    """Peak signal-to-noise ratio in dB per image pair, 10 log10(range^2 / MSE); inf for identical images."""
    a, b = _pair(a, b)
    mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10 * np.log10(data_range ** 2 / mse)


def gaussian_window(sigma=1.5, truncate=3.5):
    """Normalised 1-D Gaussian taps, radius int(truncate*sigma + 0.5): 11 taps for sigma 1.5 as in Wang et al."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def _filter_valid(images, taps):
    """Separable 'valid' filtering over H and W of `[N, H, W, C]` (no padding, output shrinks by len(taps)-1)."""
    k = len(taps)
    h, w = images.shape[1] - k + 1, images.shape[2] - k + 1
    rows = sum(taps[i] * images[:, i:i + h] for i in range(k))
    return sum(taps[i] * rows[:, :, i:i + w] for i in range(k))


def ssim(a, b, data_range=1.0, sigma=1.5, k1=0.01, k2=0.03):
    """Mean SSIM per image pair: Gaussian-weighted local statistics (population covariance), averaged over the
    valid window positions and the channels."""
    a, b = _pair(a, b)
    taps = gaussian_window(sigma)
    if min(a.shape[1], a.shape[2]) < len(taps):
        raise ValueError(f"images of {a.shape[1]}x{a.shape[2]} are smaller than the {len(taps)}-tap SSIM window")
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, taps), _filter_valid(b, taps)
    var_a = _filter_valid(a * a, taps) - mu_a ** 2
    var_b = _filter_valid(b * b, taps) - mu_b ** 2
    cov = _filter_valid(a * b, taps) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean(axis=(1, 2, 3))

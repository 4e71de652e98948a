"""Frechet Inception Distance: the Frechet distance between Gaussians fitted to two sets of image features."""

import numpy as np
from tqdm import tqdm


def feature_statistics(features):
    """Mean and covariance (float64, unbiased) of a `[N, D]` feature matrix with N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def _psd_sqrt(matrix):
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    matrix = (matrix + matrix.T) / 2
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def trace_sqrt_product(sigma1, sigma2):
    """tr((S1 S2)^1/2), computed as tr((S1^1/2 S2 S1^1/2)^1/2): the same eigenvalues, but of a symmetric PSD matrix.

    This avoids the complex square roots and the blow-ups that a general `sqrtm(S1 @ S2)` shows on singular
    covariances (fewer samples than feature dimensions).
    """
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    values = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(values, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), clipped at 0 against round-off."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return max(float(distance), 0.0)


def fid_from_features(features1, features2):
    """FID between two feature matrices `[N1, D]` and `[N2, D]`."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def compute_fid(images1, images2, feature_fn, batch_size=32):
    """FID between two image sets under `feature_fn` (images `[N, H, W, 3]` in [0, 1] -> features `[N, D]`)."""
    return fid_from_features(extract_features(images1, feature_fn, batch_size),
                             extract_features(images2, feature_fn, batch_size))


def extract_features(images, feature_fn, batch_size=32, desc="features"):
    """Apply `feature_fn` batch by batch and stack the results into a float64 `[N, D]` matrix."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(images) == 0:
        raise ValueError("no images to extract features from")
    chunks = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=desc, disable=len(starts) < 4, leave=False):
        batch = images[start:start + batch_size]
        chunks.append(np.asarray(feature_fn(batch), dtype=np.float64).reshape(len(batch), -1))
    return np.concatenate(chunks, axis=0)

"""Train a tiny ppdiffusers AutoencoderKL (16 latent channels, like FLUX's) on toy-task images."""

from __future__ import annotations

import math

import numpy as np
import paddle
from tqdm import tqdm

from ..engine import distributed


def build_vae(block_out_channels=(8, 16, 32), latent_channels=16, norm_num_groups=8, sample_size=48):
    """A FLUX-style AutoencoderKL (no quant convs); the scale factor is 2^(levels-1)."""
    from ppdiffusers import AutoencoderKL

    levels = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def to_tensor(images: np.ndarray) -> paddle.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] in [-1, 1]."""
    return paddle.to_tensor(images.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)


def random_crops(images: np.ndarray, idx: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """One random ``crop`` x ``crop`` window of each selected image (the whole image when crop >= its size)."""
    size = images.shape[1]
    if crop >= size:
        return images[idx]
    offsets = rng.integers(0, size - crop + 1, size=(len(idx), 2))
    return np.stack([images[i, y:y + crop, x:x + crop] for i, (y, x) in zip(idx, offsets)])


def train_vae(vae, images: np.ndarray, steps: int, batch_size: int = 16, lr: float = 2e-3, kl_weight: float = 1e-6,
              crop: int = 48, sample_posterior: bool = False, object_weight: float = 10.0, seed: int = 0,
              latent_noise: float = 0.0, noise_from: float = 0.6, desc: str = "vae"):
    """L1 + MSE reconstruction with a small KL term, AdamW with a cosine schedule; returns the loss history.

    Pixels that differ from the background weigh ``object_weight`` times more: objects cover a small part of a
    toy image, and an unweighted loss first learns a grey blob of the wrong colour. Random ``crop`` windows cut the
    cost (the VAE is convolutional). By default the decoder sees the posterior mean, which converged faster on this
    budget than sampling; the KL term still bounds the latents. From step ``noise_from * steps`` on, the decoder sees
    the latents plus Gaussian noise of ``latent_noise`` times each latent's standard deviation (about the scale of
    the normalised latents the transformer works in): it learns to turn a slightly wrong latent into a clean scene
    instead of a speckled one, which is what a sampler's latents are. Under ``paddle.distributed.launch`` each process
    trains on its share of the same seeded batch and gradients are averaged (= one process, faster).
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    share = distributed.batch_share(batch_size, "VAE batch_size")  # this process's part of every batch
    if crop < 8:
        raise ValueError(f"crop must be >= 8 px, got {crop}")
    paddle.seed(seed)
    rng = np.random.default_rng(seed)
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(lr, T_max=steps, eta_min=lr * 0.05)
    opt = paddle.optimizer.AdamW(schedule, parameters=vae.parameters(), weight_decay=0.0)
    vae.train()
    history = []
    bar = tqdm(range(steps), desc=desc, mininterval=2.0, disable=not distributed.is_main())
    noisy_from = int(round(noise_from * steps)) if latent_noise > 0 else steps
    for step in bar:
        x = to_tensor(random_crops(images, rng.integers(0, len(images), batch_size), crop, rng)[share])
        posterior = vae.encode(x).latent_dist
        z = posterior.sample() if sample_posterior else posterior.mean
        if step >= noisy_from:
            z = z + latent_noise * z.detach().std(axis=[1, 2, 3], keepdim=True) * paddle.to_tensor(
                rng.standard_normal((batch_size, *z.shape[1:]), dtype=np.float32)[share])
        rec = vae.decode(z).sample
        err = rec - x
        loss = ((err.abs() + err**2) * foreground_weights(x, object_weight)).mean() + kl_weight * posterior.kl().mean()
        loss.backward()
        loss = distributed.all_reduce_mean(vae.parameters(), loss.detach())
        opt.step()
        opt.clear_grad()
        schedule.step()
        history.append(float(loss))
        bar.set_postfix(loss=f"{history[-1]:.4f}", refresh=False)
    vae.eval()
    return history


def foreground_weights(x: paddle.Tensor, object_weight: float) -> paddle.Tensor:
    """[N, 1, H, W] loss weights: 1 on background pixels, ``object_weight`` on coloured ones (the task's backgrounds
    are grey: their chroma, max - min channel, stays below 14/255; every palette colour's is above 150/255)."""
    chroma = x.max(axis=1, keepdim=True) - x.min(axis=1, keepdim=True)  # x in [-1, 1]: twice the 0-1 chroma
    foreground = (chroma > 2 * 30 / 255).astype(x.dtype)
    return 1.0 + (object_weight - 1.0) * foreground


@paddle.no_grad()
def encode_mean(vae, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Posterior means (raw, before shift/scaling) as float32 [N, C, h, w]."""
    out = [vae.encode(to_tensor(images[i:i + batch_size])).latent_dist.mean.numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out)


def reconstruction_psnr(reconstructed: np.ndarray, images: np.ndarray) -> float:
    """PSNR (dB, images in [0, 1]) of `reconstruct`'s output against the uint8 originals (one MSE over all pixels)."""
    mse = float(np.mean((reconstructed.astype(np.float64) - images.astype(np.float64) / 255.0) ** 2))
    return float(10.0 * math.log10(1.0 / max(mse, 1e-12)))


@paddle.no_grad()
def reconstruct(vae, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """decode(encode mean) of uint8 images, as float [N, H, W, 3] in [0, 1]."""
    out = [((vae.decode(vae.encode(to_tensor(images[i:i + batch_size])).latent_dist.mean).sample.clip(-1, 1) + 1) / 2)
           .numpy().transpose(0, 2, 3, 1) for i in range(0, len(images), batch_size)]
    return np.concatenate(out)


def latent_factors(latents: np.ndarray):
    """FLUX-style (shift_factor, scaling_factor): one mean and 1/std over all latent values."""
    shift = float(latents.mean())
    scale = float(1.0 / max(latents.std(), 1e-6))
    return shift, scale

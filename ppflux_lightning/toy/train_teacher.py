"""Train the toy FLUX teacher with flow matching, then distil classifier-free guidance into its guidance embedding.

Phase 1 (conditional flow matching): sigmas are logit-normal, pushed through FLUX's time shift (by default the
shift FLUX.1 uses at 1024 px, ``mu`` = 1.15, rather than the pipeline's dynamic shift for the toy's 36 tokens; see
``TeacherSchedule.sigma_mu``); the prompt is dropped (replaced by the empty prompt's embeddings) with probability
``drop_prob``; the guidance input is random and carries no signal yet. Phase 2 (guidance distillation, as FLUX.1-dev
was made): a frozen copy of the phase-1 model gives ``v_uncond + g (v_cond - v_uncond)`` as the target for a
random guidance ``g``, so that one forward pass with ``guidance=g`` replaces classifier-free guidance.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import paddle
from tqdm import tqdm

from ..engine import distributed
from ..schedulers.flow_match import time_shift


@dataclasses.dataclass
class TeacherSchedule:
    """Optimisation settings of the toy teacher."""

    steps: int = 10500
    guidance_steps: int = 1400  # the last steps of `steps` are guidance distillation (0 = phase 1 only)
    batch_size: int = 32  # 32 x 2 steps beat 64 x 1 at the same samples and time (docs/toy_world.md)
    lr: float = 4e-3
    warmup: int = 30
    weight_decay: float = 0.0
    drop_prob: float = 0.1
    guidance_range: tuple = (1.0, 5.0)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    # mu of the time shift of the training sigmas; None = the pipeline's dynamic shift for the training token count
    # (0.46 for 36 tokens). 1.15 is FLUX.1's shift at 1024 px and above: more of the training at high noise, where
    # the open attributes are chosen; on 96000 samples it raised 50-step validity 64.6 -> 69.1 % and adherence
    # 79.2 -> 94.8 % (docs/toy_world.md).
    sigma_mu: float | None = 1.15
    ema_decay: float = 0.99
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if not 0 <= self.guidance_steps < self.steps:
            raise ValueError(f"guidance_steps must be in [0, steps), got {self.guidance_steps} (steps {self.steps})")


def parse_mu(text):
    """A time shift as the benches take it: 'pipeline' -> None (the pipeline's dynamic shift), else the number;
    inverse of `mu_text`."""
    return None if text == "pipeline" else float(text)


def mu_text(mu, exact=False):
    """'pipeline' for None, else the number (`repr` when `exact`, for a command line that must round-trip)."""
    return "pipeline" if mu is None else repr(mu) if exact else f"{mu:g}"


class EMA:
    """Exponential moving average of a model's parameters, kept in a deep copy."""

    def __init__(self, model, decay):
        self.decay = decay
        self.model = copy.deepcopy(model)
        self.model.eval()
        for p in self.model.parameters():
            p.stop_gradient = True

    @paddle.no_grad()
    def update(self, model, step):
        decay = min(self.decay, (1 + step) / (10 + step))  # short warm-up: early steps follow the model closely
        for avg, p in zip(self.model.parameters(), model.parameters()):
            avg.set_value(avg * decay + p.detach() * (1.0 - decay))


def sample_sigmas(rng, n, mu, mean=0.0, std=1.0):
    """Logit-normal sigmas pushed through FLUX's time shift with ``mu``."""
    raw = 1.0 / (1.0 + np.exp(-(rng.normal(mean, std, n))))
    raw = np.clip(raw, 1e-4, 1.0 - 1e-4)
    return time_shift(mu, raw).astype(np.float32)


def train_teacher(model, latents, prompt_embeds, pooled_embeds, caption_index, null_embeds, img_ids, txt_ids, mu,
                  schedule: TeacherSchedule, desc="teacher"):
    """Train ``model`` in place on packed ``latents`` [N, S, C]; returns (ema_model, loss history).

    ``mu`` is the pipeline's dynamic shift for the token count, used unless ``schedule.sigma_mu`` is set.
    ``prompt_embeds`` [M, L, D] / ``pooled_embeds`` [M, P] hold one entry per distinct caption; ``caption_index`` [N]
    maps every latent to its caption, or [N, K] to K captions of it, one of which every sample draws uniformly;
    ``null_embeds`` = (embeds [1, L, D], pooled [1, P]) of the empty prompt.
    Under ``paddle.distributed.launch`` every process draws the whole batch from the same seed, trains on its share
    and gradients are averaged: the run equals one process with the same batch, only faster.
    """
    s = schedule
    share = distributed.batch_share(s.batch_size, "teacher batch_size")  # this process's part of every batch
    paddle.seed(s.seed)
    rng = np.random.default_rng(s.seed)
    latents = paddle.to_tensor(latents, dtype="float32")
    prompt_embeds = paddle.to_tensor(prompt_embeds, dtype="float32")
    pooled_embeds = paddle.to_tensor(pooled_embeds, dtype="float32")
    null_e, null_p = (paddle.to_tensor(x, dtype="float32") for x in null_embeds)
    caption_index = np.asarray(caption_index)
    mu = mu if s.sigma_mu is None else s.sigma_mu
    phase1 = s.steps - s.guidance_steps
    lr = paddle.optimizer.lr.LinearWarmup(
        paddle.optimizer.lr.CosineAnnealingDecay(s.lr, T_max=s.steps, eta_min=s.lr * 0.05), s.warmup, 0.0, s.lr
    )
    opt = paddle.optimizer.AdamW(lr, parameters=model.parameters(), weight_decay=s.weight_decay,
                                 grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
    ema = EMA(model, s.ema_decay)
    frozen = None
    history = []
    model.train()
    bar = tqdm(range(s.steps), desc=desc, mininterval=2.0, disable=not distributed.is_main())
    for step in bar:
        if step == phase1 and s.guidance_steps:
            frozen = copy.deepcopy(ema.model)  # the phase-1 result supplies the guided targets
        draws = _draw(rng, s.batch_size, caption_index.shape, latents.shape[1:], mu, s)
        idx, sigma, noise, guidance, drop, variant = (None if d is None else d[share] for d in draws)
        b = len(idx)
        x0 = paddle.gather(latents, paddle.to_tensor(idx))
        cap = paddle.to_tensor(caption_index[idx] if variant is None else caption_index[idx, variant])
        embeds, pooled = paddle.gather(prompt_embeds, cap), paddle.gather(pooled_embeds, cap)
        noise = paddle.to_tensor(noise)
        sig = paddle.to_tensor(sigma).reshape([-1, 1, 1])
        xt = (1.0 - sig) * x0 + sig * noise
        timestep, g = paddle.to_tensor(sigma), paddle.to_tensor(guidance)
        if frozen is None:
            drop = paddle.to_tensor(drop).reshape([-1, 1])
            embeds = paddle.where(drop.unsqueeze(-1), null_e.expand_as(embeds), embeds)
            pooled = paddle.where(drop, null_p.expand_as(pooled), pooled)
            target = noise - x0
        else:
            with paddle.no_grad():
                both = frozen(paddle.concat([xt, xt]), paddle.concat([embeds, null_e.expand_as(embeds)]),
                              paddle.concat([pooled, null_p.expand_as(pooled)]), paddle.concat([timestep, timestep]),
                              img_ids, txt_ids, guidance=paddle.ones([2 * b]))
                v_cond, v_uncond = both[:b], both[b:]
                target = v_uncond + g.reshape([-1, 1, 1]) * (v_cond - v_uncond)
        pred = model(xt, embeds, pooled, timestep, img_ids, txt_ids, guidance=g)
        loss = paddle.square(pred - target).mean()
        loss.backward()
        loss = distributed.all_reduce_mean(model.parameters(), loss.detach())
        opt.step()
        opt.clear_grad()
        lr.step()
        ema.update(model, step)
        history.append(float(loss))
        bar.set_postfix(loss=f"{np.mean(history[-20:]):.4f}", phase=1 if frozen is None else 2, refresh=False)
    model.eval()
    return ema.model, history


def _draw(rng, batch, index_shape, latent_shape, mu, s: TeacherSchedule):
    """Every random input of one step for the whole batch, in a fixed order: (index, sigma, noise, guidance, drop,
    caption variant); the variant is drawn only when `index_shape` (of ``caption_index``) holds several captions
    per latent, so runs with one caption per image keep their random stream."""
    idx = rng.integers(0, index_shape[0], batch)
    sigma = sample_sigmas(rng, batch, mu, s.logit_mean, s.logit_std)
    noise = rng.standard_normal((batch, *latent_shape), dtype=np.float32)
    guidance = rng.uniform(*s.guidance_range, size=batch).astype(np.float32)
    drop = rng.uniform(size=batch) < s.drop_prob
    variant = rng.integers(0, index_shape[1], batch) if len(index_shape) == 2 else None
    return idx, sigma, noise, guidance, drop, variant

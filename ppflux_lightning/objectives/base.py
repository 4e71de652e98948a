"""What every objective shares: the registry, the per-sample random draws, and the step context.

An objective declares its optimizer `group` ("generator" trains the LoRA, "discriminator" the D heads), may ask the
context for no-grad forwards (batched with the other objectives' requests of the same adapter state), and returns a
dict of named, already weighted losses. The trainer only sums them: it has no objective-specific code.
"""

import contextlib

import numpy as np
import paddle
import paddle.nn.functional as F

from ..config import Registry

OBJECTIVES = Registry("objective")

# Independent random streams per sample; the numbers are part of the checkpoint format (changing them changes runs).
STREAMS = {"noise": 0, "index": 1, "adv_u": 2, "adv_eps": 3, "dmd_u": 4, "dmd_eps": 5, "reflow_u": 6, "reflow_eps": 7}


def sample_draws(seed, step, sample_ids, shape):
    """Per-sample random numbers from (seed, step, global sample index): the same on 1 or N processes.

    Returns numpy arrays: Gaussians of `shape` per sample for the `*_eps`/`noise` streams, uniforms in [0, 1) for
    the `*_u`/`index` streams (the solver maps them to integer indices)."""
    out = {name: [] for name in STREAMS}
    for sid in sample_ids:
        for name, stream in STREAMS.items():
            rng = np.random.default_rng([int(seed), int(step), int(sid), stream])
            is_gauss = name == "noise" or name.endswith("_eps")
            out[name].append(rng.standard_normal(shape, dtype=np.float32) if is_gauss else rng.random())
    return {k: np.stack(v) if isinstance(v[0], np.ndarray) else np.asarray(v) for k, v in out.items()}


def pseudo_huber(pred, target, c):
    """mean(sqrt((pred - target)^2 + c^2) - c), the PCM/LCM distance."""
    diff = pred.astype("float32") - target.astype("float32")
    return (paddle.sqrt(diff * diff + c * c) - c).mean()


def distance(pred, target, kind, huber_c):
    if kind == "huber":
        return pseudo_huber(pred, target, huber_c)
    if kind == "l2":
        return F.mse_loss(pred.astype("float32"), target.astype("float32"))
    raise ValueError(f"loss must be 'huber' or 'l2', got {kind!r}")


def per_sample(values, like):
    """A [B] tensor reshaped to broadcast against `like` ([B, ...])."""
    return values.reshape([-1] + [1] * (like.ndim - 1))


def renoise(x, eps, sigma_new, sigma_end):
    """Move `x` (a sample at the phase end `sigma_end`) up to `sigma_new` inside the phase (reference formula):
    ((1 - s_new) x + (s_new - s_end) eps) / (1 - s_end)."""
    s_new, s_end = per_sample(sigma_new, x), per_sample(sigma_end, x)
    return ((1 - s_new) * x + (s_new - s_end) * eps) / (1 - s_end)


def jump(x, velocity, sigma, sigma_to):
    """One Euler move of `x` from `sigma` to `sigma_to` along `velocity` (per-sample sigmas), in float32."""
    return x + per_sample(sigma_to - sigma, x) * velocity.astype("float32")


@contextlib.contextmanager
def checkpointing_paused(model, pause=True):
    """Turn gradient checkpointing off for a forward: pointless without grad (Paddle warns on every block), and
    wrong for a grad forward with the adapters off (recompute in backward would run with them on)."""
    saved = model.gradient_checkpointing
    model.gradient_checkpointing = saved and not pause
    try:
        yield model
    finally:
        model.gradient_checkpointing = saved


class Conditioning:
    """The text conditioning and position ids of a batch: everything the transformer needs besides x and sigma."""

    def __init__(self, prompt_embeds, pooled, img_ids, txt_ids, guidance=None):
        self.prompt_embeds, self.pooled = prompt_embeds, pooled
        self.img_ids, self.txt_ids, self.guidance = img_ids, txt_ids, guidance

    def tile(self, times):
        if times == 1:
            return self
        rep = lambda t: paddle.concat([t] * times, axis=0)
        return Conditioning(rep(self.prompt_embeds), rep(self.pooled), self.img_ids, self.txt_ids, self.guidance)

    def kwargs(self, batch):
        guidance = None if self.guidance is None else paddle.full([batch], self.guidance, dtype="float32")
        return dict(encoder_hidden_states=self.prompt_embeds, pooled_projections=self.pooled,
                    img_ids=self.img_ids, txt_ids=self.txt_ids, guidance=guidance)


class Objective:
    """Base class. Subclasses set `name` and `group`, and implement `losses(ctx)`."""

    name = "objective"
    group = "generator"
    needs_target = False  # the phased-consistency target (teacher step + student jump) is computed for it

    def __init__(self, weight=1.0, enabled=True):
        self.weight = float(weight)
        self.enabled = bool(enabled)

    @classmethod
    def build(cls, model, **cfg):
        """The objectives one config section makes (most make one; the adversarial section makes two)."""
        return [cls(**cfg)]

    def parameters(self):
        """Trainable parameters this objective owns beyond the LoRA (the D heads)."""
        return []

    def optimizer_settings(self):
        """Overrides of the trainer's AdamW settings for this objective's group (lr, betas, weight_decay)."""
        return {}

    def state_dict(self):
        return {}

    def set_state_dict(self, state):
        pass

    def requests(self, ctx, stage):
        """No-grad forwards this objective needs: {key: (x, sigma)} for stage "teacher" (adapters off) or
        "student" (adapters on). The student stage runs after the teacher stage."""
        return {}

    def losses(self, ctx):
        raise NotImplementedError


class StepContext:
    """The quantities of one training step shared by all objectives, computed once.

    `x_t` is the noised batch at solver index i; `pred` the student's jump to the phase end (with gradient on a
    generator step); `target` the teacher's Euler walk followed by the no-grad student's jump to the same end.
    """

    def __init__(self, model, adapters_off, cond, latents, draws, solver, train_student, teacher_steps=1):
        self.model, self.adapters_off, self.cond, self.solver = model, adapters_off, cond, solver
        self.train_student = train_student
        self.latents = latents.astype("float32")
        self.batch = latents.shape[0]
        self.draws = draws
        index = np.minimum((draws["index"] * solver.num_timesteps).astype(np.int64), solver.num_timesteps - 1)
        self.path = solver.teacher_path(index, teacher_steps)  # [steps+1, B]
        sig = lambda idx: paddle.to_tensor(solver.sigmas[idx].astype(np.float32))
        self.sigma, self.sigma_end = sig(index), sig(solver.phase_end[index])
        self.path_sigmas = [sig(p) for p in self.path]
        self.phase_sigma = {k: sig(solver.index_in_phase(index, draws[k + "_u"])) for k in ("adv", "dmd", "reflow")}
        self.eps = {k: paddle.to_tensor(draws[k + "_eps"]) for k in ("adv", "dmd", "reflow")}
        noise = paddle.to_tensor(draws["noise"])
        s = per_sample(self.sigma, self.latents)
        self.x_t = (1 - s) * self.latents + s * noise
        self.results = {}
        self._pred = self._walk_end = None

    # -------------------------------------------------------------- forwards
    def velocity(self, x, sigma, adapters=True):
        """Transformer velocity at (x, sigma) with the adapters on (student) or off (teacher); float32."""
        cond = self.cond.tile(x.shape[0] // self.batch)
        pause = not paddle.is_grad_enabled() or not adapters
        with checkpointing_paused(self.model, pause), contextlib.nullcontext() if adapters else \
                self.adapters_off(self.model):
            out = self.model(x, timestep=sigma, **cond.kwargs(x.shape[0]))
        return out.astype("float32")

    def run_batched(self, requests, adapters):
        """Run {key: (x, sigma)} requests as one no-grad forward (one batch per distinct request)."""
        if not requests:
            return
        keys = list(requests)
        xs = paddle.concat([requests[k][0] for k in keys], axis=0)
        sigmas = paddle.concat([requests[k][1] for k in keys], axis=0)
        with paddle.no_grad():
            out = self.velocity(xs.detach(), sigmas, adapters)
        for k, v in zip(keys, paddle.split(out, len(keys), axis=0)):
            self.results[k] = v

    # -------------------------------------------------------------- shared quantities
    @property
    def pred(self):
        """The student's jump from x_t to the phase end (gradient only on a generator step)."""
        if self._pred is None:
            if not self.train_student:
                v = self.results["core.pred"]
            else:
                v = self.velocity(self.x_t, self.sigma, adapters=True)
            self._pred = jump(self.x_t, v, self.sigma, self.sigma_end)
        return self._pred

    @property
    def target(self):
        return self.results["core.target"]

    def core_requests(self, stage, need_target):
        reqs = {}
        if stage == "teacher" and need_target:
            reqs["core.teacher"] = (self.x_t, self.path_sigmas[0])
        if stage == "student":
            if need_target:
                self._walk_end = self._teacher_walk()
                reqs["core.target_student"] = (self._walk_end, self.path_sigmas[-1])
            if not self.train_student:
                reqs["core.pred"] = (self.x_t, self.sigma)
        return reqs

    def _teacher_walk(self):
        """x after the teacher's Euler steps along `path` (the first velocity came from the batched stage)."""
        x = jump(self.x_t, self.results["core.teacher"], self.path_sigmas[0], self.path_sigmas[1])
        for a, b in zip(self.path_sigmas[1:-1], self.path_sigmas[2:]):
            with paddle.no_grad():
                x = jump(x, self.velocity(x, a, adapters=False), a, b)
        return x

    def finish_target(self):
        v = self.results.pop("core.target_student")
        self.results["core.target"] = jump(self._walk_end, v, self.path_sigmas[-1], self.sigma_end).detach()

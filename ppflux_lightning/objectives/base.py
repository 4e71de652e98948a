"""What every objective shares: the registry, the per-sample random draws, and the step context.

An objective class declares, in one place: its config `defaults` (the schema is built from them), its random
`streams` ({local name: GAUSSIAN | UNIFORM}, drawn per sample only when the objective is enabled), its optimizer
`group` ("generator" trains the student's LoRA, "discriminator" the D heads), the no-grad forwards it needs (batched
with the other objectives' requests of the same adapter state), and returns a dict of named, already weighted
losses. The recipe and the trainer only sum them: neither has objective-specific code.
"""

import contextlib
import zlib

import numpy as np
import paddle
import paddle.nn.functional as F

from ..config import Registry
from ..utils.errors import ConfigError

OBJECTIVES = Registry("objective")

GAUSSIAN, UNIFORM = "gaussian", "uniform"
# The recipe's own streams: the noise of x_t and the solver index.
CORE_STREAMS = {"noise": GAUSSIAN, "index": UNIFORM}


def stream_id(name):
    """A stream's RNG key from its name: adding or removing a stream never shifts another stream's numbers."""
    return zlib.crc32(name.encode("utf-8"))


def sample_draws(seed, step, sample_ids, shape, streams=None):
    """Per-sample random numbers from (seed, step, global sample index, stream): the same on 1 or N processes.

    `streams` maps names to GAUSSIAN (arrays of `shape` per sample) or UNIFORM (one number in [0, 1) per sample);
    default `CORE_STREAMS`. Returns {name: numpy array with the samples stacked on axis 0}."""
    streams = CORE_STREAMS if streams is None else streams
    out = {}
    for name, kind in streams.items():
        if kind not in (GAUSSIAN, UNIFORM):
            raise ValueError(f"stream {name!r} has unknown kind {kind!r}")
        values = []
        for sid in sample_ids:
            rng = np.random.default_rng([int(seed), int(step), int(sid), stream_id(name)])
            values.append(rng.standard_normal(tuple(shape), dtype=np.float32) if kind == GAUSSIAN else rng.random())
        out[name] = np.stack(values) if kind == GAUSSIAN else np.asarray(values)
    return out


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
    """Base class. A subclass registered under a config section name sets `defaults` (every key of its section,
    `enabled` and `weight` included), `streams`, `name`, `group`, and implements `losses(ctx)`."""

    name = "objective"
    group = "generator"
    needs_target = False  # the phased-consistency target (teacher step + student jump) is computed for it
    teacher_steps = 1     # teacher Euler steps of that target (the largest over the objectives is used)
    defaults = {"enabled": True, "weight": 1.0}
    streams = {}          # {local name: GAUSSIAN | UNIFORM}; the draws are named "<section>.<local name>"
    section = None        # the config section that built this objective (set by `build`)

    def __init__(self, weight, enabled=True):
        self.weight = float(weight)
        self.enabled = bool(enabled)

    @classmethod
    def settings(cls, section, cfg):
        """`cfg` on top of the class defaults; an unknown key is a ConfigError naming it."""
        unknown = sorted(set(cfg) - set(cls.defaults))
        if unknown:
            raise ConfigError(f"unknown key objectives.{section}.{unknown[0]} (valid: {', '.join(cls.defaults)})")
        return {**cls.defaults, **cfg}

    @classmethod
    def build(cls, model, section, **cfg):
        """The objectives one config section makes (most make one; the adversarial section makes two)."""
        obj = cls(**cls.settings(section, cfg))
        obj.section = section
        return [obj]

    def stream(self, key):
        """The global name of this objective's stream `key`."""
        return f"{self.section}.{key}"

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

    With i the solver index and `e = sigmas_prev[start(i)]` its phase end: `x_t` is the batch noised to
    `sigmas[i]`; `pred = x_t + (e - sigmas[i]) v_student(x_t, sigmas[i])` (with gradient on a generator step);
    `target` the teacher's Euler walk from x_t (one step: to `sigmas_prev[i]`) followed by the no-grad student's jump
    from there to e.
    """

    def __init__(self, model, adapters_off, cond, latents, draws, solver, train_student, teacher_steps=1):
        self.model, self.adapters_off, self.cond, self.solver = model, adapters_off, cond, solver
        self.train_student = train_student
        self.latents = latents.astype("float32")
        self.batch = latents.shape[0]
        self.draws = draws
        self.index = solver.index(draws["index"])
        self.start = solver.phase_start[self.index]  # grid position of the phase end
        self.path = solver.teacher_path(self.index, teacher_steps)  # grid positions [steps+1, B]
        self.sigma, self.sigma_end = self.grid_sigma(self.index + 1), self.grid_sigma(self.start)
        self.path_sigmas = [self.grid_sigma(p) for p in self.path]
        s = per_sample(self.sigma, self.latents)
        self.x_t = (1 - s) * self.latents + s * self.gaussian("noise")
        self.results = {}
        self._pred = self._walk_end = None
        self._in_phase = {}

    # -------------------------------------------------------------- draws
    def grid_sigma(self, positions):
        """Per-sample sigmas `[B]` (float32) at solver grid positions."""
        return paddle.to_tensor(self.solver.grid[np.asarray(positions)].astype(np.float32))

    def gaussian(self, stream):
        return paddle.to_tensor(self.draws[stream])

    def in_phase(self, stream):
        """(grid positions, sigmas) drawn inside each sample's phase from the uniform `stream`: the reference's
        `sigmas_prev[randint(start(i), start(i) + N // M)]`."""
        if stream not in self._in_phase:
            pos = self.solver.position_in_phase(self.index, self.draws[stream])
            self._in_phase[stream] = (pos, self.grid_sigma(pos))
        return self._in_phase[stream]

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

"""Adversarial loss: real = the consistency target, fake = the student's jump, both re-noised into the phase and
judged by per-block heads on the frozen teacher's features (adapters off).

x_real = renoise(target, eps_real, s_a, e), x_fake = renoise(pred, eps_fake, s_a, e), s_a = sigmas_prev[j] drawn in
the phase; `noise: independent` (the reference) draws eps_real and eps_fake separately, `noise: shared` uses one.
discriminator step: D heads minimise `discriminator_loss` on no-grad features (real and fake in one forward);
generator step: the LoRA minimises weight * `generator_loss`, the gradient flowing through the frozen teacher.
"""

import paddle

from .base import GAUSSIAN, OBJECTIVES, UNIFORM, Objective, checkpointing_paused, renoise
from .discriminator import LOSSES, Discriminator, discriminator_loss, generator_loss


def teacher_features(ctx, x, sigma):
    """Image-token features after every teacher block (adapters off).

    With gradient checkpointing on and gradients wanted, each block is recomputed by a function that switches the
    adapters off itself: the model's own recompute would rerun the block in backward with the adapters back on."""
    model = ctx.model
    kwargs = ctx.cond.tile(x.shape[0] // ctx.batch).kwargs(x.shape[0])
    recomputed = model.gradient_checkpointing and model.training and paddle.is_grad_enabled()
    with checkpointing_paused(model), ctx.adapters_off(model):
        if not recomputed:
            return model.block_features(x, timestep=sigma, **kwargs)
        hidden, context, temb, rope = model.embed(x, timestep=sigma, **kwargs)
    from paddle.distributed.fleet.utils import recompute

    def teacher(block):
        def run(*args):
            with checkpointing_paused(model), ctx.adapters_off(model):
                return block(*args)

        return run

    features = []
    for block in model.transformer_blocks:
        hidden, context = recompute(teacher(block), hidden, context, temb, rope, use_reentrant=False)
        features.append(hidden)
    n_txt = context.shape[1]
    joint = paddle.concat([context, hidden], axis=1)
    for block in model.single_transformer_blocks:
        joint = recompute(teacher(block), joint, temb, rope, use_reentrant=False)
        features.append(joint[:, n_txt:])
    return features


NOISE = ("independent", "shared")


class _AdversarialBase(Objective):
    needs_target = True

    def __init__(self, discriminator, weight, loss, noise, enabled=True):
        super().__init__(weight, enabled)
        if loss not in LOSSES:
            raise ValueError(f"objectives.adversarial.loss must be hinge, lsgan or wgan, got {loss!r}")
        if noise not in NOISE:
            raise ValueError(f"objectives.adversarial.noise must be one of {NOISE}, got {noise!r}")
        self.discriminator, self.loss, self.noise = discriminator, loss, noise

    def _noisy(self, ctx, x, real=False):
        eps = self.stream("real_eps" if real and self.noise == "independent" else "fake_eps")
        return renoise(x, ctx.gaussian(eps), ctx.in_phase(self.stream("u"))[1], ctx.sigma_end)


class DiscriminatorStep(_AdversarialBase):
    """Trains the D heads (its own AdamW: lr, betas with beta1 = 0, weight decay)."""

    name = "adversarial_d"
    group = "discriminator"

    def __init__(self, discriminator, loss, noise, lr, betas, weight_decay, enabled=True):
        super().__init__(discriminator, 1.0, loss, noise, enabled)
        self.settings = {"lr": float(lr), "betas": [float(b) for b in betas], "weight_decay": float(weight_decay)}

    def parameters(self):
        return self.discriminator.parameters()

    def optimizer_settings(self):
        return dict(self.settings)

    def state_dict(self):
        return {k: v.astype("float32") for k, v in self.discriminator.state_dict().items()}

    def set_state_dict(self, state):
        own = self.discriminator.state_dict()
        self.discriminator.set_state_dict(
            {k: paddle.to_tensor(v).astype(own[k].dtype) if k in own else v for k, v in state.items()})

    def losses(self, ctx):
        both = paddle.concat([self._noisy(ctx, ctx.target, real=True), self._noisy(ctx, ctx.pred.detach())], axis=0)
        sigma = ctx.in_phase(self.stream("u"))[1]
        with paddle.no_grad():
            feats = teacher_features(ctx, both, paddle.concat([sigma, sigma], axis=0))
        logits = self.discriminator([f.detach() for f in feats])
        real = [x[: ctx.batch] for x in logits]
        fake = [x[ctx.batch :] for x in logits]
        return {"adversarial_d": discriminator_loss(real, fake, self.loss)}


class GeneratorAdversarial(_AdversarialBase):
    name = "adversarial_g"
    group = "generator"

    def losses(self, ctx):
        feats = teacher_features(ctx, self._noisy(ctx, ctx.pred), ctx.in_phase(self.stream("u"))[1])
        return {"adversarial_g": self.weight * generator_loss(self.discriminator(feats), self.loss)}


@OBJECTIVES.register(name="adversarial")
class Adversarial(Objective):
    """The D step and the G term sharing one discriminator sized from the model (one head per block), its
    parameters in the model's dtype (bf16 heads with fp32 master weights in a bf16 run, as the reference's O2)."""

    defaults = {
        "enabled": True,
        "weight": 0.1,             # generator loss weight (the D loss is not weighted)
        "loss": "hinge",           # hinge | lsgan | wgan
        "noise": "independent",    # independent (real and fake re-noised with separate draws) | shared
        "lr": 1.0e-5,              # discriminator head optimizer
        "betas": [0.0, 0.999],
        "weight_decay": 1.0e-3,
        "head_channels": 0,        # hidden width of each head; 0 = the feature width
    }
    streams = {"u": UNIFORM, "real_eps": GAUSSIAN, "fake_eps": GAUSSIAN}

    @classmethod
    def build(cls, model, section, **cfg):
        c = cls.settings(section, cfg)
        mc = model.config
        disc = Discriminator(mc.inner_dim, mc.num_layers + mc.num_single_layers, int(c["head_channels"]))
        if model.dtype != disc.heads[0].conv1.weight.dtype:
            disc.to(dtype=model.dtype)
        objs = [DiscriminatorStep(disc, c["loss"], c["noise"], c["lr"], c["betas"], c["weight_decay"], c["enabled"]),
                GeneratorAdversarial(disc, c["weight"], c["loss"], c["noise"], c["enabled"])]
        for o in objs:
            o.section = section
        return objs

"""Adversarial loss: real = the consistency target, fake = the student's jump, both re-noised into the phase and
judged by per-block heads on the frozen teacher's features (adapters off).

x_real = renoise(target, eps, s_a, s_end), x_fake = renoise(pred, eps, s_a, s_end)  (same eps and s_a)
discriminator step: D heads minimise `discriminator_loss` on no-grad features (real and fake in one forward);
generator step: the LoRA minimises weight * `generator_loss`, the gradient flowing through the frozen teacher.
"""

import paddle

from .base import OBJECTIVES, Objective, checkpointing_paused, renoise
from .discriminator import Discriminator, discriminator_loss, generator_loss


def teacher_features(ctx, x, sigma):
    """Image-token features after every teacher block (adapters off).

    With gradient checkpointing on and gradients wanted, each block is recomputed by a function that switches the
    adapters off itself: the model's own recompute would rerun the block in backward with the adapters back on."""
    model = ctx.model
    kwargs = ctx.cond.tile(x.shape[0] // ctx.batch).kwargs(x.shape[0])
    call = None
    if model.gradient_checkpointing and model.training and paddle.is_grad_enabled():
        from paddle.distributed.fleet.utils import recompute

        def call(block, *args):
            def teacher(*inputs):
                with checkpointing_paused(model), ctx.adapters_off(model):
                    return block(*inputs)

            return recompute(teacher, *args, use_reentrant=False)

    with checkpointing_paused(model), ctx.adapters_off(model):
        return model.block_features(x, timestep=sigma, call=call, **kwargs)


class _AdversarialBase(Objective):
    needs_target = True

    def __init__(self, discriminator, weight, loss, enabled=True):
        super().__init__(weight, enabled)
        if loss not in ("hinge", "lsgan", "wgan"):
            raise ValueError(f"objectives.adversarial.loss must be hinge, lsgan or wgan, got {loss!r}")
        self.discriminator, self.loss = discriminator, loss

    def _noisy(self, ctx, x):
        return renoise(x, ctx.eps["adv"], ctx.phase_sigma["adv"], ctx.sigma_end)


class DiscriminatorStep(_AdversarialBase):
    """Trains the D heads (its own AdamW: lr, betas with beta1 = 0)."""

    name = "adversarial_d"
    group = "discriminator"

    def __init__(self, discriminator, loss="hinge", lr=1e-5, betas=(0.0, 0.999), weight_decay=0.0, enabled=True):
        super().__init__(discriminator, 1.0, loss, enabled)
        self.settings = {"lr": float(lr), "betas": [float(b) for b in betas], "weight_decay": float(weight_decay)}

    def parameters(self):
        return self.discriminator.parameters()

    def optimizer_settings(self):
        return dict(self.settings)

    def state_dict(self):
        return self.discriminator.state_dict()

    def set_state_dict(self, state):
        self.discriminator.set_state_dict(state)

    def losses(self, ctx):
        both = paddle.concat([self._noisy(ctx, ctx.target), self._noisy(ctx, ctx.pred.detach())], axis=0)
        sigma = paddle.concat([ctx.phase_sigma["adv"]] * 2, axis=0)
        with paddle.no_grad():
            feats = teacher_features(ctx, both, sigma)
        logits = self.discriminator([f.detach() for f in feats])
        real = [x[: ctx.batch] for x in logits]
        fake = [x[ctx.batch :] for x in logits]
        return {"adversarial_d": discriminator_loss(real, fake, self.loss)}


class GeneratorAdversarial(_AdversarialBase):
    name = "adversarial_g"
    group = "generator"

    def losses(self, ctx):
        feats = teacher_features(ctx, self._noisy(ctx, ctx.pred), ctx.phase_sigma["adv"])
        return {"adversarial_g": self.weight * generator_loss(self.discriminator(feats), self.loss)}


@OBJECTIVES.register(name="adversarial")
class Adversarial:
    """The D step and the G term sharing one discriminator sized from the model (one head per block)."""

    @staticmethod
    def build(model, weight=0.1, enabled=True, loss="hinge", lr=1e-5, betas=(0.0, 0.999), weight_decay=0.0,
              head_channels=0):
        cfg = model.config
        disc = Discriminator(cfg.inner_dim, cfg.num_layers + cfg.num_single_layers, head_channels)
        return [DiscriminatorStep(disc, loss, lr, betas, weight_decay, enabled),
                GeneratorAdversarial(disc, weight, loss, enabled)]

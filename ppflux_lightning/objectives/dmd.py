"""Distribution matching (DMD2-style) with the teacher as the real score and the student itself as the fake score.

x_d  = renoise(sg(pred), eps, s_d, e), s_d drawn in the phase;  v_real = v_teacher(x_d, s_d), v_fake = v_student
normalizer "reference" (reference.md section 4):  coeff = v_real - v_fake,  n = mean|pred - v_real| + 1e-5
normalizer "x0" (ours): the same in x0 = x_d - s_d v space: coeff = x0_fake - x0_real, n = mean|pred - x0_real| + 1e-5
                        (coeff is s_d times the reference's; the normaliser compares latents with latents)
loss = weight * mean((pred - sg(pred - coeff / n))^2)  (per-sample n; its gradient w.r.t. pred is 2 coeff/n/numel)
Both scores are no-grad forwards batched with the other objectives' requests of the same adapter state.
"""

import paddle

from .base import GAUSSIAN, OBJECTIVES, UNIFORM, Objective, per_sample, renoise

NORMALIZERS = ("reference", "x0")


@OBJECTIVES.register(name="dmd")
class DMDLoss(Objective):
    name = "dmd"
    group = "generator"
    defaults = {
        "enabled": True,
        "weight": 0.01,
        "normalizer": "reference",  # reference (velocity coefficient, mean|pred - v_real|) | x0 (x0 space)
    }
    streams = {"u": UNIFORM, "eps": GAUSSIAN}

    def __init__(self, weight, enabled, normalizer):
        super().__init__(weight, enabled)
        if normalizer not in NORMALIZERS:
            raise ValueError(f"objectives.dmd.normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
        self.normalizer = normalizer

    def _noisy(self, ctx):
        if "dmd.x" not in ctx.results:
            sigma = ctx.in_phase(self.stream("u"))[1]
            ctx.results["dmd.x"] = renoise(ctx.pred.detach(), ctx.gaussian(self.stream("eps")), sigma, ctx.sigma_end)
        return ctx.results["dmd.x"]

    def requests(self, ctx, stage):
        key = "dmd.real" if stage == "teacher" else "dmd.fake"
        return {key: (self._noisy(ctx), ctx.in_phase(self.stream("u"))[1])}

    def losses(self, ctx):
        pred = ctx.pred
        v_real, v_fake = ctx.results["dmd.real"], ctx.results["dmd.fake"]
        with paddle.no_grad():
            if self.normalizer == "reference":
                coeff, real = v_real - v_fake, v_real
            else:
                x, s = ctx.results["dmd.x"], per_sample(ctx.in_phase(self.stream("u"))[1], pred)
                real = x - s * v_real
                coeff = (x - s * v_fake) - real
            norm = (pred.detach() - real).abs().mean(axis=list(range(1, pred.ndim)), keepdim=True) + 1e-5
            goal = pred.detach() - coeff / norm
        return {"dmd": self.weight * paddle.square(pred - goal).mean()}

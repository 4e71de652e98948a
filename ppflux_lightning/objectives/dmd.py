"""Distribution matching (DMD2-style) with the teacher as the real score and the student itself as the fake score.

x_d    = renoise(sg(pred), eps, s_d, s_end);  x0_real = x_d - s_d v_teacher(x_d),  x0_fake = x_d - s_d v_student(x_d)
grad   = (x0_fake - x0_real) / (mean|pred - x0_real| + 1e-5)        (per sample, no grad)
loss   = weight * mean((pred - sg(pred - grad))^2)                   (its gradient w.r.t. pred is 2 grad / numel)
Both scores are no-grad forwards batched with the other objectives' requests of the same adapter state.
"""

import paddle

from .base import OBJECTIVES, Objective, per_sample, renoise


@OBJECTIVES.register(name="dmd")
class DMDLoss(Objective):
    name = "dmd"
    group = "generator"

    def _noisy(self, ctx):
        if "dmd.x" not in ctx.results:
            ctx.results["dmd.x"] = renoise(ctx.pred.detach(), ctx.eps["dmd"], ctx.phase_sigma["dmd"], ctx.sigma_end)
        return ctx.results["dmd.x"]

    def requests(self, ctx, stage):
        key = "dmd.real" if stage == "teacher" else "dmd.fake"
        return {key: (self._noisy(ctx), ctx.phase_sigma["dmd"])}

    def losses(self, ctx):
        x, s = ctx.results["dmd.x"], per_sample(ctx.phase_sigma["dmd"], ctx.pred)
        pred = ctx.pred
        with paddle.no_grad():
            x0_real = x - s * ctx.results["dmd.real"]
            x0_fake = x - s * ctx.results["dmd.fake"]
            scale = (pred.detach() - x0_real).abs().mean(axis=list(range(1, pred.ndim)), keepdim=True) + 1e-5
            goal = pred.detach() - (x0_fake - x0_real) / scale
        return {"dmd": self.weight * paddle.square(pred - goal).mean()}

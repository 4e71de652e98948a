"""Reflow loss: re-noise the (detached) student jump into its phase, jump again, and land on the same point.

x_r  = renoise(sg(pred), eps, s_r, s_end) with s_r drawn inside the phase
loss = weight * d(x_r + (s_end - s_r) v_student(x_r, s_r), sg(pred)),  d = pseudo-huber or mean squared error.
"""

from .base import OBJECTIVES, Objective, distance, jump, renoise


@OBJECTIVES.register(name="reflow")
class ReflowLoss(Objective):
    name = "reflow"
    group = "generator"

    def __init__(self, weight=0.01, enabled=True, loss="huber", huber_c=0.001):
        super().__init__(weight, enabled)
        if loss not in ("huber", "l2"):
            raise ValueError(f"objectives.reflow.loss must be 'huber' or 'l2', got {loss!r}")
        self.loss, self.huber_c = loss, float(huber_c)

    def losses(self, ctx):
        anchor = ctx.pred.detach()
        sigma = ctx.phase_sigma["reflow"]
        x_r = renoise(anchor, ctx.eps["reflow"], sigma, ctx.sigma_end)
        again = jump(x_r, ctx.velocity(x_r, sigma, adapters=True), sigma, ctx.sigma_end)
        return {"reflow": self.weight * distance(again, anchor, self.loss, self.huber_c)}

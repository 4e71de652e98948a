"""Reflow loss: re-noise the (detached) student jump into its phase, let the student jump again, land on it.

With e the phase end and r drawn in the phase (grid position, sigma `sigmas_prev[r]`):
x_r   = renoise(sg(pred), eps, sigmas_prev[r], e)
again = x_r + (e - s) v_student(x_r, sigmas_prev[r]),  s = sigmas[r] (`step: reference`) or sigmas_prev[r]
        (`step: consistent`: the Euler step starts where x_r is)
loss  = weight * d(again, sg(pred)),  d = pseudo-huber or mean squared error.
The reference (reference.md section 4) evaluates the velocity at sigmas_prev[r] but steps from sigmas[r], one grid
position higher: it is the default because the published model was trained with it.
"""

from .base import GAUSSIAN, OBJECTIVES, UNIFORM, Objective, distance, jump, renoise

STEPS = ("reference", "consistent")


@OBJECTIVES.register(name="reflow")
class ReflowLoss(Objective):
    name = "reflow"
    group = "generator"
    defaults = {
        "enabled": True,
        "weight": 0.01,
        "loss": "huber",           # huber | l2
        "huber_c": 0.001,
        "step": "reference",       # reference (jump from sigmas[r]) | consistent (jump from sigmas_prev[r])
    }
    streams = {"u": UNIFORM, "eps": GAUSSIAN}

    def __init__(self, weight, enabled, loss, huber_c, step):
        super().__init__(weight, enabled)
        if loss not in ("huber", "l2"):
            raise ValueError(f"objectives.reflow.loss must be 'huber' or 'l2', got {loss!r}")
        if step not in STEPS:
            raise ValueError(f"objectives.reflow.step must be one of {STEPS}, got {step!r}")
        self.loss, self.huber_c, self.step = loss, float(huber_c), step

    def losses(self, ctx):
        anchor = ctx.pred.detach()
        pos, sigma = ctx.in_phase(self.stream("u"))
        x_r = renoise(anchor, ctx.gaussian(self.stream("eps")), sigma, ctx.sigma_end)
        start = ctx.grid_sigma(pos + 1) if self.step == "reference" else sigma
        again = jump(x_r, ctx.velocity(x_r, sigma, adapters=True), start, ctx.sigma_end)
        return {"reflow": self.weight * distance(again, anchor, self.loss, self.huber_c)}

"""Phased consistency loss (PCM): the student's jump to the phase end matches the teacher-anchored target.

With e = sigmas_prev[start(i)] (reference.md section 4):
pred   = x_t + (e - sigmas[i]) v_student(x_t, sigmas[i])
x_prev = x_t + (sigmas_prev[i] - sigmas[i]) v_teacher(x_t, sigmas[i])          (teacher_steps = 1, the reference)
target = x_prev + (e - sigmas_prev[i]) v_student(x_prev, sigmas_prev[i])       (no grad)
loss   = weight * d(pred, target),  d = pseudo-huber (c = huber_c) or mean squared error.
"""

from .base import OBJECTIVES, Objective, distance


@OBJECTIVES.register(name="consistency")
class ConsistencyLoss(Objective):
    name = "consistency"
    group = "generator"
    needs_target = True
    defaults = {
        "enabled": True,
        "weight": 1.0,
        "loss": "huber",           # huber | l2
        "huber_c": 0.001,
        "teacher_steps": 1,        # teacher Euler steps before the target jump (never past the phase end)
    }

    def __init__(self, weight, enabled, loss, huber_c, teacher_steps):
        super().__init__(weight, enabled)
        if loss not in ("huber", "l2"):
            raise ValueError(f"objectives.consistency.loss must be 'huber' or 'l2', got {loss!r}")
        if int(teacher_steps) < 1:
            raise ValueError(f"objectives.consistency.teacher_steps must be >= 1, got {teacher_steps}")
        self.loss, self.huber_c, self.teacher_steps = loss, float(huber_c), int(teacher_steps)

    def losses(self, ctx):
        return {"consistency": self.weight * distance(ctx.pred, ctx.target, self.loss, self.huber_c)}

"""Phased consistency loss (PCM): the student's jump to the phase end matches the teacher-anchored target.

pred   = x_t + (s_end - s_i) v_student(x_t, s_i)
target = x_j + (s_end - s_j) v_student(x_j, s_j)   (no grad),  x_j = teacher Euler walk from x_t to index j
loss   = weight * d(pred, target),  d = pseudo-huber (c = huber_c) or mean squared error.
"""

from .base import OBJECTIVES, Objective, distance


@OBJECTIVES.register(name="consistency")
class ConsistencyLoss(Objective):
    name = "consistency"
    group = "generator"
    needs_target = True

    def __init__(self, weight=1.0, enabled=True, loss="huber", huber_c=0.001, teacher_steps=1):
        super().__init__(weight, enabled)
        if loss not in ("huber", "l2"):
            raise ValueError(f"objectives.consistency.loss must be 'huber' or 'l2', got {loss!r}")
        if int(teacher_steps) < 1:
            raise ValueError(f"objectives.consistency.teacher_steps must be >= 1, got {teacher_steps}")
        self.loss, self.huber_c, self.teacher_steps = loss, float(huber_c), int(teacher_steps)

    def losses(self, ctx):
        return {"consistency": self.weight * distance(ctx.pred, ctx.target, self.loss, self.huber_c)}

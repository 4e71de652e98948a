"""`Linear`: `nn.Linear` whose CPU float32 eager forward is one `addmm` (bias added by the GEMM).

Paddle's `F.linear` on the CPU is a matmul followed by a separate broadcast add, and the add's backward reduces the
bias gradient with a slow generic kernel; `addmm` folds the bias into the GEMM and reduces its gradient faster. A
medium-size training step (768 wide, 1088 tokens) ran 0.90x the time, and a 768->2304 forward 0.84x (docs/models.md).
(Frozen layers, e.g. under LoRA, keep F.linear: `addmm`'s backward crashes when its bias needs no gradient.)
The parameters, their names and layout are nn.Linear's, so checkpoints and LoRA (which wraps any nn.Linear) are
unaffected.
"""

import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

ADDMM_MIN_OUTPUT = 1 << 16  # output elements from which addmm is used


def linear(x, weight, bias=None):
    """x @ weight + bias for x [..., in], weight [in, out] (Paddle layout)."""
    if bias is None or x.dtype != paddle.float32 or not paddle.in_dynamic_mode() or not x.place.is_cpu_place():
        return F.linear(x, weight, bias)
    if math.prod(x.shape[:-1]) * weight.shape[1] < ADDMM_MIN_OUTPUT:
        return F.linear(x, weight, bias)  # small layers: the two reshapes cost more than the add they save
    if bias.stop_gradient and paddle.is_grad_enabled() and not (x.stop_gradient and weight.stop_gradient):
        return F.linear(x, weight, bias)  # Paddle 3.3's addmm backward segfaults when `input` needs no gradient
    out = paddle.addmm(bias, x.reshape([-1, x.shape[-1]]), weight)
    return out.reshape(x.shape[:-1] + [weight.shape[1]])


class Linear(nn.Linear):
    """nn.Linear with the forward of `linear`."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)

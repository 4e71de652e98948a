"""FLUX-Lightning objectives: each loss against a hand computation, gradient routing, D/G alternation, batching,
and a few optimizer steps lowering the consistency loss on a tiny model."""

from types import SimpleNamespace

import numpy as np
import paddle
import pytest
from train_fixtures import tiny_config

from ppflux_lightning.lora import add_lora, lora_disabled, lora_parameters
from ppflux_lightning.models.flux_transformer import FluxTransformer2DModel
from ppflux_lightning.objectives import Conditioning, DistillationRecipe, EulerSolver, StepContext, sample_draws
from ppflux_lightning.objectives.base import distance, jump, renoise
from ppflux_lightning.objectives.consistency import ConsistencyLoss
from ppflux_lightning.objectives.discriminator import (
    DiscriminatorHead,
    discriminator_loss,
    generator_loss,
    group_count,
)
from ppflux_lightning.objectives.dmd import DMDLoss
from ppflux_lightning.objectives.reflow import ReflowLoss
from ppflux_lightning.utils.errors import ConfigError

T = paddle.to_tensor


def full_objectives(**enabled):
    cfg = {"solver": {"num_timesteps": 20, "num_phases": 4},
           "consistency": {"enabled": True, "weight": 1.0, "loss": "huber", "huber_c": 0.001, "teacher_steps": 1},
           "adversarial": {"enabled": True, "weight": 0.1, "loss": "hinge", "lr": 1e-5, "betas": [0.0, 0.999]},
           "dmd": {"enabled": True, "weight": 0.01},
           "reflow": {"enabled": True, "weight": 0.01, "loss": "huber", "huber_c": 0.001}}
    for name, on in enabled.items():
        cfg[name]["enabled"] = on
    return cfg


@pytest.fixture(scope="module")
def tiny():
    """A tiny FLUX with a randomised LoRA (student != teacher), a batch of 2 at a 4x4 packed grid."""
    paddle.seed(0)
    model = FluxTransformer2DModel(tiny_config())
    add_lora(model, 4, 4)
    for p in lora_parameters(model):
        p.set_value(paddle.randn(p.shape) * 0.2)
    cfg = model.config
    h = w = 4
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img_ids = T(np.stack([np.zeros_like(rows), rows, cols], -1).reshape(-1, 3).astype("float32"))
    cond = Conditioning(paddle.randn([2, 5, cfg.joint_attention_dim]), paddle.randn([2, cfg.pooled_projection_dim]),
                        img_ids, paddle.zeros([5, 3]), 3.5)
    latents = paddle.randn([2, h * w, cfg.in_channels])
    solver = EulerSolver(np.linspace(0.05, 1.0, 20), num_phases=4)
    return SimpleNamespace(model=model, cond=cond, latents=latents, solver=solver)


def draws_for(tiny, step=1):
    return sample_draws(0, step, [10, 11], tiny.latents.shape[1:])


# ----------------------------------------------------------------- distances and formulas
def test_huber_and_l2_by_hand():
    pred, target = T([[0.0, 0.3], [-0.2, 1.0]]), T([[0.0, 0.0], [0.2, 0.5]])
    d = np.array([0.0, 0.3, -0.4, 0.5])
    c = 0.1
    assert float(distance(pred, target, "huber", c)) == pytest.approx(np.mean(np.sqrt(d**2 + c**2) - c), rel=1e-6)
    assert float(distance(pred, target, "l2", c)) == pytest.approx(np.mean(d**2), rel=1e-6)
    with pytest.raises(ValueError, match="'l1'"):
        distance(pred, target, "l1", c)


def test_renoise_and_jump_by_hand():
    x, eps = T([[1.0, -2.0]]), T([[0.5, 0.5]])
    out = renoise(x, eps, T([0.6]), T([0.2]))
    expect = ((1 - 0.6) * np.array([1.0, -2.0]) + (0.6 - 0.2) * 0.5) / (1 - 0.2)
    np.testing.assert_allclose(out.numpy()[0], expect, rtol=1e-6)
    np.testing.assert_allclose(jump(x, eps, T([0.6]), T([0.2])).numpy()[0], [1.0 - 0.2, -2.0 - 0.2], rtol=1e-6)


def test_gan_losses_by_hand():
    real = [T([[0.5, 2.0]]), T([[-1.0, 0.0]])]
    fake = [T([[-2.0, 0.5]]), T([[0.0, 1.0]])]
    r, f = [x.numpy() for x in real], [x.numpy() for x in fake]
    hinge = np.mean([np.maximum(0, 1 - a).mean() + np.maximum(0, 1 + b).mean() for a, b in zip(r, f)])
    lsgan = np.mean([((a - 1) ** 2).mean() + (b**2).mean() for a, b in zip(r, f)])
    wgan = np.mean([b.mean() - a.mean() for a, b in zip(r, f)])
    assert float(discriminator_loss(real, fake, "hinge")) == pytest.approx(hinge, rel=1e-6)
    assert float(discriminator_loss(real, fake, "lsgan")) == pytest.approx(lsgan, rel=1e-6)
    assert float(discriminator_loss(real, fake, "wgan")) == pytest.approx(wgan, rel=1e-6)
    assert float(generator_loss(fake, "hinge")) == pytest.approx(-np.mean([b.mean() for b in f]), rel=1e-6)
    assert float(generator_loss(fake, "lsgan")) == pytest.approx(np.mean([((b - 1) ** 2).mean() for b in f]), rel=1e-6)


def test_consistency_loss_by_hand():
    ctx = SimpleNamespace(pred=T([[0.1, 0.2]]), results={"core.target": T([[0.0, 0.5]])})
    out = ConsistencyLoss(weight=2.0, loss="huber", huber_c=0.01).losses(
        SimpleNamespace(pred=ctx.pred, target=ctx.results["core.target"]))
    d = np.array([0.1, -0.3])
    assert float(out["consistency"]) == pytest.approx(2.0 * np.mean(np.sqrt(d**2 + 1e-4) - 0.01), rel=1e-6)


def test_dmd_loss_and_gradient_by_hand():
    rng = np.random.default_rng(0)
    pred_np, x_np, vr, vf = (rng.standard_normal((2, 3, 4)).astype("float32") for _ in range(4))
    s = np.array([0.3, 0.7], dtype="float32")
    pred = T(pred_np, stop_gradient=False)
    ctx = SimpleNamespace(pred=pred, phase_sigma={"dmd": T(s)},
                          results={"dmd.x": T(x_np), "dmd.real": T(vr), "dmd.fake": T(vf)})
    loss = DMDLoss(weight=0.5).losses(ctx)["dmd"]
    x0_real, x0_fake = x_np - s[:, None, None] * vr, x_np - s[:, None, None] * vf
    scale = np.abs(pred_np - x0_real).mean(axis=(1, 2), keepdims=True) + 1e-5
    grad = (x0_fake - x0_real) / scale
    assert float(loss) == pytest.approx(0.5 * np.mean(grad**2), rel=1e-5)
    loss.backward()
    np.testing.assert_allclose(pred.grad.numpy(), 0.5 * 2 * grad / grad.size, rtol=1e-5, atol=1e-8)


def test_reflow_loss_by_hand():
    pred = T([[[0.2, -0.4]]])
    v = T([[[1.0, 2.0]]])
    ctx = SimpleNamespace(pred=pred, phase_sigma={"reflow": T([0.5])}, sigma_end=T([0.25]),
                          eps={"reflow": T([[[0.1, 0.3]]])}, velocity=lambda x, s, adapters: v)
    out = ReflowLoss(weight=3.0, loss="l2").losses(ctx)["reflow"]
    x_r = ((1 - 0.5) * np.array([0.2, -0.4]) + 0.25 * np.array([0.1, 0.3])) / 0.75
    again = x_r + (0.25 - 0.5) * np.array([1.0, 2.0])
    assert float(out) == pytest.approx(3.0 * np.mean((again - np.array([0.2, -0.4])) ** 2), rel=1e-6)


# ----------------------------------------------------------------- discriminator head
def test_head_equals_the_reference_grid_head_at_any_shape():
    """The token head equals a 1x1-conv + GroupNorm head on the 2-D grid (the reference layout) for any h x w."""
    paddle.seed(1)
    channels = 48
    head = DiscriminatorHead(channels)
    assert group_count(channels) == 24 and group_count(3072) == 32 and group_count(7) == 7
    for h, w in ((4, 4), (3, 5)):
        tokens = paddle.randn([2, h * w, channels])
        grid = tokens.reshape([2, h, w, channels]).transpose([0, 3, 1, 2])

        def conv(layer, x):
            weight = layer.weight.transpose([1, 0]).unsqueeze(-1).unsqueeze(-1)  # [out, in, 1, 1]
            return paddle.nn.functional.conv2d(x, weight, layer.bias)

        def gn(norm, x):
            return paddle.nn.functional.group_norm(x, norm.norm._num_groups, norm.norm._epsilon,
                                                   norm.norm.weight, norm.norm.bias)

        act = lambda x: paddle.nn.functional.leaky_relu(x, 0.01)
        hid = act(gn(head.norm1, conv(head.conv1, grid)))
        hid = act(gn(head.norm2, conv(head.conv2, hid)))
        ref = conv(head.conv_out, hid + grid)[:, 0].reshape([2, h * w])
        np.testing.assert_allclose(head(tokens).numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- the recipe on a tiny model
def test_dg_alternation_and_groups(tiny):
    recipe = DistillationRecipe(tiny.model, full_objectives(), tiny.solver)
    assert [recipe.group_at(s) for s in range(4)] == ["discriminator", "generator"] * 2
    names = {o.name: o.group for o in recipe.objectives}
    assert names == {"consistency": "generator", "adversarial_d": "discriminator", "adversarial_g": "generator",
                     "dmd": "generator", "reflow": "generator"}
    plain = DistillationRecipe(tiny.model, full_objectives(adversarial=False), tiny.solver)
    assert [plain.group_at(s) for s in range(3)] == ["generator"] * 3
    with pytest.raises(ConfigError, match="no generator objective"):
        DistillationRecipe(tiny.model, full_objectives(consistency=False, adversarial=False, dmd=False, reflow=False),
                           tiny.solver)


def _grads(params):
    return [p.grad is not None and float(p.grad.abs().sum()) > 0 for p in params]


def test_gradients_reach_only_the_lora_and_only_the_heads_for_the_d_loss(tiny):
    recipe = DistillationRecipe(tiny.model, full_objectives(), tiny.solver)
    lora_ids = {id(p) for p in lora_parameters(tiny.model)}
    base = [p for p in tiny.model.parameters() if id(p) not in lora_ids]
    heads = recipe.parameters("discriminator")
    for group in ("generator", "discriminator"):
        losses = recipe.losses(tiny.cond, tiny.latents, draws_for(tiny), group)
        paddle.add_n(list(losses.values())).backward()
        assert not any(p.grad is not None for p in base), f"{group} step reached frozen weights"
        lora_hit = _grads(lora_parameters(tiny.model))
        head_hit = _grads(heads)
        if group == "generator":
            assert set(losses) == {"consistency", "adversarial_g", "dmd", "reflow"}
            assert all(lora_hit)
        else:
            assert set(losses) == {"adversarial_d"}
            assert not any(lora_hit) and all(head_hit)
        for p in lora_parameters(tiny.model) + heads:
            p.clear_gradient(set_to_zero=False)


def test_target_and_pred_match_a_direct_computation(tiny):
    """The context's batched forwards give the recipe's formulas computed one forward at a time."""
    draws = draws_for(tiny, step=3)
    ctx = StepContext(tiny.model, lora_disabled, tiny.cond, tiny.latents, draws, tiny.solver, train_student=True)
    recipe = DistillationRecipe(tiny.model, full_objectives(adversarial=False, reflow=False), tiny.solver)
    for stage, adapters in (("teacher", False), ("student", True)):
        req = ctx.core_requests(stage, True)
        req.update(DMDLoss().requests(ctx, stage))
        ctx.run_batched(req, adapters)
    ctx.finish_target()
    losses = recipe.losses(tiny.cond, tiny.latents, draws, "generator")

    m, c = tiny.model, tiny.cond
    kw = c.kwargs(2)
    idx = np.minimum((draws["index"] * 20).astype(int), 19)
    s = tiny.solver.sigmas
    end, prev = tiny.solver.phase_end[idx], np.maximum(idx - 1, tiny.solver.phase_end[idx])
    col = lambda a: T(a.astype("float32")).reshape([-1, 1, 1])
    x_t = (1 - col(s[idx])) * tiny.latents + col(s[idx]) * T(draws["noise"])
    with paddle.no_grad():
        v_s = m(x_t, timestep=T(s[idx].astype("float32")), **kw)
        with lora_disabled(m):
            v_t = m(x_t, timestep=T(s[idx].astype("float32")), **kw)
        x_prev = x_t + col(s[prev] - s[idx]) * v_t
        v_p = m(x_prev, timestep=T(s[prev].astype("float32")), **kw)
    pred = x_t + col(s[end] - s[idx]) * v_s
    target = x_prev + col(s[end] - s[prev]) * v_p
    np.testing.assert_allclose(ctx.pred.numpy(), pred.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ctx.target.numpy(), target.numpy(), rtol=1e-4, atol=1e-5)
    huber = np.mean(np.sqrt((pred.numpy() - target.numpy()) ** 2 + 1e-6) - 1e-3)
    assert float(losses["consistency"]) == pytest.approx(huber, rel=1e-4)


def test_multi_step_teacher_target_walks_further(tiny):
    draws = draws_for(tiny, step=5)
    one = DistillationRecipe(tiny.model, full_objectives(adversarial=False, dmd=False, reflow=False), tiny.solver)
    cfg = full_objectives(adversarial=False, dmd=False, reflow=False)
    cfg["consistency"]["teacher_steps"] = 3
    three = DistillationRecipe(tiny.model, cfg, tiny.solver)
    a = float(one.losses(tiny.cond, tiny.latents, draws, "generator")["consistency"])
    b = float(three.losses(tiny.cond, tiny.latents, draws, "generator")["consistency"])
    assert a != b and np.isfinite(b)


def test_a_few_steps_lower_the_consistency_loss(tiny):
    paddle.seed(3)
    model = FluxTransformer2DModel(tiny_config())
    add_lora(model, 4, 4)
    cfg = full_objectives(adversarial=False, dmd=False, reflow=False)
    cfg["consistency"]["loss"] = "l2"
    recipe = DistillationRecipe(model, cfg, tiny.solver)
    opt = paddle.optimizer.AdamW(learning_rate=1e-2, parameters=lora_parameters(model), weight_decay=0.0)
    draws = draws_for(tiny, step=2)
    history = []
    for _ in range(10):
        loss = recipe.losses(tiny.cond, tiny.latents, draws, "generator")["consistency"]
        loss.backward()
        opt.step()
        opt.clear_grad()
        history.append(float(loss))
    assert history[-1] < 0.7 * history[0], history


def test_gradient_checkpointing_gives_the_same_gradients(tiny):
    """Recomputed blocks must see the adapter state of their forward (teacher features are computed adapters-off)."""
    recipe = DistillationRecipe(tiny.model, full_objectives(), tiny.solver)
    draws = draws_for(tiny, step=7)
    grads = []
    for checkpointing in (False, True):
        tiny.model.enable_gradient_checkpointing(checkpointing)
        tiny.model.train()
        try:
            losses = recipe.losses(tiny.cond, tiny.latents, draws, "generator")
            paddle.add_n(list(losses.values())).backward()
        finally:
            tiny.model.enable_gradient_checkpointing(False)
        grads.append([p.grad.numpy().copy() for p in lora_parameters(tiny.model)])
        for p in lora_parameters(tiny.model) + recipe.parameters("discriminator"):
            p.clear_gradient(set_to_zero=False)
    for a, b in zip(*grads):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7)

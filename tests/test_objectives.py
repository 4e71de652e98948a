"""FLUX-Lightning objectives against reference.md section 4: each loss and the D head on small tensors against numpy
computations of the published formulas, real/fake noise, gradient routing, D/G alternation, batching, and a few
optimizer steps lowering the consistency loss on a tiny model."""

from types import SimpleNamespace

import numpy as np
import paddle
import pytest
from train_fixtures import tiny_config

from ppflux_lightning.lora import add_lora, lora_disabled, lora_parameters
from ppflux_lightning.models.flux_transformer import FluxTransformer2DModel
from ppflux_lightning.objectives import (
    GAUSSIAN,
    OBJECTIVES,
    UNIFORM,
    Conditioning,
    DistillationRecipe,
    EulerSolver,
    Objective,
    StepContext,
    config_defaults,
    sample_draws,
)
from ppflux_lightning.objectives.adversarial import DiscriminatorStep
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
    cfg = config_defaults()
    cfg["solver"] = {"num_timesteps": 20, "num_phases": 4}
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
    solver = EulerSolver(np.linspace(0.01, 1.0, 21), num_phases=4)
    return SimpleNamespace(model=model, cond=cond, latents=latents, solver=solver)


def draws_for(tiny, step=1, recipe=None):
    recipe = recipe or DistillationRecipe(tiny.model, full_objectives(), tiny.solver)
    return recipe.draws(0, step, [10, 11], tiny.latents.shape[1:])


def build(cls, **cfg):
    """One objective from its class defaults with `cfg` on top (sections that build one objective)."""
    return cls.build(None, cls.name, **cfg)[0]


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


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_gan_losses_are_the_reference_formulas():
    real = [T([[0.5, 2.0]]), T([[-1.0, 0.0]])]
    fake = [T([[-2.0, 0.5]]), T([[0.0, 1.5]])]
    r, f = [x.numpy() for x in real], [x.numpy() for x in fake]
    relu = lambda x: np.maximum(0, x)
    # hinge ("pcm"): D mean relu(1 + fake) + mean relu(1 - real); G mean relu(1 - fake) (saturating), per head
    hinge_d = np.mean([relu(1 + b).mean() + relu(1 - a).mean() for a, b in zip(r, f)])
    hinge_g = np.mean([relu(1 - b).mean() for b in f])
    # lsgan with a sigmoid: D mse(sigmoid(real), 1) + mse(sigmoid(fake), 0); G mse(sigmoid(fake), 1)
    lsgan_d = np.mean([((_sigmoid(a) - 1) ** 2).mean() + (_sigmoid(b) ** 2).mean() for a, b in zip(r, f)])
    lsgan_g = np.mean([((_sigmoid(b) - 1) ** 2).mean() for b in f])
    wgan_d = np.mean([b.mean() - a.mean() for a, b in zip(r, f)])
    wgan_g = np.mean([-b.mean() for b in f])
    for kind, d, g in (("hinge", hinge_d, hinge_g), ("lsgan", lsgan_d, lsgan_g), ("wgan", wgan_d, wgan_g)):
        assert float(discriminator_loss(real, fake, kind)) == pytest.approx(d, rel=1e-6), kind
        assert float(generator_loss(fake, kind)) == pytest.approx(g, rel=1e-6), kind


def test_hinge_generator_loss_saturates_above_one():
    fake = T([[2.0, 0.5]], stop_gradient=False)
    generator_loss([fake], "hinge").backward()
    np.testing.assert_allclose(fake.grad.numpy(), [[0.0, -0.5]])  # d/df mean relu(1 - f): 0 above 1, -1/n below


def test_consistency_loss_by_hand():
    pred, target = T([[0.1, 0.2]]), T([[0.0, 0.5]])
    out = build(ConsistencyLoss, weight=2.0, loss="huber", huber_c=0.01).losses(
        SimpleNamespace(pred=pred, target=target))
    d = np.array([0.1, -0.3])
    assert float(out["consistency"]) == pytest.approx(2.0 * np.mean(np.sqrt(d**2 + 1e-4) - 0.01), rel=1e-6)


def _dmd_case(normalizer):
    rng = np.random.default_rng(0)
    pred_np, x_np, vr, vf = (rng.standard_normal((2, 3, 4)).astype("float32") for _ in range(4))
    s = np.array([0.3, 0.7], dtype="float32")
    pred = T(pred_np, stop_gradient=False)
    loss_fn = build(DMDLoss, weight=0.5, normalizer=normalizer)
    ctx = SimpleNamespace(pred=pred, in_phase=lambda stream: (None, T(s)),
                          results={"dmd.x": T(x_np), "dmd.real": T(vr), "dmd.fake": T(vf)})
    loss = loss_fn.losses(ctx)["dmd"]
    loss.backward()
    return loss, pred.grad.numpy(), pred_np, x_np, vr, vf, s[:, None, None]


def test_dmd_reference_coefficient_and_normaliser_by_hand():
    loss, grad, pred, _, v_real, v_fake, _ = _dmd_case("reference")
    coeff = v_real - v_fake                                                  # score_fake - score_real
    norm = np.abs(pred - v_real).mean(axis=(1, 2), keepdims=True) + 1e-5    # mean|pred - v_real| per sample
    goal = pred - coeff / norm
    assert float(loss) == pytest.approx(0.5 * np.mean((pred - goal) ** 2), rel=1e-5)
    np.testing.assert_allclose(grad, 0.5 * 2 * (pred - goal) / pred.size, rtol=1e-5, atol=1e-8)


def test_dmd_x0_variant_by_hand():
    loss, grad, pred, x, v_real, v_fake, s = _dmd_case("x0")
    x0_real, x0_fake = x - s * v_real, x - s * v_fake
    step = (x0_fake - x0_real) / (np.abs(pred - x0_real).mean(axis=(1, 2), keepdims=True) + 1e-5)
    assert float(loss) == pytest.approx(0.5 * np.mean(step**2), rel=1e-5)
    np.testing.assert_allclose(grad, 0.5 * 2 * step / pred.size, rtol=1e-5, atol=1e-8)


def _reflow(step):
    grid = np.array([0.1, 0.25, 0.5, 0.75, 1.0], dtype="float32")
    v = T([[[1.0, 2.0]]])
    seen = {}

    def velocity(x, sigma, adapters):
        seen["sigma"] = float(sigma[0])
        return v

    ctx = SimpleNamespace(pred=T([[[0.2, -0.4]]]), sigma_end=T([0.25]), in_phase=lambda stream: (np.array([2]),
                          T(grid[[2]])), grid_sigma=lambda pos: T(grid[np.asarray(pos)]),
                          gaussian=lambda stream: T([[[0.1, 0.3]]]), velocity=velocity)
    out = build(ReflowLoss, weight=3.0, loss="l2", step=step).losses(ctx)["reflow"]
    return float(out), seen["sigma"]


def test_reflow_reference_step_by_hand():
    """r at grid position 2: input noised to sigmas_prev[r] = 0.5, velocity at 0.5, step e - sigmas[r] = 0.25 - 0.75
    (`consistent`: 0.25 - 0.5)."""
    out, sigma = _reflow("reference")
    x_r = ((1 - 0.5) * np.array([0.2, -0.4]) + (0.5 - 0.25) * np.array([0.1, 0.3])) / (1 - 0.25)
    again = x_r + (0.25 - 0.75) * np.array([1.0, 2.0])
    assert sigma == pytest.approx(0.5)
    assert out == pytest.approx(3.0 * np.mean((again - np.array([0.2, -0.4])) ** 2), rel=1e-6)
    out, _ = _reflow("consistent")
    again = x_r + (0.25 - 0.5) * np.array([1.0, 2.0])
    assert out == pytest.approx(3.0 * np.mean((again - np.array([0.2, -0.4])) ** 2), rel=1e-6)


# ----------------------------------------------------------------- discriminator head
def _group_norm(x, groups, gamma, beta, eps=1e-5):
    """numpy GroupNorm over [B, C, N] (statistics per sample and channel group over all positions)."""
    b, c, n = x.shape
    g = x.reshape(b, groups, c // groups * n)
    g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    return g.reshape(b, c, n) * gamma[None, :, None] + beta[None, :, None]


def test_head_is_the_reference_head_by_hand():
    """h1 = lrelu(GN32(conv1 f)), h = lrelu(GN32(conv2 h1)) + h1, logit = conv_out h, on a [B, C, h*w] grid (1x1
    convolutions are matmuls over channels); the residual adds h1, not the raw feature."""
    paddle.seed(1)
    channels = 64
    head = DiscriminatorHead(channels)
    for layer in (head.norm1.norm, head.norm2.norm):  # non-trivial affine GroupNorm parameters
        layer.weight.set_value(paddle.rand([channels]) + 0.5)
        layer.bias.set_value(paddle.randn([channels]) * 0.1)
    assert group_count(channels) == 32 and group_count(3072) == 32 and group_count(7) == 7
    lrelu = lambda x: np.where(x > 0, x, 0.01 * x)
    w = lambda layer: layer.weight.numpy()  # Paddle Linear weight [in, out]
    for h, wd in ((4, 4), (3, 5)):
        tokens = paddle.randn([2, h * wd, channels]) * 30  # large unnormalised features, like FLUX's
        f = tokens.numpy().transpose(0, 2, 1)  # [B, C, N]
        conv = lambda layer, x: np.einsum("bcn,co->bon", x, w(layer)) + layer.bias.numpy()[None, :, None]
        gn = lambda norm, x: _group_norm(x, 32, norm.norm.weight.numpy(), norm.norm.bias.numpy())
        h1 = lrelu(gn(head.norm1, conv(head.conv1, f)))
        hid = lrelu(gn(head.norm2, conv(head.conv2, h1))) + h1
        ref = conv(head.conv_out, hid)[:, 0]
        np.testing.assert_allclose(head(tokens).numpy(), ref, rtol=1e-4, atol=1e-4)
        assert ref.std() < 10  # a read-out of normalised activations, not of the raw features (scale 30)


# ----------------------------------------------------------------- defaults, streams, noise
def test_config_defaults_come_from_the_objectives():
    from ppflux_lightning.engine.schema import DEFAULTS

    objectives = DEFAULTS["objectives"]
    for name in ("consistency", "adversarial", "dmd", "reflow"):
        assert objectives[name] == OBJECTIVES.get(name).defaults
    ref = objectives
    assert ref["adversarial"]["weight"] == 0.1 and ref["adversarial"]["loss"] == "hinge"
    assert ref["adversarial"]["weight_decay"] == 1e-3 and ref["adversarial"]["noise"] == "independent"
    assert ref["dmd"] == {"enabled": True, "weight": 0.01, "normalizer": "reference"}
    assert ref["reflow"]["step"] == "reference" and ref["reflow"]["weight"] == 0.01
    assert ref["solver"] == {"num_timesteps": 100, "num_phases": 4}
    with pytest.raises(ConfigError, match="objectives.dmd.normaliser"):
        DMDLoss.build(None, "dmd", normaliser="x0")


def test_streams_are_declared_by_the_enabled_objectives():
    recipe = DistillationRecipe(FluxTransformer2DModel(tiny_config()), full_objectives(dmd=False), EulerSolver(
        np.linspace(0.01, 1.0, 21), 4))
    assert set(recipe.streams) == {"noise", "index", "adversarial.u", "adversarial.real_eps", "adversarial.fake_eps",
                                   "reflow.u", "reflow.eps"}
    draws = recipe.draws(0, 3, [0, 1], (4, 2))
    assert draws["noise"].shape == (2, 4, 2) and draws["reflow.u"].shape == (2,)
    # A stream's numbers depend on its name, not on which other streams exist.
    alone = sample_draws(0, 3, [0, 1], (4, 2), {"reflow.eps": GAUSSIAN})
    np.testing.assert_array_equal(alone["reflow.eps"], draws["reflow.eps"])


def test_real_and_fake_get_different_noise(tiny):
    recipe = DistillationRecipe(tiny.model, full_objectives(), tiny.solver)
    draws = draws_for(tiny, step=4, recipe=recipe)
    draws["adversarial.u"] = np.array([0.5, 0.9])  # in-phase sigma above the phase end: the noise term is non-zero
    ctx = StepContext(tiny.model, lora_disabled, tiny.cond, tiny.latents, draws, tiny.solver, train_student=False)
    step = next(o for o in recipe.objectives if isinstance(o, DiscriminatorStep))
    x = tiny.latents
    real, fake = step._noisy(ctx, x, real=True).numpy(), step._noisy(ctx, x).numpy()
    assert np.abs(real - fake).min(axis=(1, 2)).max() > 0 and not np.allclose(real, fake)
    pos, sigma = ctx.in_phase("adversarial.u")
    s, e = sigma.numpy()[:, None, None], ctx.sigma_end.numpy()[:, None, None]
    expect = lambda eps: ((1 - s) * x.numpy() + (s - e) * eps) / (1 - e)
    np.testing.assert_allclose(real, expect(draws["adversarial.real_eps"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fake, expect(draws["adversarial.fake_eps"]), rtol=1e-5, atol=1e-6)
    shared = full_objectives()
    shared["adversarial"]["noise"] = "shared"
    step = DistillationRecipe(tiny.model, shared, tiny.solver).objectives[0]
    np.testing.assert_array_equal(step._noisy(ctx, x, real=True).numpy(), step._noisy(ctx, x).numpy())


def test_an_objective_declared_in_one_place_trains_through_the_recipe(tiny):
    """A new objective (defaults, streams, group, loss) needs no change outside its own class."""

    @OBJECTIVES.register(name="test_anchor")
    class Anchor(Objective):
        name = "test_anchor"
        defaults = {"enabled": True, "weight": 2.0}
        streams = {"eps": GAUSSIAN, "u": UNIFORM}

        def losses(self, ctx):
            x = ctx.pred + 0.0 * ctx.gaussian(self.stream("eps"))
            return {"test_anchor": self.weight * x.square().mean() * float(ctx.draws[self.stream("u")].size > 0)}

    try:
        cfg = full_objectives(adversarial=False, dmd=False, reflow=False)
        cfg["test_anchor"] = {}
        recipe = DistillationRecipe(tiny.model, cfg, tiny.solver)
        assert "test_anchor.eps" in recipe.streams
        losses = recipe.losses(tiny.cond, tiny.latents, draws_for(tiny, recipe=recipe), "generator")
        assert set(losses) == {"consistency", "test_anchor"} and float(losses["test_anchor"]) > 0
        assert config_defaults()["test_anchor"] == {"enabled": True, "weight": 2.0}
    finally:
        OBJECTIVES._items.pop("test_anchor")


# ----------------------------------------------------------------- the recipe on a tiny model
def test_dg_alternation_and_groups(tiny):
    recipe = DistillationRecipe(tiny.model, full_objectives(), tiny.solver, student_parameters=lora_parameters(
        tiny.model))
    assert [recipe.group_at(s) for s in range(4)] == ["discriminator", "generator"] * 2
    names = {o.name: o.group for o in recipe.objectives}
    assert names == {"consistency": "generator", "adversarial_d": "discriminator", "adversarial_g": "generator",
                     "dmd": "generator", "reflow": "generator"}
    assert len(recipe.parameters("generator")) == len(lora_parameters(tiny.model))
    assert len(recipe.parameters("discriminator")) == len(recipe.objectives[0].parameters())
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


def test_pred_and_target_are_the_reference_formulas(tiny):
    """pred = x_t + (sigmas_prev[start] - sigmas[i]) v_s(x_t, sigmas[i]); x_prev = x_t + (sigmas_prev[i] - sigmas[i])
    v_teacher(x_t, sigmas[i]); target = x_prev + (sigmas_prev[start] - sigmas_prev[i]) v_s(x_prev, sigmas_prev[i]):
    computed one forward at a time against the context's batched forwards."""
    recipe = DistillationRecipe(tiny.model, full_objectives(adversarial=False, reflow=False), tiny.solver)
    draws = draws_for(tiny, step=3, recipe=recipe)
    draws["index"] = np.array([0.26, 0.51])  # i = 5 (a phase start: target = the teacher step) and i = 10
    ctx = StepContext(tiny.model, lora_disabled, tiny.cond, tiny.latents, draws, tiny.solver, train_student=True)
    for stage, adapters in (("teacher", False), ("student", True)):
        req = ctx.core_requests(stage, True)
        req.update(recipe.objectives[1].requests(ctx, stage))
        ctx.run_batched(req, adapters)
    ctx.finish_target()
    losses = recipe.losses(tiny.cond, tiny.latents, draws, "generator")

    m, c = tiny.model, tiny.cond
    kw = c.kwargs(2)
    idx = np.array([5, 10])
    grid = np.linspace(0.01, 1.0, 21)
    sig, prev = grid[idx + 1], grid[idx]           # sigmas[i], sigmas_prev[i]
    end = grid[np.array([5, 10])]                  # phase starts 0, 5, 10, 15: start(5) = 5, start(10) = 10
    col = lambda a: T(a.astype("float32")).reshape([-1, 1, 1])
    x_t = (1 - col(sig)) * tiny.latents + col(sig) * T(draws["noise"])
    with paddle.no_grad():
        v_s = m(x_t, timestep=T(sig.astype("float32")), **kw)
        with lora_disabled(m):
            v_t = m(x_t, timestep=T(sig.astype("float32")), **kw)
        x_prev = x_t + col(prev - sig) * v_t
        v_p = m(x_prev, timestep=T(prev.astype("float32")), **kw)
    pred = x_t + col(end - sig) * v_s
    target = x_prev + col(end - prev) * v_p
    np.testing.assert_allclose(ctx.pred.numpy(), pred.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ctx.target.numpy(), target.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ctx.target.numpy(), x_prev.numpy(), rtol=1e-4, atol=1e-5)  # i at a phase start
    assert float((ctx.pred - x_t).abs().min(axis=[1, 2]).min()) > 0  # no zero-length jump, even at a phase start
    huber = np.mean(np.sqrt((pred.numpy() - target.numpy()) ** 2 + 1e-6) - 1e-3)
    assert float(losses["consistency"]) == pytest.approx(huber, rel=1e-4)


def test_multi_step_teacher_target_walks_further(tiny):
    one = DistillationRecipe(tiny.model, full_objectives(adversarial=False, dmd=False, reflow=False), tiny.solver)
    draws = draws_for(tiny, step=5, recipe=one)
    draws["index"] = np.array([0.45, 0.95])  # i = 9 and 19: two teacher steps stay inside the phase
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
    draws = draws_for(tiny, step=2, recipe=recipe)
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
    draws = draws_for(tiny, step=7, recipe=recipe)
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

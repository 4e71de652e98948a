"""Cache policies on a tiny random FLUX transformer: exactness at threshold 0, counted skips at large thresholds,
Taylor extrapolation against polynomials, batch handling, one host transfer per step, and parameter errors."""

import numpy as np
import paddle
import pytest

from ppflux_lightning.acceleration import (
    POLICIES,
    CacheConfig,
    CacheMixin,
    FirstBlockCache,
    FirstBlockTaylor,
    TaylorCache,
    build_policy,
    fbcache,
    policy,
    sortblock,
    teablockcache,
    teacache,
)
from ppflux_lightning.models.flux_transformer import FluxConfig, FluxTransformer2DModel
from ppflux_lightning.schedulers.flow_match import FlowMatchEulerScheduler

STEPS = 8
N_DOUBLE, N_SINGLE = 2, 3
N_BLOCKS = N_DOUBLE + N_SINGLE
GRID = 4  # packed latent grid GRID x GRID
N_TXT = 5


@pytest.fixture(scope="module")
def model():
    paddle.seed(0)
    config = FluxConfig(
        in_channels=8, num_layers=N_DOUBLE, num_single_layers=N_SINGLE, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=12, pooled_projection_dim=6, guidance_embeds=True, axes_dims_rope=(2, 2, 4),
    )
    model = FluxTransformer2DModel(config)
    model.eval()
    return model


def make_inputs(seed, batch=1):
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    img_ids = np.stack([np.zeros(GRID * GRID), rows.ravel(), cols.ravel()], axis=-1)
    t = lambda a: paddle.to_tensor(np.asarray(a, dtype=np.float32))
    return {
        "latents": t(rng.standard_normal((batch, GRID * GRID, 8))),
        "encoder_hidden_states": t(rng.standard_normal((batch, N_TXT, 12))),
        "pooled_projections": t(rng.standard_normal((batch, 6))),
        "img_ids": t(img_ids),
        "txt_ids": t(np.zeros((N_TXT, 3))),
    }


def stack_inputs(a, b):
    out = dict(a)
    for key in ("latents", "encoder_hidden_states", "pooled_projections"):
        out[key] = paddle.concat([a[key], b[key]], axis=0)
    return out


@paddle.no_grad()
def denoise(model, inputs, cache=None, steps=STEPS):
    """A plain Euler flow-matching loop; `cache` (a policy) is installed for the run with begin/set_step."""
    scheduler = FlowMatchEulerScheduler()
    scheduler.set_timesteps(steps, image_seq_len=GRID * GRID)
    x = inputs["latents"]
    model.cache_policy = cache
    if cache is not None:
        cache.begin(steps)
    try:
        for i, sigma in enumerate(scheduler.sigmas[:-1]):
            if cache is not None:
                cache.set_step(i)
            v = model(x, inputs["encoder_hidden_states"], inputs["pooled_projections"], float(sigma),
                      inputs["img_ids"], inputs["txt_ids"], guidance=3.5)
            x = scheduler.step(v, i, x)
    finally:
        model.cache_policy = None
    return x.numpy()


@pytest.fixture(scope="module")
def inputs():
    return make_inputs(1)


@pytest.fixture(scope="module")
def reference(model, inputs):
    return denoise(model, inputs)


@pytest.mark.parametrize("method", sorted(POLICIES))
def test_zero_threshold_reproduces_uncached_output_exactly(model, inputs, reference, method):
    cache = build_policy(CacheConfig(method, threshold=0))
    out = denoise(model, inputs, cache)
    np.testing.assert_array_equal(out, reference)
    assert cache.stats.blocks_skipped == 0
    assert cache.stats.blocks_run == STEPS * N_BLOCKS
    assert cache.stats.full_steps == STEPS


# method, options, threshold, expected skipped block evaluations over STEPS=8 steps of N_BLOCKS=5 blocks
LARGE = [
    ("teacache", {}, 1e9, (STEPS - 2) * N_BLOCKS),  # first and last step always run
    ("fbcache", {}, 1e9, (STEPS - 1) * (N_BLOCKS - 1)),  # block 0 always runs, step 0 fills the cache
    ("firstblock_taylor", {"order": 2}, 1e9, (STEPS - 3) * (N_BLOCKS - 1)),  # order + 1 full steps first
    ("firstblock_taylor", {"order": 1, "max_skips": 2}, 1e9, 4 * (N_BLOCKS - 1)),  # F F S S F S S F
    ("teablockcache", {"start": 2}, 1e9, (STEPS - 2) * (N_BLOCKS - 2)),  # window [1, 7), blocks >= 2
    ("teablockcache", {"start": 0, "warmup_steps": 3, "final_steps": 2}, 1e9, 3 * N_BLOCKS),  # window [3, 6)
    ("sortblock", {"interval": 3}, 1.0, 3 * N_BLOCKS),  # partial steps 2, 4, 5 (full: 0, 1, 3, 6, last)
    ("sortblock", {"interval": 3}, 0.5, 3 * (1 + 2)),  # round(0.5*2)=1 double + round(0.5*3)=2 single per step
    ("sortblock", {"interval": 2, "warmup_steps": 1, "final_steps": 0, "order": 0}, 1.0, 4 * N_BLOCKS),  # odd steps
]


@pytest.mark.parametrize("method,options,threshold,skipped", LARGE)
def test_large_threshold_skips_expected_block_evaluations(
    model, inputs, reference, method, options, threshold, skipped
):
    cache = build_policy(CacheConfig(method, threshold=threshold, **options))
    out = denoise(model, inputs, cache)
    assert cache.stats.blocks_skipped == skipped
    assert cache.stats.blocks_run + cache.stats.blocks_skipped == STEPS * N_BLOCKS
    assert cache.stats.steps == STEPS
    assert np.isfinite(out).all()
    assert not np.array_equal(out, reference)  # the skips really changed the computation


def test_policy_state_is_reset_at_begin(model, inputs):
    cache = build_policy(CacheConfig("sortblock", threshold=0.5))
    first = denoise(model, inputs, cache)
    stats = cache.stats.as_dict()
    second = denoise(model, inputs, cache)
    np.testing.assert_array_equal(first, second)
    assert cache.stats.as_dict() == stats


@pytest.mark.parametrize("method,options,threshold,skipped", LARGE[::2])
def test_batch_matches_single_samples(model, method, options, threshold, skipped):
    """With decisions forced (large threshold), a batch of two gives each sample's single-sample result."""
    a, b = make_inputs(2), make_inputs(3)
    run = lambda x: denoise(model, x, build_policy(CacheConfig(method, threshold=threshold, **options)))
    batched = run(stack_inputs(a, b))
    np.testing.assert_allclose(batched[:1], run(a), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(batched[1:], run(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", sorted(POLICIES))
def test_at_most_one_host_transfer_per_step(model, monkeypatch, method):
    calls = []

    def counting(scalars):
        calls.append(len(scalars))
        return policy.host_values(scalars)

    for module in (fbcache, sortblock, teablockcache, teacache):
        monkeypatch.setattr(module, "host_values", counting)
    cache = build_policy(CacheConfig(method, threshold=0.3 if method != "sortblock" else 0.5))
    denoise(model, make_inputs(4, batch=2), cache)
    assert 0 < len(calls) <= STEPS


def test_firstblock_taylor_order_zero_equals_fbcache(model, inputs):
    """Order 0 repeats the last residual, which is FBCache; order 1 extrapolates and differs."""
    fb = denoise(model, inputs, FirstBlockCache(1e9))
    np.testing.assert_array_equal(denoise(model, inputs, FirstBlockTaylor(1e9, order=0)), fb)
    assert not np.allclose(denoise(model, inputs, FirstBlockTaylor(1e9, order=1)), fb)


def test_works_with_lora(model, inputs):
    from ppflux_lightning.lora import adapters

    lora_model = FluxTransformer2DModel(model.config)
    lora_model.set_state_dict(model.state_dict())
    lora_model.eval()
    adapters.add_lora(lora_model, rank=2)
    for layer in adapters.lora_layers(lora_model).values():
        layer.lora_B.set_value(paddle.full(layer.lora_B.shape, 0.05, dtype=layer.lora_B.dtype))
    plain = denoise(lora_model, inputs)
    assert not np.allclose(plain, denoise(model, inputs))  # the adapters are active
    for method in sorted(POLICIES):
        np.testing.assert_array_equal(denoise(lora_model, inputs, build_policy(CacheConfig(method, 0))), plain)
    cache = build_policy(CacheConfig("teablockcache", 1e9))
    assert np.isfinite(denoise(lora_model, inputs, cache)).all() and cache.stats.blocks_skipped > 0


# ---------------------------------------------------------------------- Taylor extrapolation
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_taylor_exact_on_polynomial_of_its_order(order):
    rng = np.random.default_rng(order)
    coeffs = [paddle.to_tensor(rng.standard_normal((3, 4))) for _ in range(order + 1)]  # float64
    signal = lambda t: sum(c * t**p for p, c in enumerate(coeffs))
    cache = TaylorCache(order)
    times = [0.0, 3.0, 4.0, 9.0, 11.0][: order + 2]  # non-unit, uneven gaps
    for n, t in enumerate(times):
        cache.update(t, signal(t))
        assert cache.effective_order == min(n, order)
    assert cache.ready
    for t in (12.0, 15.0, 20.5):
        np.testing.assert_allclose(cache.predict(t).numpy(), signal(t).numpy(), rtol=1e-9, atol=1e-9)


def test_taylor_is_not_exact_one_degree_higher():
    cache = TaylorCache(1)
    for t in (0.0, 2.0, 5.0):
        cache.update(t, paddle.to_tensor([t**2], dtype="float64"))
    predicted = cache.predict(7.0).numpy()[0]
    assert abs(predicted - 49.0) > 1.0
    # the first-order estimate uses the gap: slope (25 - 4) / 3 = 7, so 25 + 7 * 2
    assert predicted == pytest.approx(39.0)


def test_taylor_rejects_bad_input():
    with pytest.raises(ValueError, match="order"):
        TaylorCache(-1)
    cache = TaylorCache(1)
    cache.update(2, paddle.zeros([1]))
    with pytest.raises(ValueError, match="increasing"):
        cache.update(2, paddle.zeros([1]))


def test_teacache_rescaling_polynomial():
    x = 0.137
    assert teacache.polyval(teacache.FLUX_COEFFICIENTS, x) == pytest.approx(np.polyval(teacache.FLUX_COEFFICIENTS, x))


# ---------------------------------------------------------------------- configuration and errors
def test_bad_parameters_give_clear_errors():
    with pytest.raises(ValueError, match=r"unknown cache method 'tea'"):
        CacheConfig("tea")
    with pytest.raises(ValueError, match=r"must be >= 0, got -0.1"):
        CacheConfig("fbcache", threshold=-0.1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['orderr'\]"):
        CacheConfig("firstblock_taylor", orderr=2)
    with pytest.raises(ValueError, match=r"must be <= 1.0, got 1.5"):
        CacheConfig("sortblock", threshold=1.5)
    with pytest.raises(ValueError, match="finite"):
        CacheConfig("teacache", threshold=float("nan"))
    with pytest.raises(ValueError, match=r"option interval .* got 0"):
        CacheConfig("sortblock", interval=0)
    with pytest.raises(ValueError, match=r"Taylor order .* got -1"):
        CacheConfig("firstblock_taylor", order=-1)
    cache = build_policy(CacheConfig("fbcache"))
    with pytest.raises(RuntimeError, match="begin"):
        cache.set_step(0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        cache.begin(0)
    cache.begin(2)
    with pytest.raises(ValueError, match="step index 2"):
        cache.set_step(2)


def test_edge_settings_run(model, inputs, reference):
    """No cacheable block (start past the end) skips nothing; numpy scalars are accepted as thresholds."""
    cache = build_policy(CacheConfig("teablockcache", np.float32(1e9), start=N_BLOCKS))
    np.testing.assert_array_equal(denoise(model, inputs, cache), reference)
    assert cache.stats.blocks_skipped == 0


def test_every_method_has_a_default_threshold():
    for method in POLICIES:
        config = CacheConfig(method)
        assert config.threshold > 0 and build_policy(config).threshold == config.threshold


def test_run_without_begin_is_an_error(model, inputs):
    model.cache_policy = build_policy("teacache")
    try:
        with pytest.raises(RuntimeError, match="begin"):
            model(inputs["latents"], inputs["encoder_hidden_states"], inputs["pooled_projections"], 1.0,
                  inputs["img_ids"], inputs["txt_ids"], guidance=3.5)
    finally:
        model.cache_policy = None


class _Pipe(CacheMixin):
    def __init__(self, transformer):
        self.transformer = transformer


def test_pipeline_mixin_installs_and_removes_policies(model):
    pipe = _Pipe(model)
    policy_ = pipe.enable_cache("firstblock_taylor", threshold=0.2, order=2)
    assert model.cache_policy is policy_ and pipe.cache_policy is policy_
    assert policy_.threshold == 0.2 and policy_.order == 2
    other = pipe.enable_cache(CacheConfig("sortblock", 0.25))
    assert model.cache_policy is other and other is not policy_
    with pytest.raises(TypeError, match="not both"):
        pipe.enable_cache(CacheConfig("sortblock"), threshold=0.1)
    pipe.disable_cache()
    assert model.cache_policy is None and pipe.cache_policy is None

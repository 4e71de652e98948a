"""LoRA adapters in Paddle: the layer formula, target selection, teacher (adapters off), fuse/unfuse, state dicts,
training gradients and the pipeline mixin. References are hand-computed formulas and the untouched base model."""

import numpy as np
import paddle
import pytest
from torch_reference import image_ids

from ppflux_lightning import lora
from ppflux_lightning.lora import LoRALinear
from ppflux_lightning.models.flux_transformer import FluxConfig, FluxTransformer2DModel

CONFIG = FluxConfig(in_channels=8, num_layers=2, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
                    joint_attention_dim=16, pooled_projection_dim=8, axes_dims_rope=(2, 2, 4))  # fmt: skip


def tiny_model(seed=0):
    paddle.seed(seed)
    model = FluxTransformer2DModel(CONFIG)
    model.eval()
    return model


def inputs(seed=0):
    g = np.random.default_rng(seed)
    arrays = [g.standard_normal(s).astype("float32") for s in ((1, 16, 8), (1, 4, 16), (1, 8))]
    return [paddle.to_tensor(a) for a in arrays] + [0.5, paddle.to_tensor(image_ids(4, 4)), paddle.zeros([4, 3]), 0.35]


def randomize_b(model, seed=1, std=0.3):
    paddle.seed(seed)
    for layer in lora.lora_layers(model).values():
        layer.lora_B.set_value(paddle.randn(layer.lora_B.shape) * std)


def test_layer_formula():
    paddle.seed(0)
    base = paddle.nn.Linear(6, 5)
    layer = LoRALinear(base, rank=3, alpha=1.5)
    x = paddle.randn([2, 4, 6])
    np.testing.assert_array_equal(layer(x).numpy(), base(x).numpy())  # B starts at zero
    assert np.abs(layer.lora_A.numpy()).max() <= 1 / np.sqrt(6)  # kaiming-uniform(a=sqrt(5)) bound
    layer.lora_B.set_value(paddle.randn([3, 5]))
    layer.scale = 0.7
    w, b, a, bb = (t.numpy() for t in (base.weight, base.bias, layer.lora_A, layer.lora_B))
    expected = x.numpy() @ w + b + 0.7 * 1.5 / 3 * (x.numpy() @ a @ bb)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    layer.enabled = False
    np.testing.assert_allclose(layer(x).numpy(), x.numpy() @ w + b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(paddle.nn.Linear(2, 2), rank=0)
    with pytest.raises(TypeError, match="Conv2D"):
        LoRALinear(paddle.nn.Conv2D(2, 2, 1), rank=2)


def test_dropout_only_in_training():
    paddle.seed(0)
    layer = LoRALinear(paddle.nn.Linear(8, 8), rank=2, dropout=0.5)
    layer.lora_B.set_value(paddle.ones([2, 8]))
    x = paddle.randn([4, 8])
    layer.eval()
    first = layer(x).numpy()
    np.testing.assert_array_equal(layer(x).numpy(), first)
    layer.train()
    assert not np.allclose(layer(x).numpy(), first)


def test_default_targets_are_the_twelve_names_matched_by_suffix():
    model = tiny_model()
    singles = len(model.single_transformer_blocks)
    names = lora.add_lora(model, rank=4)
    twelve = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
              "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
              "ff_context.net.2"]  # fmt: skip  (reference.md section 4: PEFT suffix matching)
    expected = [f"transformer_blocks.{i}.{t}" for i in range(2) for t in twelve]
    expected += [f"single_transformer_blocks.{i}.attn.to_{t}" for i in range(singles) for t in "qkv"]
    assert sorted(names) == sorted(expected) and len(names) == 24 + 3 * singles


def test_suffixes_and_regex_select_single_blocks():
    model = tiny_model()
    names = lora.add_lora(model, rank=2, target_modules=["attn.to_q", "proj_mlp", "proj_out"])
    assert sorted(names) == sorted(["transformer_blocks.0.attn.to_q", "transformer_blocks.1.attn.to_q",
                                    "single_transformer_blocks.0.attn.to_q", "single_transformer_blocks.0.proj_mlp",
                                    "single_transformer_blocks.0.proj_out", "proj_out"])  # fmt: skip
    model = tiny_model()
    assert lora.add_lora(model, 2, target_modules=r"single_transformer_blocks\.\d+\.proj_out") == [
        "single_transformer_blocks.0.proj_out"
    ]
    with pytest.raises(ValueError, match="no_such_module"):
        lora.add_lora(tiny_model(), 2, target_modules=["no_such_module"])


@pytest.mark.filterwarnings("ignore")  # set_state_dict warns that the base file lacks the adapter keys
def test_state_dict_keys_and_base_checkpoints():
    plain = tiny_model(seed=3)
    model = tiny_model()
    base_keys = set(model.state_dict())
    lora.add_lora(model, rank=4)
    keys = set(model.state_dict())
    assert base_keys <= keys
    assert keys - base_keys == {f"{n}.{p}" for n in lora.lora_layers(model) for p in ("lora_A", "lora_B")}
    # a base checkpoint loads into the adapted model and gives the base model's output (B is zero)
    model.set_state_dict(plain.state_dict())
    np.testing.assert_allclose(model(*inputs()).numpy(), plain(*inputs()).numpy(), rtol=1e-6, atol=1e-6)


def test_teacher_is_the_base_model():
    model = tiny_model()
    base = model(*inputs()).numpy()
    lora.add_lora(model, rank=4, alpha=8)
    randomize_b(model)
    student = model(*inputs()).numpy()
    assert np.abs(student - base).max() > 1e-2
    with lora.lora_disabled(model):
        np.testing.assert_array_equal(model(*inputs()).numpy(), base)
    np.testing.assert_array_equal(model(*inputs()).numpy(), student)
    lora.set_lora_enabled(model, False)
    np.testing.assert_array_equal(model(*inputs()).numpy(), base)


def test_fuse_unfuse_exact_and_scale():
    model = tiny_model()
    lora.add_lora(model, rank=4, alpha=2, target_modules=["to_q", "to_v", "proj_mlp", "ff.net.2"])
    randomize_b(model)
    weights = {n: layer.weight.numpy().copy() for n, layer in lora.lora_layers(model).items()}
    lora.set_lora_scale(model, 0.6)
    unfused = model(*inputs()).numpy()
    assert lora.fuse_lora(model) == 9
    np.testing.assert_allclose(model(*inputs()).numpy(), unfused, rtol=1e-5, atol=1e-5)
    name, layer = next(iter(lora.lora_layers(model).items()))
    delta = 0.6 * 2 / 4 * layer.lora_A.numpy() @ layer.lora_B.numpy()
    np.testing.assert_allclose(layer.weight.numpy(), weights[name] + delta, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="fused"):
        with lora.lora_disabled(model):
            pass
    with pytest.raises(ValueError, match="fused"):
        lora.set_lora_scale(model, 1.0)
    lora.unfuse_lora(model)
    for n, layer in lora.lora_layers(model).items():
        np.testing.assert_allclose(layer.weight.numpy(), weights[n], rtol=0, atol=1e-6)
    np.testing.assert_allclose(model(*inputs()).numpy(), unfused, rtol=1e-5, atol=1e-6)


def test_lora_state_dict_roundtrip_and_mismatch():
    a, b = tiny_model(), tiny_model()
    for model in (a, b):
        lora.add_lora(model, rank=4)
    randomize_b(a)
    lora.set_lora_state_dict(b, {k: v.numpy() for k, v in lora.lora_state_dict(a).items()})
    np.testing.assert_array_equal(b(*inputs()).numpy(), a(*inputs()).numpy())
    c = tiny_model()  # our keys through the format-detecting loader (Paddle layout, alpha = rank)
    lora.load_lora_weights(c, lora.lora_state_dict(a))
    np.testing.assert_allclose(c(*inputs()).numpy(), a(*inputs()).numpy(), rtol=1e-6, atol=1e-6)
    before = b(*inputs()).numpy()
    state = lora.lora_state_dict(a)
    state["transformer_blocks.0.attn.to_q.lora_A"] = paddle.zeros([16, 3])
    with pytest.raises(ValueError, match=r"transformer_blocks\.0\.attn\.to_q\.lora_A.*\[16, 3\]"):
        lora.set_lora_state_dict(b, state)
    np.testing.assert_array_equal(b(*inputs()).numpy(), before)


def test_only_adapters_train_and_checkpointing_keeps_grads():
    grads = []
    for checkpointing in (False, True):
        model = tiny_model()
        lora.add_lora(model, rank=4, target_modules=["to_q", "proj_out"])
        randomize_b(model)
        model.enable_gradient_checkpointing(checkpointing)
        model.train()
        trainable = [p for p in model.parameters() if not p.stop_gradient]
        assert {id(p) for p in trainable} == {id(p) for p in lora.lora_parameters(model)}
        model(*inputs()).square().mean().backward()
        assert model.x_embedder.weight.grad is None
        grads.append([p.grad.numpy() for p in lora.lora_parameters(model)])
    for plain, recomputed in zip(*grads):
        np.testing.assert_allclose(recomputed, plain, rtol=1e-5, atol=1e-7)
    assert any(np.abs(g).max() > 0 for g in grads[0])


def test_unload_restores_plain_linear_and_flags():
    model = tiny_model()
    lora.add_lora(model, rank=4, freeze_base=False)
    lora.unload_lora(model)
    assert not lora.lora_layers(model)
    layer = model.transformer_blocks[0].attn.to_out[0]
    assert type(layer) is paddle.nn.Linear and not layer.weight.stop_gradient


def test_bf16_base_with_float32_adapters_fuses_in_float32():
    """Trainer setup: bf16 base, fp32 adapters. (Paddle's CPU build has no bf16 matmul, so only fusing is run.)"""
    paddle.seed(0)
    base = paddle.nn.Linear(8, 6)
    w32 = base.weight.numpy().copy()
    base.to(dtype="bfloat16")
    layer = LoRALinear(base, rank=2, alpha=4, dtype="float32")
    layer.lora_B.set_value(paddle.randn([2, 6]))
    assert layer.weight.dtype == paddle.bfloat16 and layer.lora_A.dtype == paddle.float32
    layer.fuse()
    fused = base.weight.astype("float32").numpy()
    assert layer.weight.dtype == paddle.bfloat16
    expected = w32 + 2 * layer.lora_A.numpy() @ layer.lora_B.numpy()
    np.testing.assert_allclose(fused, expected, rtol=1e-2, atol=1e-2)  # bf16 has 8 mantissa bits
    layer.unfuse()
    np.testing.assert_allclose(layer.weight.astype("float32").numpy(), w32, rtol=2e-2, atol=2e-2)


class TinyPipeline(lora.FluxLoraLoaderMixin):
    def __init__(self, transformer):
        self.transformer = transformer


def test_pipeline_mixin(tmp_path):
    source = tiny_model()
    lora.add_lora(source, rank=4, alpha=8, target_modules=["to_k", "proj_mlp"])
    randomize_b(source)
    path = lora.save_lora_weights(source, str(tmp_path / "src"))
    expected_full = source(*inputs()).numpy()
    lora.set_lora_scale(source, 0.5)
    expected_half = source(*inputs()).numpy()
    pipe = TinyPipeline(tiny_model())
    base = pipe.transformer(*inputs()).numpy()
    pipe.load_lora_weights(path, scale=0.5)
    np.testing.assert_allclose(pipe.transformer(*inputs()).numpy(), expected_half, rtol=1e-5, atol=1e-5)
    pipe.set_lora_scale(1.0)
    np.testing.assert_allclose(pipe.transformer(*inputs()).numpy(), expected_full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="already loaded"):
        pipe.load_lora_weights(path, adapter_name="other")
    pipe.fuse_lora(lora_scale=0.5)
    np.testing.assert_allclose(pipe.transformer(*inputs()).numpy(), expected_half, rtol=1e-5, atol=1e-5)
    pipe.unfuse_lora()
    out = pipe.save_lora_weights(str(tmp_path / "again"))
    pipe.unload_lora_weights()
    np.testing.assert_allclose(pipe.transformer(*inputs()).numpy(), base, rtol=0, atol=1e-6)
    pipe.load_lora_weights(out, adapter_name="other")
    np.testing.assert_allclose(pipe.transformer(*inputs()).numpy(), expected_full, rtol=1e-5, atol=1e-5)

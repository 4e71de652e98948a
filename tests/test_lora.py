"""LoRA adapters in Paddle: the layer formula, target selection, teacher (adapters off), fuse/unfuse, state dicts,
training gradients and the pipeline mixin. References are hand-computed formulas and the untouched base model."""

import numpy as np
import paddle
import pytest
from script_loader import load_script
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
        for adapter in layer.adapters.values():
            adapter.lora_B.set_value(paddle.randn(adapter.lora_B.shape) * std)


def test_layer_formula():
    paddle.seed(0)
    base = paddle.nn.Linear(6, 5)
    layer = LoRALinear(base, rank=3, alpha=1.5)
    x = paddle.randn([2, 4, 6])
    np.testing.assert_array_equal(layer(x).numpy(), base(x).numpy())  # B starts at zero
    assert np.abs(layer.lora_A.numpy()).max() <= 1 / np.sqrt(6)  # kaiming-uniform(a=sqrt(5)) bound
    layer.lora_B.set_value(paddle.randn([3, 5]))
    layer.adapters["default"].scale = 0.7
    w, b, a, bb = (t.numpy() for t in (base.weight, base.bias, layer.lora_A, layer.lora_B))
    expected = x.numpy() @ w + b + 0.7 * 1.5 / 3 * (x.numpy() @ a @ bb)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    second = layer.add_adapter("second", rank=2, alpha=4)  # a second adapter adds its own term once active
    second.lora_B.set_value(paddle.randn([2, 5]))
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    layer.active = ["default", "second"]
    both = expected + 4 / 2 * (x.numpy() @ second.lora_A.numpy() @ second.lora_B.numpy())
    np.testing.assert_allclose(layer(x).numpy(), both, rtol=1e-5, atol=1e-5)
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
    added = {f"{n}.adapters.default.{p}" for n in lora.lora_layers(model) for p in ("lora_A", "lora_B")}
    assert keys - base_keys == added
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
    assert type(layer) is type(tiny_model().transformer_blocks[0].attn.to_out[0]) and not layer.weight.stop_gradient


def test_bf16_base_with_float32_adapters_fuses_in_float32():
    """Trainer setup: bf16 base, fp32 adapters. (Paddle's CPU build has no bf16 matmul, so only fusing is run.)"""
    paddle.seed(0)
    base = paddle.nn.Linear(8, 6)
    w32 = base.weight.numpy().copy()
    base.to(dtype="bfloat16")
    layer = LoRALinear(base, rank=2, alpha=4, dtype="float32")
    layer.lora_B.set_value(paddle.randn([2, 6]))
    assert layer.weight.dtype == paddle.bfloat16 and layer.lora_A.dtype == paddle.float32
    layer.fuse(["default"])
    fused = base.weight.astype("float32").numpy()
    assert layer.weight.dtype == paddle.bfloat16
    expected = w32 + 2 * layer.lora_A.numpy() @ layer.lora_B.numpy()
    np.testing.assert_allclose(fused, expected, rtol=1e-2, atol=1e-2)  # bf16 has 8 mantissa bits
    layer.unfuse()
    np.testing.assert_allclose(layer.weight.astype("float32").numpy(), w32, rtol=2e-2, atol=2e-2)




def test_trainer_with_a_frozen_extra_adapter(tmp_path):
    """`model.extra_loras`: the extra file is a frozen adapter at its weight, on in the teacher; only the student
    trains and only the student is saved."""
    from train_fixtures import build_cached_dataset, build_pretrained, tiny_config, tiny_train_config

    from ppflux_lightning.engine.trainer import FINAL_LORA, STUDENT, Trainer
    from ppflux_lightning.utils.errors import ConfigError
    from ppflux_lightning.utils.safetensors_io import SafetensorsFile

    pre = build_pretrained(str(tmp_path / "pre"))
    data = build_cached_dataset(str(tmp_path / "data"), count=4)
    paddle.seed(5)
    source = FluxTransformer2DModel(tiny_config())
    lora.add_lora(source, rank=2, alpha=4, target_modules=["attn.to_k", "proj_out"])
    randomize_b(source)
    extra = lora.save_lora_weights(source, str(tmp_path / "extra"))
    cfg = tiny_train_config(pre, data, str(tmp_path / "out"), **{"model.extra_loras": [{"path": extra, "weight": 0.8}],
                                                                  "train.max_steps": 2})  # fmt: skip
    trainer = Trainer(cfg)
    model = trainer.model
    assert lora.adapter_names(model) == ["extra_0", STUDENT] and lora.active_adapters(model) == ["extra_0", STUDENT]
    frozen = {k: v.numpy().copy() for k, v in lora.lora_state_dict(model, "extra_0").items()}
    trainable = {id(p) for group in trainer.params.values() for p in group}
    assert not trainable & {id(p) for p in lora.lora_parameters(model, ["extra_0"])}
    trainer.train()
    for key, value in lora.lora_state_dict(model, "extra_0").items():
        np.testing.assert_array_equal(value.numpy(), frozen[key])
    model.eval()
    args = (paddle.randn([1, 4, 16]), paddle.randn([1, 6, 32]), paddle.randn([1, 16]), 0.5,
            paddle.to_tensor(image_ids(2, 2)), paddle.zeros([6, 3]), 3.5)  # fmt: skip
    with trainer.recipe.adapters_off(model):
        teacher = model(*args).numpy()
    reference = FluxTransformer2DModel.from_pretrained(pre, subfolder="transformer")
    reference.eval()
    base = reference(*args).numpy()
    lora.load_lora_weights(reference, extra, scale=0.8)
    np.testing.assert_allclose(teacher, reference(*args).numpy(), rtol=1e-5, atol=1e-5)
    assert np.abs(teacher - base).max() > 1e-3
    saved = SafetensorsFile(str(tmp_path / "out" / FINAL_LORA)).keys()
    student = {f"transformer.{k[: -len('.lora_A')]}.lora_A.weight" for k in lora.lora_state_dict(model, STUDENT)
               if k.endswith(".lora_A")}  # fmt: skip
    assert {k for k in saved if k.endswith(".lora_A.weight")} == student and len(saved) == 2 * len(student)
    bad = tiny_train_config(pre, data, str(tmp_path / "bad"), **{"model.extra_loras": [{"file": extra}]})
    with pytest.raises(ConfigError, match=r"model.extra_loras\[0\]"):
        Trainer(bad)


def test_stacked_loras_on_the_command_line_and_in_export(tmp_path, monkeypatch):
    """`tools/infer.py --lora A:0.7 --lora B` == the Python API; export's load_pipeline fuses both at their weights;
    `deploy/export.py` passes them to export_pipeline (which writes them to deploy.yaml; tracing is test_deploy's)."""
    from PIL import Image

    from ppflux_lightning.export import load_pipeline
    from ppflux_lightning.lora.pipeline_mixin import parse_lora_specs
    from ppflux_lightning.pipelines import FluxPipeline, build_tiny_pipeline
    from ppflux_lightning.utils.errors import ConfigError

    model_dir = build_tiny_pipeline(str(tmp_path / "tiny"), seed=1)
    files = []
    for i, (rank, targets) in enumerate([(4, ["attn.to_q", "ff.net.2"]), (2, ["attn.to_v", "proj_out"])]):
        transformer = FluxTransformer2DModel.from_pretrained(model_dir, subfolder="transformer")
        lora.add_lora(transformer, rank, target_modules=targets)
        randomize_b(transformer, seed=i, std=0.5)
        files.append(lora.save_lora_weights(transformer, str(tmp_path / f"lora{i}")))
    common = ["--model", model_dir, "--prompt", "a cat", "--height", "16", "--width", "16", "--steps", "2",
              "--max_sequence_length", "8", "--seed", "3"]  # fmt: skip
    infer = load_script("tools/infer.py")
    infer.main([*common, "--lora", f"{files[0]}:0.7", "--lora", files[1], "--lora_scale", "0.4",
                "--out", str(tmp_path / "cli.png")])  # fmt: skip
    infer.main([*common, "--out", str(tmp_path / "base.png")])
    pipe = FluxPipeline.from_pretrained(model_dir)
    pipe.load_lora_weights(files[0], adapter_name="a")
    pipe.load_lora_weights(files[1], adapter_name="b")
    pipe.set_adapters(["a", "b"], [0.7, 0.4])
    image = pipe("a cat", height=16, width=16, num_inference_steps=2, max_sequence_length=8, seed=3).images[0]
    cli, base = (np.asarray(Image.open(tmp_path / n), np.float32) for n in ("cli.png", "base.png"))
    assert np.abs(cli - np.asarray(image, np.float32)).max() <= 1 and np.abs(cli - base).max() > 2

    specs = parse_lora_specs([f"{files[0]}:0.7", files[1]], weight=0.4)
    assert [s["weight"] for s in specs] == [0.7, 0.4] and specs[1]["file"] == files[1]
    with pytest.raises(ConfigError, match="FILE:WEIGHT"):
        parse_lora_specs([":0.5"])
    fused = load_pipeline(model_dir, lora=specs)
    assert not lora.lora_layers(fused.transformer)
    args = (paddle.randn([1, 16, 16]), paddle.randn([1, 8, 32]), paddle.randn([1, 32]), 0.5,
            paddle.to_tensor(image_ids(4, 4)), paddle.zeros([8, 3]), 3.5)  # fmt: skip
    np.testing.assert_allclose(fused.transformer(*args).numpy(), pipe.transformer(*args).numpy(), rtol=1e-5,
                               atol=1e-5)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_pipeline(model_dir, lora=[files[0], "nope.safetensors:0.5"])

    import ppflux_lightning.export

    export = load_script("deploy/export.py")
    recorded = {}
    monkeypatch.setattr(ppflux_lightning.export, "export_pipeline",  # no tracing: the tool imports it when it runs
                        lambda pipe, output, resolutions, **kw: recorded.update(kw, pipe=pipe))
    assert export.main(["--model", model_dir, "--output", str(tmp_path / "export"), "--lora", f"{files[0]}:0.7",
                        "--lora", f"{files[1]}:0.4"]) == 0  # fmt: skip
    assert [(r["file"], r["weight"]) for r in recorded["lora"]] == [(files[0], 0.7), (files[1], 0.4)]
    np.testing.assert_allclose(recorded["pipe"].transformer(*args).numpy(), pipe.transformer(*args).numpy(),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_frozen_adapters_run_from_a_cache_that_follows_changes():
    """Frozen adapters (loaded files) share one cached concatenated pair per layer: same output as the direct
    formula, rebuilt when a weight, the active set or (through set_lora_state_dict) a tensor changes."""
    model = tiny_model()
    lora.add_lora(model, rank=4, alpha=8, target_modules=["to_q", "proj_mlp"], adapter_name="a")
    lora.add_lora(model, rank=2, target_modules=["to_q", "to_k"], adapter_name="b")
    randomize_b(model)
    lora.set_adapters(model, ["a", "b"], [0.7, 0.4])
    direct = model(*inputs()).numpy()  # trainable adapters: the per-adapter path
    for p in lora.lora_parameters(model):
        p.stop_gradient = True
    with paddle.no_grad():
        np.testing.assert_allclose(model(*inputs()).numpy(), direct, rtol=1e-5, atol=1e-6)
        lora.set_adapters(model, ["a", "b"], [0.2, 1.0])
        changed = model(*inputs()).numpy()
        lora.set_adapters(model, "b")
        only_b = model(*inputs()).numpy()
    assert np.abs(changed - direct).max() > 1e-3 and np.abs(only_b - changed).max() > 1e-3
    for p in lora.lora_parameters(model):
        p.stop_gradient = False
    np.testing.assert_allclose(model(*inputs()).numpy(), only_b, rtol=1e-5, atol=1e-6)
    state = {k: v * 2 for k, v in lora.lora_state_dict(model, "b").items() if k.endswith("lora_B")}
    state.update({k: v for k, v in lora.lora_state_dict(model, "b").items() if k.endswith("lora_A")})
    for p in lora.lora_parameters(model):
        p.stop_gradient = True
    lora.set_lora_state_dict(model, state, "b")
    with paddle.no_grad():
        doubled = model(*inputs()).numpy()
    for p in lora.lora_parameters(model):
        p.stop_gradient = False
    np.testing.assert_allclose(doubled, model(*inputs()).numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(doubled - only_b).max() > 1e-3

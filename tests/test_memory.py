"""The memory estimator's parameter counts against real built models, its per-block activation accounting against
Paddle's allocator, the FLUX.1-dev LoRA count, and the CLI."""

import contextlib
import gc
import json
import os

import numpy as np
import paddle
import pytest
from script_loader import load_script

import ppflux_lightning  # noqa: F401
from ppflux_lightning import lora
from ppflux_lightning.config import load_config, validate
from ppflux_lightning.engine import memory
from ppflux_lightning.engine.schema import DEFAULTS
from ppflux_lightning.models.attention import RMSNorm
from ppflux_lightning.models.blocks import DoubleStreamBlock, SingleStreamBlock
from ppflux_lightning.models.embeddings import apply_rope, rope_frequencies
from ppflux_lightning.models.flux_transformer import FluxConfig, FluxTransformer2DModel
from ppflux_lightning.objectives import DistillationRecipe, EulerSolver
from ppflux_lightning.schedulers.flow_match import FlowMatchEulerScheduler
from ppflux_lightning.utils.safetensors_io import SafetensorsFile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, "assets", "toy", "flux-toy")
SMALL = [FluxConfig(in_channels=16, num_layers=2, num_single_layers=3, attention_head_dim=16, num_attention_heads=3,
                    joint_attention_dim=24, pooled_projection_dim=20, axes_dims_rope=(4, 6, 6)),
         FluxConfig(in_channels=8, out_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8,
                    num_attention_heads=2, joint_attention_dim=12, pooled_projection_dim=8, guidance_embeds=False,
                    axes_dims_rope=(2, 2, 4))]


def estimate_memory():
    """tools/estimate_memory.py imported by path (tools/ is not a package)."""
    return load_script("tools/estimate_memory.py")


@contextlib.contextmanager
def quiet_gc():
    """No garbage collection of earlier tests' tensors inside an allocator measurement."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def count(params):
    return sum(int(np.prod(p.shape)) for p in params)


@pytest.mark.parametrize("fc", SMALL)
def test_transformer_layers_and_params_match_the_built_model(fc):
    model = FluxTransformer2DModel(fc)
    built = [(n, *layer.weight.shape) for n, layer in model.named_sublayers() if isinstance(layer, paddle.nn.Linear)]
    assert memory.linear_layers(fc) == built
    assert memory.transformer_params(fc) == count(model.parameters())


@pytest.mark.parametrize("targets", [None, ["to_q", "proj_mlp"], r"single_transformer_blocks\.\d+\.proj_out"])
def test_lora_count_matches_add_lora(targets):
    fc = SMALL[0]
    model = FluxTransformer2DModel(fc)
    wrapped = lora.add_lora(model, 4, 4, list(memory.REFERENCE_TARGETS) if targets is None else targets)
    assert [n for n, _, _ in memory.lora_modules(fc, targets)] == wrapped
    assert memory.lora_params(fc, 4, targets) == count(lora.lora_parameters(model))


def test_reference_lora_targets_on_flux1_dev():
    fc = FluxConfig()  # FLUX.1-dev
    names = [n for n, _, _ in memory.lora_modules(fc, None)]
    assert len(names) == 342
    assert sum(n.startswith("transformer_blocks.0.") for n in names) == 12
    assert sum(n.startswith("single_transformer_blocks.0.") for n in names) == 3
    assert memory.lora_params(fc, 32) == 89_653_248  # "89.7M"
    assert memory.discriminator_params(fc) == 57 * (2 * 3072**2 + 7 * 3072 + 1)  # ~1.077B
    with paddle.LazyGuard():  # parameters described, not allocated
        full = FluxTransformer2DModel(fc)
    assert memory.transformer_params(fc) == count(full.parameters())


@pytest.mark.parametrize("fc", SMALL)
def test_discriminator_count_matches_the_recipe_heads(fc):
    model = FluxTransformer2DModel(fc)
    solver = EulerSolver.from_scheduler(FlowMatchEulerScheduler(), 16, 20, 4)
    objectives = validate({}, DEFAULTS)["objectives"]
    recipe = DistillationRecipe(model, objectives, solver)
    assert memory.discriminator_params(fc) == count(recipe.parameters("discriminator"))
    assert memory.num_heads(fc) == fc.num_layers + fc.num_single_layers


@pytest.mark.parametrize("name,fn,weights", [
    ("text_encoder", memory.clip_text_params, "model.safetensors"),
    ("text_encoder_2", memory.t5_encoder_params, "model.safetensors"),
    ("vae", memory.vae_params, "diffusion_pytorch_model.safetensors")])
def test_component_counts_match_the_toy_weight_files(name, fn, weights):
    with open(os.path.join(TOY, name, "config.json")) as f:
        cfg = json.load(f)
    shapes = SafetensorsFile(os.path.join(TOY, name, weights)).shapes()
    assert fn(cfg) == sum(int(np.prod(s)) for s in shapes.values())


def test_flux1_component_sizes():
    # CLIP-L text 123.06M, T5-v1.1-XXL encoder 4.762B, FLUX.1 VAE 83.8M parameters
    comps = memory.FLUX1_COMPONENTS
    assert round(memory.clip_text_params(comps["text_encoder"]) / 1e6, 1) == 123.1
    assert round(memory.t5_encoder_params(comps["text_encoder_2"]) / 1e9, 3) == 4.762
    assert round(memory.vae_params(comps["vae"]) / 1e6, 1) == 83.8


@pytest.mark.parametrize("kind", ["double", "single"])
def test_block_saved_bytes_match_the_allocator(kind):
    """What one block's forward keeps for backward, measured on the CPU allocator, vs `block_saved`."""
    from paddle.base import core

    b, st, si, heads, hd = 2, 8, 64, 4, 16
    fc = FluxConfig(num_layers=1, num_single_layers=1, attention_head_dim=hd, num_attention_heads=heads,
                    axes_dims_rope=(4, 6, 6))
    c = fc.inner_dim
    paddle.seed(0)
    block = DoubleStreamBlock(c, heads, hd) if kind == "double" else SingleStreamBlock(c, heads, hd)
    lora.add_lora(block, 4, 4, list(memory.REFERENCE_TARGETS))
    rope = rope_frequencies(paddle.zeros([st + si, 3]), fc.axes_dims_rope)
    temb = paddle.randn([b, c])
    x, ctx = paddle.randn([b, si, c]), paddle.randn([b, st, c])
    joint = paddle.concat([ctx, x], axis=1)
    for t in (x, ctx, joint):
        t.stop_gradient = False
    with paddle.no_grad():  # RoPE's expanded tables are built once per forward and shared by every block: not counted
        block(x, ctx, temb, rope) if kind == "double" else block(joint, temb, rope)
    with quiet_gc():
        before = core.host_memory_stat_current_value("Allocated", 0)
        out = block(x, ctx, temb, rope) if kind == "double" else (block(joint, temb, rope),)
        kept = core.host_memory_stat_current_value("Allocated", 0) - before - sum(int(o.numel()) * 4 for o in out)
    prefix = "transformer_blocks.0." if kind == "double" else "single_transformer_blocks.0."
    s = memory.Shapes(fc, st, si, b, 4, True, [m for m in memory.lora_modules(fc) if m[0].startswith(prefix)], 4, c)
    expected = b * memory.block_saved(s, kind)
    assert abs(kept - expected) / expected < 0.03, (kept, expected)


def _kept_per_element(fn, x0):
    """Bytes per element that `fn(x)` keeps for backward once its input and output are dropped (input freed: -)."""
    from paddle.base import core

    with quiet_gc():
        x = x0 * 1.0
        before = core.host_memory_stat_current_value("Allocated", 0)
        z = fn(x) * 2.0  # a scale keeps nothing for backward
        del x
        kept = core.host_memory_stat_current_value("Allocated", 0) - before - int(z.numel()) * z.element_size()
    return kept / int(x0.numel())


def test_bf16_copies_counted_by_block_saved():
    """The bf16 pieces the CPU train steps cannot run: RMSNorm keeps an fp32 copy of its bf16 input and a bf16 copy
    of the normalised tensor (1 f32 + 1 act); RoPE keeps 2 fp32 copies on the CPU matmul path, 3 on the GPU path."""
    x0 = paddle.randn([2, 64, 4, 16]).astype("bfloat16")
    x0.stop_gradient = False
    norm = RMSNorm(16)
    norm.to(dtype="bfloat16")
    # input (2 bytes) freed, fp32 copy (4) + bf16 copy (2) kept, plus the per-head rsqrt (4 / head_dim)
    assert _kept_per_element(norm, x0) == pytest.approx(-2 + 4 + 2 + 4 / 16)
    rope = rope_frequencies(paddle.zeros([64, 3]), (4, 6, 6))
    with paddle.no_grad():  # the per-forward expanded tables, shared by every block, are not per-block memory
        apply_rope(x0, rope, use_matmul=True)
    for use_matmul, copies in ((True, 2), (False, 3)):
        kept = _kept_per_element(lambda x, m=use_matmul: apply_rope(x, rope, use_matmul=m), x0)
        assert kept == pytest.approx(-2 + 4 * copies, abs=0.2)


def test_dev_config_estimate_and_levers():
    cfg = load_config(os.path.join(ROOT, "configs", "flux_lightning_dev.yaml"), [], schema=DEFAULTS)
    est = memory.estimate(cfg)
    assert est.dtype == "bfloat16" and est.shapes.image_tokens == 4096 and est.shapes.text_tokens == 512
    assert est.counts["lora_modules"] == 342 and est.counts["discriminator_heads"] == 57
    assert "T5 encoder weights" in [x.name for x in est.static]  # LAION data: encoders resident
    off = memory.estimate(cfg, encoders=False)
    assert est.static_bytes - off.static_bytes == pytest.approx(2 * (4_762_310_656 + 123_060_480 + 83_819_683),
                                                                rel=1e-3)
    no_ckpt = load_config(os.path.join(ROOT, "configs", "flux_lightning_dev.yaml"),
                          ["model.gradient_checkpointing=false"], schema=DEFAULTS)
    assert memory.estimate(no_ckpt).step_bytes("generator") > est.step_bytes("generator") + 100 * memory.GIB
    narrow = load_config(os.path.join(ROOT, "configs", "flux_lightning_dev.yaml"),
                         ["objectives.adversarial.head_channels=768"], schema=DEFAULTS)
    assert memory.estimate(narrow).counts["discriminator"] < est.counts["discriminator"] / 3


def test_cli_prints_the_estimate_and_rejects_bad_input(capsys, tmp_path):
    tool = estimate_memory()
    assert tool.main(["-c", os.path.join(ROOT, "configs", "flux_lightning_dev.yaml")]) == 0
    assert "per-GPU peak" in capsys.readouterr().out
    missing = str(tmp_path / "nowhere")
    tool = estimate_memory()
    assert tool.main(["-c", os.path.join(ROOT, "configs", "flux_lightning_dev.yaml"),
                                 "-o", f"model.pretrained={missing}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and missing in err

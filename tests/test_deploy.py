"""Static-graph export and the Paddle Inference pipeline against the dygraph models they were traced from."""

import os
import shutil

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image
from script_loader import load_script

from ppflux_lightning.export import DeployPipeline, export_pipeline, load_pipeline
from ppflux_lightning.export import export as export_module
from ppflux_lightning.export.export import enable_prim_for_cinn, save_graph, transformer_graph, transformer_specs
from ppflux_lightning.export.predictor import StaticGraph, cinn_status
from ppflux_lightning.lora import add_lora, lora_layers
from ppflux_lightning.models import FluxConfig, FluxTransformer2DModel
from ppflux_lightning.pipelines import FluxPipeline, build_tiny_pipeline
from ppflux_lightning.utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEIGHT, WIDTH, TEXT_LEN = 32, 48, 16
TINY = dict(in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=24, pooled_projection_dim=8, axes_dims_rope=(4, 6, 6))


def grid_ids(h, w):
    ids = np.zeros((h, w, 3), np.float32)
    ids[..., 1] = np.arange(h)[:, None]
    ids[..., 2] = np.arange(w)[None, :]
    return ids.reshape(-1, 3)


def transformer_inputs(config, batch, grid, text_len, seed=0):
    rng = np.random.default_rng(seed)
    inputs = dict(
        hidden_states=rng.standard_normal((batch, grid[0] * grid[1], config.in_channels)).astype(np.float32),
        encoder_hidden_states=rng.standard_normal((batch, text_len, config.joint_attention_dim)).astype(np.float32),
        pooled_projections=rng.standard_normal((batch, config.pooled_projection_dim)).astype(np.float32),
        timestep=rng.uniform(0.05, 1.0, size=batch).astype(np.float32),
        img_ids=grid_ids(*grid),
        txt_ids=np.zeros((text_len, 3), np.float32),
    )
    if config.guidance_embeds:
        inputs["guidance"] = np.full((batch,), 0.35, np.float32)
    return inputs


@pytest.mark.parametrize("guidance_embeds,onednn,buckets", [(True, False, False), (False, True, True)])
def test_transformer_predictor_matches_dygraph(tmp_path, guidance_embeds, onednn, buckets):
    """Batch is dynamic (1 and 3 from one export); the image-token count is fixed, or dynamic for several
    resolution buckets; plain CPU kernels and oneDNN (with its inplace-pass workaround)."""
    paddle.seed(1)
    config = FluxConfig(**TINY, guidance_embeds=guidance_embeds)
    model = FluxTransformer2DModel(config)
    model.eval()
    grids, text_len = ([(4, 6), (2, 8)] if buckets else [(4, 6)]), 5
    seq = None if buckets else grids[0][0] * grids[0][1]
    save_graph(transformer_graph(model), transformer_specs(config, seq, text_len), tmp_path, "t")
    graph = StaticGraph(str(tmp_path / "t"), onednn=onednn)
    for batch, grid in [(1, grids[0]), (3, grids[-1])]:
        inputs = transformer_inputs(config, batch, grid, text_len, seed=batch)
        with paddle.no_grad():
            want = model(**{k: paddle.to_tensor(v) for k, v in inputs.items()}).numpy()
        (got,) = graph(**inputs)
        assert got.shape == want.shape
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < 1e-4, (batch, rel)


def test_export_under_cinn_prim_flags_matches_dygraph(tmp_path, monkeypatch):
    """With FLAGS_use_cinn=1 on a CINN build (pretended here: this CPU build has none) export turns on Paddle's
    primitive decomposition before tracing; the flags really switch on, and the graph traced under them still
    computes the dygraph velocity."""
    config = FluxConfig(**TINY, guidance_embeds=True)
    paddle.seed(2)
    model = FluxTransformer2DModel(config)
    model.eval()
    monkeypatch.setenv("FLAGS_use_cinn", "1")
    monkeypatch.setenv("FLAGS_prim_all", "false")  # restored after the test, whatever enable_prim_for_cinn sets
    monkeypatch.setenv("FLAGS_prim_enable_dynamic", "false")
    monkeypatch.setattr(paddle, "is_compiled_with_cinn", lambda: True)
    dynamic = paddle.get_flags(["FLAGS_prim_enable_dynamic"])
    try:
        assert enable_prim_for_cinn()
        assert paddle.framework.core._is_all_prim_enabled()
        assert paddle.get_flags(["FLAGS_prim_enable_dynamic"])["FLAGS_prim_enable_dynamic"]
        save_graph(transformer_graph(model), transformer_specs(config, 24, 5), tmp_path, "prim")
    finally:
        paddle.framework.core._set_prim_all_enabled(False)
        paddle.set_flags(dynamic)
    inputs = transformer_inputs(config, 2, (4, 6), 5)
    with paddle.no_grad():
        want = model(**{k: paddle.to_tensor(v) for k, v in inputs.items()}).numpy()
    (got,) = StaticGraph(str(tmp_path / "prim"))(**inputs)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4


def test_cinn_line_on_a_build_without_cinn(monkeypatch):
    monkeypatch.setenv("FLAGS_use_cinn", "1")
    use, message = cinn_status()
    if paddle.is_compiled_with_cinn():
        assert use and message is None
    else:
        assert not use and "no CINN" in message
    monkeypatch.setenv("FLAGS_use_cinn", "0")
    assert cinn_status() == (False, None)


# ---------------------------------------------------------------- the whole pipeline on the tiny FLUX folder
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny pipeline folder, its dygraph pipeline and its export with two resolution buckets (dynamic token
    count and latent size), traced with FLAGS_use_cinn=1 set."""
    root = tmp_path_factory.mktemp("deploy")
    model_dir = build_tiny_pipeline(str(root / "tiny"), seed=0)
    pipe = load_pipeline(model_dir)
    pipe.set_progress_bar_config(disable=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLAGS_use_cinn", "1")
        export_dir = export_pipeline(pipe, str(root / "export"), [(HEIGHT, WIDTH), (WIDTH, HEIGHT)], steps=4,
                                     guidance=3.5, max_sequence_length=TEXT_LEN)
    return {"model_dir": model_dir, "pipe": pipe, "export_dir": export_dir, "root": root}


def dygraph_images(pipe, prompt, seed, num_images=1, height=HEIGHT, width=WIDTH):
    return pipe(prompt, height=height, width=width, num_inference_steps=4, guidance_scale=3.5, seed=seed,
                num_images_per_prompt=num_images, max_sequence_length=TEXT_LEN, output_type="np").images


def test_exported_pipeline_matches_dygraph_with_cinn_flag(tiny, monkeypatch, capsys):
    monkeypatch.setenv("FLAGS_use_cinn", "1")
    deploy = DeployPipeline(tiny["export_dir"])
    if not paddle.is_compiled_with_cinn():
        assert "no CINN" in capsys.readouterr().out
    prompts = ["a red cat sitting on a chair", "two dogs playing in the park"]
    timings = {}
    got = deploy(prompts, seed=11, num_images=2, height=HEIGHT, width=WIDTH, timings=timings)
    want = dygraph_images(tiny["pipe"], prompts, seed=11, num_images=2)
    assert got.shape == want.shape == (4, HEIGHT, WIDTH, 3)
    assert np.abs(got - want).max() < 2e-3
    assert got.std() > 0.01  # a real image, not a constant
    assert list(timings) == ["text encoding", "step 1", "step 2", "step 3", "step 4", "vae decode"]
    got = deploy(prompts[0], seed=12, height=WIDTH, width=HEIGHT, steps=2, guidance=2.0)  # the other bucket
    want = tiny["pipe"](prompts[0], height=WIDTH, width=HEIGHT, num_inference_steps=2, guidance_scale=2.0, seed=12,
                        max_sequence_length=TEXT_LEN, output_type="np").images
    assert got.shape == want.shape == (1, WIDTH, HEIGHT, 3)
    assert np.abs(got - want).max() < 2e-3


def test_deploy_infer_png_equals_tools_infer_png(tiny, tmp_path, capsys):
    """Same seed -> same initial latents -> the same PNG (within 2/255) from deploy/infer.py and tools/infer.py."""
    deploy_png, tools_png = str(tmp_path / "deploy.png"), str(tmp_path / "tools.png")
    infer = load_script("deploy/infer.py")
    infer.main(["--model_dir", tiny["export_dir"], "--prompt", "a lighthouse", "--seed", "5", "--output", deploy_png,
                "--height", str(HEIGHT), "--width", str(WIDTH), "--benchmark", "1"])
    out = capsys.readouterr().out
    assert "step 4" in out and "vae decode" in out and "total" in out
    tools = load_script("tools/infer.py")
    tools.main(["--model", tiny["model_dir"], "--prompt", "a lighthouse", "--seed", "5", "--out", tools_png,
                "--height", str(HEIGHT), "--width", str(WIDTH), "--max_sequence_length", str(TEXT_LEN)])
    a = np.asarray(Image.open(deploy_png), dtype=np.int16)
    b = np.asarray(Image.open(tools_png), dtype=np.int16)
    assert a.shape == b.shape == (HEIGHT, WIDTH, 3)
    assert np.abs(a - b).max() <= 2


def test_bad_export_folders_and_resolutions(tiny, tmp_path):
    broken = str(tmp_path / "broken")
    shutil.copytree(tiny["export_dir"], broken)
    os.remove(os.path.join(broken, "transformer", "model.pdiparams"))
    with pytest.raises(FileNotFoundError, match="transformer/model.pdiparams"):
        DeployPipeline(broken)

    old = str(tmp_path / "old")
    shutil.copytree(tiny["export_dir"], old)
    path = os.path.join(old, "deploy.yaml")
    with open(path) as f:
        config = yaml.safe_load(f)
    config["format_version"] = 0
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    with pytest.raises(ConfigError, match="format_version 0"):
        DeployPipeline(old)

    with pytest.raises(FileNotFoundError, match="deploy.yaml"):
        DeployPipeline(str(tmp_path))

    deploy = DeployPipeline(tiny["export_dir"])
    with pytest.raises(ValueError, match=f"64x64 is not in this export; exported: {HEIGHT}x{WIDTH}, {WIDTH}x{HEIGHT}"):
        deploy("a cat", height=64, width=64)
    with pytest.raises(ValueError, match="pass both height and width"):
        deploy("a cat")


def test_failed_export_leaves_no_folder(tiny, tmp_path, monkeypatch):
    calls = []

    def fail_on_third(layer, specs, folder, name):
        calls.append(name)
        if len(calls) == 3:
            raise RuntimeError("simulated tracing failure")
        os.makedirs(os.path.join(folder, name))

    monkeypatch.setattr(export_module, "save_graph", fail_on_third)
    with pytest.raises(RuntimeError, match="simulated"):
        export_pipeline(tiny["pipe"], str(tmp_path / "out"), [(HEIGHT, WIDTH)], max_sequence_length=TEXT_LEN)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ConfigError, match="30x48"):
        export_pipeline(tiny["pipe"], str(tmp_path / "out"), [(30, 48)], max_sequence_length=TEXT_LEN)


def test_load_pipeline_fuses_lora(tiny, tmp_path):
    """The exported transformer holds the LoRA folded into plain Linear weights: same output as the unfused
    adapter at the same scale."""
    pipe = FluxPipeline.from_pretrained(tiny["model_dir"])
    paddle.seed(3)
    add_lora(pipe.transformer, rank=4, alpha=2.0)
    for layer in lora_layers(pipe.transformer).values():
        layer.lora_B.set_value(paddle.randn(layer.lora_B.shape) * 0.1)
    lora_file = pipe.save_lora_weights(str(tmp_path))
    reference = FluxPipeline.from_pretrained(tiny["model_dir"])
    reference.load_lora_weights(lora_file, scale=0.5)
    fused = load_pipeline(tiny["model_dir"], lora=lora_file, lora_scale=0.5)
    assert not lora_layers(fused.transformer)
    config = fused.transformer.config
    inputs = {k: paddle.to_tensor(v) for k, v in transformer_inputs(config, 2, (2, 4), 3).items()}
    with paddle.no_grad():
        want, got, base = (m.transformer(**inputs).numpy() for m in (reference, fused, tiny["pipe"]))
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5
    assert np.abs(base - want).max() > 1e-3  # the LoRA does change the output

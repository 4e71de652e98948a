"""Inference speed paths against the plain ones: fused projections (one GEMM per stream / per single block) equal
the separate layers and diffusers; they step aside for unfused LoRA adapters and training, follow LoRA fuse/unfuse,
and are what an exported graph runs; blocked CPU attention equals the full softmax and PyTorch's SDPA."""

import re

import numpy as np
import paddle
import pytest
import torch
from torch_reference import image_ids, random_diffusers_transformer, rel_err

from ppflux_lightning import lora
from ppflux_lightning.export.export import save_graph, transformer_graph, transformer_specs
from ppflux_lightning.export.graphs import TransformerGraph
from ppflux_lightning.export.predictor import StaticGraph
from ppflux_lightning.models import FluxTransformer2DModel
from ppflux_lightning.models.attention import attention

CONFIG = dict(in_channels=8, num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
              joint_attention_dim=12, pooled_projection_dim=8, guidance_embeds=True, axes_dims_rope=(2, 2, 4))
GRID, TXT = (4, 5), 6


def make_inputs(batch, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        hidden_states=rng.standard_normal((batch, GRID[0] * GRID[1], 8)).astype(np.float32),
        encoder_hidden_states=rng.standard_normal((batch, TXT, 12)).astype(np.float32),
        pooled_projections=rng.standard_normal((batch, 8)).astype(np.float32),
        timestep=rng.uniform(0.1, 1.0, size=batch).astype(np.float32),
        img_ids=image_ids(*GRID),
        txt_ids=np.zeros((TXT, 3), np.float32),
        guidance=np.full((batch,), 0.35, np.float32),
    )


def run(model, inputs):
    with paddle.no_grad():
        return model(**{k: paddle.to_tensor(v) for k, v in inputs.items()}).numpy()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    ref = random_diffusers_transformer(CONFIG, seed=2, std=0.1)
    folder = tmp_path_factory.mktemp("fused")
    ref.save_pretrained(str(folder))
    return ref, str(folder)


def separate_linear_calls(model):
    """Count forward calls of the layers a fused GEMM replaces."""
    calls = []
    for name, layer in model.named_sublayers():
        if name.endswith(("to_q", "add_q_proj", "proj_mlp")):
            layer.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("batch", [1, 2])
def test_fused_equals_separate_and_diffusers(pair, batch):
    ref, folder = pair
    inputs = make_inputs(batch)
    with torch.no_grad():
        expected = ref(**{k: torch.tensor(v) for k, v in inputs.items()}).sample.numpy()
    model = FluxTransformer2DModel.from_pretrained(folder)
    model.eval()
    calls = separate_linear_calls(model)
    separate = run(model, inputs)
    assert len(calls) == 2 * 2 + 2 * 2  # double blocks: to_q, add_q_proj; single blocks: attn.to_q, proj_mlp
    model.fuse_projections()
    calls.clear()
    fused = run(model, inputs)
    assert calls == []  # the fused GEMMs ran instead
    assert rel_err(fused, separate) <= 1e-6
    assert rel_err(fused, expected) <= 1e-4
    model.unfuse_projections()
    assert rel_err(run(model, inputs), separate) == 0.0 and len(calls) == 8


def test_unfused_lora_disables_fusion_and_fuse_lora_refreshes_it(pair):
    _, folder = pair
    inputs = make_inputs(1, seed=3)
    model = FluxTransformer2DModel.from_pretrained(folder)
    model.eval()
    base = run(model, inputs)
    lora.add_lora(model, rank=2, target_modules=["to_q", "add_k_proj", "proj_mlp"])
    paddle.seed(5)
    for layer in lora.lora_layers(model).values():
        layer.lora_B.set_value(paddle.randn(layer.lora_B.shape) * 0.3)
    with_adapter = run(model, inputs)
    assert rel_err(with_adapter, base) > 1e-3
    model.fuse_projections()  # adapters active and unfused: the separate layers must run
    assert rel_err(run(model, inputs), with_adapter) <= 1e-6
    lora.fuse_lora(model)  # the adapter moves into the base weights: the fused copies are rebuilt from them
    assert rel_err(run(model, inputs), with_adapter) <= 1e-5
    lora.unfuse_lora(model)
    assert rel_err(run(model, inputs), with_adapter) <= 1e-6
    lora.set_lora_enabled(model, False)
    assert rel_err(run(model, inputs), base) <= 1e-5


def test_training_forward_drops_the_fused_copies(pair):
    _, folder = pair
    inputs = make_inputs(1, seed=4)
    model = FluxTransformer2DModel.from_pretrained(folder)
    model.fuse_projections()
    model.train()
    tensors = {k: paddle.to_tensor(v) for k, v in inputs.items()}
    loss = model(**tensors).square().mean()
    loss.backward()
    assert model.transformer_blocks[0].attn.to_q.weight.grad is not None  # training ran the separate layers
    paddle.optimizer.SGD(learning_rate=1.0, parameters=model.parameters()).step()
    model.eval()
    fused_after = run(model, inputs)
    model.unfuse_projections()
    assert rel_err(fused_after, run(model, inputs)) <= 1e-6  # rebuilt from the trained weights, not stale


def test_exported_graph_runs_the_fused_projections(pair, tmp_path):
    _, folder = pair
    model = FluxTransformer2DModel.from_pretrained(folder)
    model.eval()
    inputs = make_inputs(2, seed=6)
    want = run(model, inputs)
    save_graph(transformer_graph(model), transformer_specs(model.config, GRID[0] * GRID[1], TXT), tmp_path, "t")
    assert model.transformer_blocks[0].attn._fusion  # TransformerGraph fused the projections before tracing
    model.unfuse_projections()
    save_graph(TransformerGraph(model, fuse=False), transformer_specs(model.config, GRID[0] * GRID[1], TXT),
               tmp_path, "u")
    fused, separate = (matmuls(tmp_path / name / "model.json") for name in ("t", "u"))
    # 4 projection GEMMs fewer per double block (6 -> 2) and 3 fewer per single block (4 -> 1)
    assert separate - fused == 2 * 4 + 2 * 3, (separate, fused)
    (got,) = StaticGraph(str(tmp_path / "t"))(**inputs)
    assert rel_err(got, want) <= 1e-5


def matmuls(program_file):
    return len(re.findall(r'"#":"\w+\.matmul"', program_file.read_text()))


@pytest.mark.parametrize("shape", [(1, 37, 3, 8), (2, 20, 2, 16)])
def test_blocked_attention_equals_full_and_torch(shape):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    pq, pk, pv = (paddle.to_tensor(a) for a in (q, k, v))
    full = attention(pq, pk, pv, block_bytes=1 << 40).numpy()
    blocked = attention(pq, pk, pv, block_bytes=1).numpy()  # 16-row blocks, the last one partial
    b, s, h, d = shape
    expected = torch.nn.functional.scaled_dot_product_attention(
        *(torch.tensor(a).transpose(1, 2) for a in (q, k, v))).transpose(1, 2).reshape(b, s, h * d).numpy()
    np.testing.assert_allclose(blocked, full, rtol=0, atol=1e-6)
    np.testing.assert_allclose(blocked, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("frozen", ["", "weight", "bias", "weight,bias"])
def test_linear_matches_nn_linear_in_value_and_gradients(frozen, monkeypatch):
    """models.linear.Linear (addmm on the CPU) against nn.Linear with the same parameters, frozen or not."""
    from ppflux_lightning.models import linear
    from ppflux_lightning.models.linear import Linear

    monkeypatch.setattr(linear, "ADDMM_MIN_OUTPUT", 0)  # the addmm path at test size

    paddle.seed(0)
    ours, plain = Linear(6, 5), paddle.nn.Linear(6, 5)
    plain.weight.set_value(ours.weight)
    plain.bias.set_value(ours.bias)
    x = np.random.default_rng(0).standard_normal((2, 3, 6)).astype(np.float32)
    results = []
    for layer in (ours, plain):
        for name in filter(None, frozen.split(",")):
            getattr(layer, name).stop_gradient = True
        inp = paddle.to_tensor(x, stop_gradient=False)
        out = layer(inp)
        (out * out).sum().backward()
        results.append([out.numpy(), inp.grad.numpy()] + [p.grad.numpy() for p in (layer.weight, layer.bias)
                                                          if not p.stop_gradient])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

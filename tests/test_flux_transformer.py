"""The Paddle FLUX transformer against diffusers' FluxTransformer2DModel (PyTorch) on identical weights."""

import json
import os

import numpy as np
import paddle
import pytest
import torch
from torch_reference import (
    copy_torch_into_paddle,
    diffusers_to_bfl_reference,
    image_ids,
    random_diffusers_transformer,
    rel_err,
)

from ppflux_lightning.models import FluxConfig, FluxTransformer2DModel
from ppflux_lightning.models.blocks import DoubleStreamBlock, SingleStreamBlock
from ppflux_lightning.models.embeddings import rope_frequencies
from ppflux_lightning.utils.errors import CheckpointError, ConfigError
from ppflux_lightning.utils.safetensors_io import load_file, save_file

# Two configurations differing in width, head_dim / RoPE axes, depth, batch, grid shape and guidance embedding.
CASES = {
    "dev_like": dict(
        config=dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
                    num_attention_heads=2, joint_attention_dim=40, pooled_projection_dim=24, guidance_embeds=True,
                    axes_dims_rope=(4, 6, 6)),
        batch=2, grid=(4, 6), txt_len=7),
    "schnell_like": dict(
        config=dict(patch_size=1, in_channels=8, num_layers=1, num_single_layers=3, attention_head_dim=32,
                    num_attention_heads=3, joint_attention_dim=24, pooled_projection_dim=16, guidance_embeds=False,
                    axes_dims_rope=(8, 12, 12)),
        batch=1, grid=(5, 3), txt_len=5),
}


def make_inputs(case, seed=0):
    cfg = case["config"]
    rng = np.random.default_rng(seed)
    b, (h, w), n_txt = case["batch"], case["grid"], case["txt_len"]
    return dict(
        hidden_states=rng.standard_normal((b, h * w, cfg["in_channels"])).astype(np.float32),
        encoder_hidden_states=rng.standard_normal((b, n_txt, cfg["joint_attention_dim"])).astype(np.float32),
        pooled_projections=rng.standard_normal((b, cfg["pooled_projection_dim"])).astype(np.float32),
        timestep=rng.uniform(0.05, 1.0, size=b).astype(np.float32),
        img_ids=image_ids(h, w),
        txt_ids=np.zeros((n_txt, 3), np.float32),
        guidance=np.full((b,), 3.5, np.float32) if cfg["guidance_embeds"] else None,
    )


def run_diffusers(model, inputs):
    kwargs = {k: (None if v is None else torch.tensor(v)) for k, v in inputs.items()}
    with torch.no_grad():
        return model(**kwargs).sample.numpy()


def run_ours(model, inputs):
    kwargs = {k: (None if v is None else paddle.to_tensor(v)) for k, v in inputs.items()}
    with paddle.no_grad():
        return model(**kwargs).astype("float32").numpy()


@pytest.fixture(scope="module", params=sorted(CASES))
def reference(request, tmp_path_factory):
    case = CASES[request.param]
    model = random_diffusers_transformer(case["config"], seed=1)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(str(folder / "transformer"))
    inputs = make_inputs(case)
    return dict(case=case, model=model, folder=folder, inputs=inputs, expected=run_diffusers(model, inputs))


def test_forward_matches_diffusers(reference):
    ours = FluxTransformer2DModel.from_pretrained(str(reference["folder"] / "transformer"))
    assert rel_err(run_ours(ours, reference["inputs"]), reference["expected"]) <= 1e-4


def test_batched_ids_and_scalar_timestep_are_accepted(reference):
    ours = FluxTransformer2DModel.from_pretrained(str(reference["folder"] / "transformer"))
    inputs = dict(reference["inputs"])
    b = reference["case"]["batch"]
    inputs["img_ids"] = np.repeat(inputs["img_ids"][None], b, 0)
    inputs["txt_ids"] = np.repeat(inputs["txt_ids"][None], b, 0)
    assert rel_err(run_ours(ours, inputs), reference["expected"]) <= 1e-4
    inputs["timestep"] = np.float32(0.5)
    expected = run_diffusers(reference["model"], {**reference["inputs"], "timestep": np.full(b, 0.5, np.float32)})
    assert rel_err(run_ours(ours, inputs), expected) <= 1e-4


def test_sharded_diffusers_folder(reference, tmp_path):
    reference["model"].save_pretrained(str(tmp_path), max_shard_size="20KB")
    assert os.path.isfile(tmp_path / "diffusion_pytorch_model.safetensors.index.json")
    ours = FluxTransformer2DModel.from_pretrained(str(tmp_path))
    assert rel_err(run_ours(ours, reference["inputs"]), reference["expected"]) <= 1e-4


def test_bfloat16_load_streams_and_stays_close(reference):
    ours = FluxTransformer2DModel.from_pretrained(str(reference["folder"] / "transformer"), dtype="bfloat16")
    assert all(p.dtype == paddle.bfloat16 for p in ours.parameters())
    # Paddle's CPU build has no bf16 matmul: check the rounding of the weights, then run the bf16 weights in fp32.
    fp32 = FluxTransformer2DModel.from_pretrained(str(reference["folder"] / "transformer"))
    for (name, p16), p32 in zip(ours.state_dict().items(), fp32.state_dict().values()):
        np.testing.assert_allclose(p16.astype("float32").numpy(), p32.numpy(), rtol=2**-8, atol=1e-30, err_msg=name)
    ours.to(dtype="float32")
    assert rel_err(run_ours(ours, reference["inputs"]), reference["expected"]) <= 5e-2


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_black_forest_labs_single_file(reference, tmp_path, prefix):
    cfg = reference["case"]["config"]
    sd = {k: v.numpy() for k, v in reference["model"].state_dict().items()}
    bfl = diffusers_to_bfl_reference(sd, cfg["num_attention_heads"] * cfg["attention_head_dim"], cfg["guidance_embeds"])
    path = str(tmp_path / "flux.safetensors")
    save_file({prefix + k: v for k, v in bfl.items()}, path)
    # dev_like's RoPE axes are what shape inference gives for head_dim 16; schnell_like needs its config.
    config = None if cfg["axes_dims_rope"] == (4, 6, 6) else cfg
    ours = FluxTransformer2DModel.from_single_file(path, config=config)
    assert ours.config.guidance_embeds == cfg["guidance_embeds"]
    assert ours.config.num_single_layers == cfg["num_single_layers"]
    assert rel_err(run_ours(ours, reference["inputs"]), reference["expected"]) <= 1e-4


def test_save_pretrained_loads_in_diffusers(reference, tmp_path):
    from diffusers import FluxTransformer2DModel as DiffusersFlux

    ours = FluxTransformer2DModel.from_pretrained(str(reference["folder"] / "transformer"))
    ours.save_pretrained(str(tmp_path / "saved"))
    theirs = DiffusersFlux.from_pretrained(str(tmp_path / "saved")).eval()
    assert rel_err(run_diffusers(theirs, reference["inputs"]), reference["expected"]) <= 1e-6
    reloaded = FluxTransformer2DModel.from_pretrained(str(tmp_path / "saved"))
    assert np.array_equal(run_ours(reloaded, reference["inputs"]), run_ours(ours, reference["inputs"]))


def test_gradient_checkpointing_gives_same_gradients():
    case = CASES["dev_like"]
    paddle.seed(0)
    model = FluxTransformer2DModel(**case["config"])
    model.train()
    inputs = {k: (None if v is None else paddle.to_tensor(v)) for k, v in make_inputs(case).items()}

    def grads():
        model.clear_gradients()
        model(**inputs).square().mean().backward()
        return {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.enable_gradient_checkpointing()
    recomputed = grads()
    assert plain.keys() == recomputed.keys() and len(plain) == len(list(model.parameters()))
    for name in plain:
        np.testing.assert_allclose(recomputed[name], plain[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_block_features_come_from_the_forward_block_loop():
    """The discriminator's features and the forward share one block loop: the last feature is what gets projected."""
    case = CASES["dev_like"]
    paddle.seed(0)
    model = FluxTransformer2DModel(**case["config"])
    inputs = {k: (None if v is None else paddle.to_tensor(v)) for k, v in make_inputs(case).items()}
    with paddle.no_grad():
        features = model.block_features(**inputs)
        temb = model.embed(**inputs)[2]
        expected = model(**inputs).numpy()
    assert len(features) == model.num_blocks == 4
    assert all(list(f.shape) == [2, 24, 32] for f in features)
    np.testing.assert_array_equal(model.project_out(features[-1], temb).numpy(), expected)


def test_fused_lora_saves_in_pytorch_layout_and_reloads(tmp_path):
    """The layout rule goes by layer type: a Linear wrapped by a fused LoRA adapter is still transposed on save."""
    from ppflux_lightning.lora import add_lora, fuse_lora, lora_layers

    case = CASES["schnell_like"]
    paddle.seed(0)
    model = FluxTransformer2DModel(**case["config"])
    add_lora(model, rank=2)
    for layer in lora_layers(model).values():
        layer.lora_B.set_value(paddle.full(layer.lora_B.shape, 0.05, dtype=layer.lora_B.dtype))
    fuse_lora(model)
    model.save_pretrained(str(tmp_path / "fused"))
    saved = load_file(str(tmp_path / "fused" / "diffusion_pytorch_model.safetensors"))
    weight = model.transformer_blocks[0].attn.to_q.weight.numpy()  # Paddle [in, out]
    np.testing.assert_array_equal(saved["transformer_blocks.0.attn.to_q.weight"], weight.T)
    assert not any("lora" in k for k in saved)
    reloaded = FluxTransformer2DModel.from_pretrained(str(tmp_path / "fused"))
    inputs = make_inputs(case)
    np.testing.assert_array_equal(run_ours(reloaded, inputs), run_ours(model, inputs))


# ---------------------------------------------------------------- real FLUX.1 width
def _real_width_inputs(rng, n_txt=8, grid=(4, 6), inner=3072):
    ids = np.concatenate([np.zeros((n_txt, 3), np.float32), image_ids(*grid)])
    return (
        rng.standard_normal((1, grid[0] * grid[1], inner)).astype(np.float32),
        rng.standard_normal((1, n_txt, inner)).astype(np.float32),
        rng.standard_normal((1, inner)).astype(np.float32),
        ids,
    )


def _torch_rope(ids):
    from diffusers.models.embeddings import FluxPosEmbed

    return FluxPosEmbed(theta=10000, axes_dim=[16, 56, 56])(torch.tensor(ids))


def _real_width_pair(torch_cls, paddle_cls):
    """A diffusers block at FLUX.1 width (3072 = 24 x 128) with N(0, 0.02) weights, and ours with the same weights."""
    torch.manual_seed(0)
    ref = torch_cls(dim=3072, num_attention_heads=24, attention_head_dim=128).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0.0, 0.02)
    ours = paddle_cls(3072, 24, 128)
    copy_torch_into_paddle(ref, ours)
    return ref, ours


def test_real_width_double_block_matches_diffusers():
    from diffusers.models.transformers.transformer_flux import FluxTransformerBlock

    ref, ours = _real_width_pair(FluxTransformerBlock, DoubleStreamBlock)
    img, txt, temb, ids = _real_width_inputs(np.random.default_rng(0))
    with torch.no_grad():
        ref_txt, ref_img = ref(
            torch.tensor(img), torch.tensor(txt), torch.tensor(temb), image_rotary_emb=_torch_rope(ids)
        )
    del ref
    with paddle.no_grad():
        out_img, out_txt = ours(paddle.to_tensor(img), paddle.to_tensor(txt), paddle.to_tensor(temb),
                                rope_frequencies(paddle.to_tensor(ids), (16, 56, 56)))
    assert rel_err(out_img.numpy(), ref_img.numpy()) <= 1e-4
    assert rel_err(out_txt.numpy(), ref_txt.numpy()) <= 1e-4


def test_real_width_single_block_matches_diffusers():
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock

    ref, ours = _real_width_pair(FluxSingleTransformerBlock, SingleStreamBlock)
    img, txt, temb, ids = _real_width_inputs(np.random.default_rng(1))
    x = np.concatenate([txt, img], axis=1)
    with torch.no_grad():
        expected = ref(torch.tensor(x), torch.tensor(temb), image_rotary_emb=_torch_rope(ids)).numpy()
    del ref
    with paddle.no_grad():
        out = ours(paddle.to_tensor(x), paddle.to_tensor(temb), rope_frequencies(paddle.to_tensor(ids), (16, 56, 56)))
    assert rel_err(out.numpy(), expected) <= 1e-4


# ---------------------------------------------------------------- bad input
@pytest.fixture
def saved_tiny(tmp_path):
    paddle.seed(0)
    model = FluxTransformer2DModel(**CASES["dev_like"]["config"])
    model.save_pretrained(str(tmp_path / "t"))
    return tmp_path / "t"


def test_missing_and_unexpected_keys_are_listed(saved_tiny):
    path = str(saved_tiny / "diffusion_pytorch_model.safetensors")
    tensors = load_file(path)
    tensors.pop("proj_out.bias")
    tensors["extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match=r"missing keys \['proj_out.bias'\].*unexpected keys \['extra.weight'\]"):
        FluxTransformer2DModel.from_pretrained(str(saved_tiny))


def test_wrong_shape_names_the_tensor(saved_tiny):
    path = str(saved_tiny / "diffusion_pytorch_model.safetensors")
    tensors = load_file(path)
    tensors["proj_out.weight"] = np.zeros((3, 3), np.float32)
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match="proj_out.weight"):
        FluxTransformer2DModel.from_pretrained(str(saved_tiny))


def test_corrupt_file_missing_folder_unknown_dtype_and_bad_config(saved_tiny, tmp_path):
    with pytest.raises(ConfigError, match="bfloat8"):
        FluxTransformer2DModel.from_pretrained(str(saved_tiny), dtype="bfloat8")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FluxTransformer2DModel.from_pretrained(str(tmp_path / "nowhere"))
    with open(saved_tiny / "diffusion_pytorch_model.safetensors", "r+b") as f:
        f.truncate(200)
    with pytest.raises(CheckpointError, match="truncated|not a valid"):
        FluxTransformer2DModel.from_pretrained(str(saved_tiny))
    config = json.loads((saved_tiny / "config.json").read_text())
    config["num_layerz"] = 3
    (saved_tiny / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="num_layerz"):
        FluxTransformer2DModel.from_pretrained(str(saved_tiny))
    with pytest.raises(ConfigError, match="axes_dims_rope"):
        FluxConfig(attention_head_dim=64)


def test_wrong_input_shapes_are_named():
    model = FluxTransformer2DModel(**CASES["dev_like"]["config"])
    inputs = {k: (None if v is None else paddle.to_tensor(v)) for k, v in make_inputs(CASES["dev_like"]).items()}
    with pytest.raises(ValueError, match=r"\[B, seq, 16\]"):
        model(**{**inputs, "hidden_states": paddle.zeros([2, 24, 15])})
    with pytest.raises(ValueError, match="guidance"):
        model(**{**inputs, "guidance": None})



@pytest.mark.parametrize("use_matmul", [True, False])
def test_rope_pair_rotation_paths_match_diffusers(use_matmul):
    """Both pair rotations (the CPU matmul and the GPU flip) give diffusers' `apply_rotary_emb` to fp32 rounding."""
    from diffusers.models.embeddings import apply_rotary_emb

    from ppflux_lightning.models.embeddings import apply_rope

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 10, 3, 16)).astype(np.float32)  # [B, S, H, D]
    ids = np.stack([np.zeros(10), np.arange(10) // 4, np.arange(10) % 4], axis=1).astype(np.float32)
    cos, sin = rope_frequencies(paddle.to_tensor(ids), (4, 6, 6))
    ours = apply_rope(paddle.to_tensor(x), (cos, sin), use_matmul=use_matmul).numpy()
    expected = apply_rotary_emb(torch.tensor(x).transpose(1, 2), (torch.tensor(cos.numpy()), torch.tensor(sin.numpy())))
    np.testing.assert_allclose(ours, expected.transpose(1, 2).numpy(), rtol=0, atol=1e-6)

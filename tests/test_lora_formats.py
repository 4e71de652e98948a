"""LoRA file interop against diffusers + PEFT (PyTorch) on identical weights: PEFT, kohya, ComfyUI and PaddleMIX
files made here, our diffusers export read back by diffusers, and the errors for foreign or mismatched files."""

import json

import numpy as np
import paddle
import pytest
import torch
from torch_reference import image_ids, random_diffusers_transformer, rel_err

from ppflux_lightning import lora
from ppflux_lightning.models.flux_transformer import FluxTransformer2DModel
from ppflux_lightning.utils.errors import CheckpointError
from ppflux_lightning.utils.safetensors_io import load_file, save_file

HEADS, HEAD_DIM = 2, 8
INNER = HEADS * HEAD_DIM
CONFIG = dict(patch_size=1, in_channels=8, num_layers=2, num_single_layers=2, attention_head_dim=HEAD_DIM,
              num_attention_heads=HEADS, joint_attention_dim=16, pooled_projection_dim=8, guidance_embeds=True,
              axes_dims_rope=[2, 2, 4])  # fmt: skip
PEFT_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "to_add_out", "ff.net.0.proj", "ff_context.net.2",
                "proj_mlp", "proj_out", "norm1.linear", "norm.linear"]  # fmt: skip
TOL = 1e-4

rng = np.random.default_rng(0)
INPUTS = dict(
    x=rng.standard_normal((1, 16, 8)).astype("float32"),
    context=rng.standard_normal((1, 4, 16)).astype("float32"),
    pooled=rng.standard_normal((1, 8)).astype("float32"),
    img_ids=image_ids(4, 4),
    txt_ids=np.zeros((4, 3), np.float32),
)


def run_torch(model):
    i = INPUTS
    with torch.no_grad():
        out = model(torch.tensor(i["x"]), torch.tensor(i["context"]), torch.tensor(i["pooled"]), torch.tensor([0.5]),
                    torch.tensor(i["img_ids"]), torch.tensor(i["txt_ids"]), torch.tensor([0.35]), return_dict=False)
    return out[0].numpy()


def run_paddle(model):
    i = INPUTS
    args = [paddle.to_tensor(i[k]) for k in ("x", "context", "pooled")]
    return model(*args, 0.5, paddle.to_tensor(i["img_ids"]), paddle.to_tensor(i["txt_ids"]), 0.35).numpy()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("flux") / "transformer"
    random_diffusers_transformer(CONFIG).save_pretrained(str(path))
    return str(path)


def torch_model(base_dir):
    from diffusers import FluxTransformer2DModel as TorchFlux

    return TorchFlux.from_pretrained(base_dir).eval()


def peft_lora(base_dir, alpha=8.0, rank=4, seed=1):
    """A diffusers model with a PEFT LoRA (random, non-zero B) on double and single blocks, and its state dict."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    model = torch_model(base_dir)
    torch.manual_seed(seed)
    model.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=PEFT_TARGETS, init_lora_weights=False))
    state = {"transformer." + k: v.numpy().copy() for k, v in get_peft_model_state_dict(model).items()}
    return model, state


def with_alpha_keys(state, alpha, on_lora_a=False):
    """`<module>.alpha` keys, or `<module>.lora_A.weight.alpha` (the form diffusers' own Flux tests write)."""
    out = dict(state)
    for key in state:
        if key.endswith(".lora_A.weight"):
            alpha_key = key + ".alpha" if on_lora_a else key.replace(".lora_A.weight", ".alpha")
            out[alpha_key] = np.asarray(alpha, np.float32)
    return out


def test_base_load_matches_diffusers(base_dir):
    assert rel_err(run_paddle(FluxTransformer2DModel.from_pretrained(base_dir)), run_torch(torch_model(base_dir))) < TOL


@pytest.mark.parametrize("alpha_source", ["keys", "lora_A_keys", "metadata", "argument"])
def test_peft_file_matches_peft(base_dir, tmp_path, alpha_source):
    reference_model, state = peft_lora(base_dir, alpha=8.0)
    reference = run_torch(reference_model)
    path, kwargs, metadata = str(tmp_path / "peft.safetensors"), {}, {"format": "pt"}
    if alpha_source in ("keys", "lora_A_keys"):
        state = with_alpha_keys(state, 8.0, on_lora_a=alpha_source == "lora_A_keys")
    elif alpha_source == "metadata":
        metadata["lora_adapter_metadata"] = json.dumps({"transformer.r": 4, "transformer.lora_alpha": 8})
    else:
        kwargs["alpha"] = 8.0
    save_file(state, path, metadata=metadata)
    model = FluxTransformer2DModel.from_pretrained(base_dir)
    base = run_paddle(model)
    names = lora.load_lora_weights(model, path, **kwargs)
    assert any(n.startswith("single_transformer_blocks.") for n in names)
    assert any(n.startswith("transformer_blocks.") for n in names)
    out = run_paddle(model)
    assert rel_err(out, reference) < TOL
    assert rel_err(out, base) > 1e-2  # the LoRA does something


def test_prefixless_dict_of_torch_tensors(base_dir):
    reference_model, state = peft_lora(base_dir, alpha=4.0)
    model = FluxTransformer2DModel.from_pretrained(base_dir)
    lora.load_lora_weights(model, {k[len("transformer."):]: torch.tensor(v) for k, v in state.items()})
    assert rel_err(run_paddle(model), run_torch(reference_model)) < TOL


def test_fuse_at_scale_then_unload_matches_diffusers(base_dir, tmp_path):
    reference_model, state = peft_lora(base_dir, alpha=8.0)
    reference_model.fuse_lora(lora_scale=0.6)
    reference_model.unload_lora()
    reference = run_torch(reference_model)
    model = FluxTransformer2DModel.from_pretrained(base_dir)
    lora.load_lora_weights(model, with_alpha_keys(state, 8.0))
    unfused = run_paddle(model)
    lora.fuse_lora(model, scale=0.6)
    lora.unload_lora(model)
    assert not lora.lora_layers(model)
    assert rel_err(run_paddle(model), reference) < TOL
    assert sorted(model.state_dict()) == sorted(FluxTransformer2DModel.from_pretrained(base_dir).state_dict())
    assert rel_err(run_paddle(model), unfused) > 1e-3  # 0.6 differs from 1.0


def test_unload_without_fuse_is_base(base_dir):
    _, state = peft_lora(base_dir)
    model = FluxTransformer2DModel.from_pretrained(base_dir)
    base = run_paddle(model)
    lora.load_lora_weights(model, state)
    lora.unload_lora(model)
    np.testing.assert_array_equal(run_paddle(model), base)


def test_our_diffusers_export_loads_in_diffusers(base_dir, tmp_path):
    from diffusers import FluxPipeline

    model = FluxTransformer2DModel.from_pretrained(base_dir)
    lora.add_lora(model, rank=4, alpha=2.0, target_modules=["attn.to_q", "proj_mlp", "ff.net.2", "norm.linear"])
    paddle.seed(3)
    for layer in lora.lora_layers(model).values():
        layer.lora_B.set_value(paddle.randn(layer.lora_B.shape) * 0.3)
    ours = run_paddle(model)
    path = lora.save_lora_weights(model, str(tmp_path / "export"))
    assert path.endswith("pytorch_lora_weights.safetensors")
    reference_model = torch_model(base_dir)
    state, alphas = FluxPipeline.lora_state_dict(path, return_alphas=True)
    FluxPipeline.load_lora_into_transformer(state, alphas, reference_model)
    assert rel_err(run_torch(reference_model), ours) < TOL
    # and back into a fresh Paddle model
    again = FluxTransformer2DModel.from_pretrained(base_dir)
    lora.load_lora_weights(again, path)
    assert rel_err(run_paddle(again), ours) < TOL


def test_paddlemix_layout_equals_peft_layout(base_dir, tmp_path):
    _, state = peft_lora(base_dir, alpha=4.0)  # PaddleMIX files carry no alpha: alpha = rank
    pd_state = {k: v.T.copy() for k, v in state.items()}
    save_file(pd_state, str(tmp_path / "paddle_lora_weights.safetensors"), metadata={"format": "pd"})
    from_peft, from_pd = (FluxTransformer2DModel.from_pretrained(base_dir) for _ in range(2))
    lora.load_lora_weights(from_peft, state)
    lora.load_lora_weights(from_pd, str(tmp_path))  # a folder holding paddle_lora_weights.safetensors
    np.testing.assert_allclose(run_paddle(from_pd), run_paddle(from_peft), rtol=0, atol=1e-6)


def test_paddlemix_export_roundtrip_folds_alpha(base_dir, tmp_path):
    _, state = peft_lora(base_dir, alpha=8.0)
    model = FluxTransformer2DModel.from_pretrained(base_dir)
    lora.load_lora_weights(model, with_alpha_keys(state, 8.0))
    ours = run_paddle(model)
    path = lora.save_lora_weights(model, str(tmp_path), format="paddlemix")
    saved = load_file(path)
    key = "transformer.transformer_blocks.0.attn.to_q.lora_A.weight"
    assert saved[key].shape == (INNER, 4) and not any(k.endswith(".alpha") for k in saved)
    again = FluxTransformer2DModel.from_pretrained(base_dir)
    lora.load_lora_weights(again, path)
    assert rel_err(run_paddle(again), ours) < TOL


# ---------------------------------------------------------------- kohya / ComfyUI
def kohya_lora(rank=4, alpha=2.0, inner=INNER, seed=5, comfy=False):
    """A LoRA on BFL modules (fused qkv / linear1) with random down / up / alpha: kohya names
    (`lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`) or ComfyUI names
    (`diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight`)."""
    g = np.random.default_rng(seed)
    mlp = 4 * inner
    shapes = {  # BFL module -> (in, out)
        "double_blocks.0.img_attn.qkv": (inner, 3 * inner),
        "double_blocks.1.txt_attn.qkv": (inner, 3 * inner),
        "double_blocks.0.img_attn.proj": (inner, inner),
        "double_blocks.1.txt_mlp.0": (inner, mlp),
        "double_blocks.0.img_mod.lin": (inner, 6 * inner),
        "single_blocks.0.linear1": (inner, 3 * inner + mlp),
        "single_blocks.1.linear2": (inner + mlp, inner),
        "single_blocks.1.modulation.lin": (inner, 3 * inner),
        "final_layer.linear": (inner, 8),
        "final_layer.adaLN_modulation.1": (inner, 2 * inner),
    }
    state = {}
    for name, (n_in, n_out) in shapes.items():
        stem = f"diffusion_model.{name}" if comfy else "lora_unet_" + name.replace(".", "_")
        down, up = (".lora_A.weight", ".lora_B.weight") if comfy else (".lora_down.weight", ".lora_up.weight")
        state[stem + down] = g.standard_normal((rank, n_in)).astype(np.float32) * 0.3
        state[stem + up] = g.standard_normal((n_out, rank)).astype(np.float32) * 0.3
        state[stem + ".alpha"] = np.asarray(alpha, np.float32)
    return state


def kohya_merged_torch(base_dir, state):
    """Reference: add `alpha/r * up @ down` to the diffusers weights by hand (reference.md section 1 layout)."""
    i, mlp = INNER, 4 * INNER
    qkv = [(0, i), (i, 2 * i), (2 * i, 3 * i)]
    where = {  # BFL module -> [(diffusers module, row range)]
        "double_blocks_0_img_attn_qkv": [(f"transformer_blocks.0.attn.to_{n}", r) for n, r in zip("qkv", qkv)],
        "double_blocks_1_txt_attn_qkv": [(f"transformer_blocks.1.attn.add_{n}_proj", r) for n, r in zip("qkv", qkv)],
        "double_blocks_0_img_attn_proj": [("transformer_blocks.0.attn.to_out.0", None)],
        "double_blocks_1_txt_mlp_0": [("transformer_blocks.1.ff_context.net.0.proj", None)],
        "double_blocks_0_img_mod_lin": [("transformer_blocks.0.norm1.linear", None)],
        "single_blocks_0_linear1": [(f"single_transformer_blocks.0.attn.to_{n}", r) for n, r in zip("qkv", qkv)]
        + [("single_transformer_blocks.0.proj_mlp", (3 * i, 3 * i + mlp))],
        "single_blocks_1_linear2": [("single_transformer_blocks.1.proj_out", None)],
        "single_blocks_1_modulation_lin": [("single_transformer_blocks.1.norm.linear", None)],
        "final_layer_linear": [("proj_out", None)],
        "final_layer_adaLN_modulation_1": [("norm_out.linear", "swap")],
    }
    model = torch_model(base_dir)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, targets in where.items():
            down, up = state[f"lora_unet_{name}.lora_down.weight"], state[f"lora_unet_{name}.lora_up.weight"]
            delta = float(state[f"lora_unet_{name}.alpha"]) / down.shape[0] * (up @ down)
            for module, rows in targets:
                if rows == "swap":  # BFL (shift, scale) -> diffusers (scale, shift)
                    part = np.concatenate([delta[delta.shape[0] // 2 :], delta[: delta.shape[0] // 2]])
                else:
                    part = delta if rows is None else delta[rows[0] : rows[1]]
                modules[module].weight += torch.tensor(part)
    return model


def test_kohya_file_matches_hand_merge(base_dir, tmp_path):
    state = kohya_lora()
    reference = run_torch(kohya_merged_torch(base_dir, state))
    save_file(state, str(tmp_path / "kohya.safetensors"))
    model = FluxTransformer2DModel.from_pretrained(base_dir)
    names = lora.load_lora_weights(model, str(tmp_path / "kohya.safetensors"))
    assert "norm_out.linear" in names and "single_transformer_blocks.0.proj_mlp" in names
    assert rel_err(run_paddle(model), reference) < TOL
    lora.fuse_lora(model)
    assert rel_err(run_paddle(model), reference) < TOL


def test_comfyui_names_equal_kohya_names(base_dir):
    a, b = (FluxTransformer2DModel.from_pretrained(base_dir) for _ in range(2))
    lora.load_lora_weights(a, kohya_lora())
    lora.load_lora_weights(b, kohya_lora(comfy=True))
    assert sorted(lora.lora_layers(a)) == sorted(lora.lora_layers(b))
    np.testing.assert_allclose(run_paddle(b), run_paddle(a), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- errors leave the model unchanged
def test_lora_for_another_width_is_a_clear_error(base_dir):
    model = FluxTransformer2DModel.from_pretrained(base_dir)
    wide = dict(CONFIG, num_attention_heads=3)
    from diffusers import FluxTransformer2DModel as TorchFlux
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    other = TorchFlux(**wide)
    other.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q"], init_lora_weights=False))
    state = {"transformer." + k: v.numpy() for k, v in get_peft_model_state_dict(other).items()}
    with pytest.raises(CheckpointError, match=r"transformer_blocks\.0\.attn\.to_q.*24.*16 -> 16"):
        lora.load_lora_weights(model, state)
    with pytest.raises(CheckpointError, match=r"double_blocks|attn\.to_q.*another model width"):
        lora.load_lora_weights(model, kohya_lora(inner=24))
    assert not lora.lora_layers(model)


def test_unknown_keys_error_and_model_unchanged(base_dir):
    _, state = peft_lora(base_dir)
    model = FluxTransformer2DModel.from_pretrained(base_dir)
    lora.load_lora_weights(model, state)
    before = run_paddle(model)
    loaded = sorted(lora.lora_layers(model))
    bad = dict(kohya_lora())
    bad["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = np.zeros((4, 8), np.float32)
    bad["transformer.no_such_block.lora_A.weight"] = np.zeros((4, 8), np.float32)
    with pytest.raises(CheckpointError, match="lora_te1_text_model.*no_such_block|no_such_block.*lora_te1"):
        lora.load_lora_weights(model, bad)
    assert sorted(lora.lora_layers(model)) == loaded
    np.testing.assert_array_equal(run_paddle(model), before)


def test_incomplete_pair_is_an_error(base_dir):
    model = FluxTransformer2DModel.from_pretrained(base_dir)
    _, state = peft_lora(base_dir)
    state.pop("transformer.transformer_blocks.0.attn.to_q.lora_B.weight")
    with pytest.raises(CheckpointError, match=r"transformer_blocks\.0\.attn\.to_q"):
        lora.load_lora_weights(model, state)

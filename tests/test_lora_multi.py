"""Several LoRA adapters at once, against diffusers 0.31 + peft 0.13 on the same files and the same random tiny
transformer: a PEFT file and a kohya file of different ranks and targets, weighted, one alone, disabled and enabled,
deleted and reloaded, fused together and unloaded; a trained student saved beside a frozen extra adapter loads in
diffusers; XLabs files; foreign keys refused whole."""

import numpy as np
import paddle
import pytest
import torch
from test_lora_formats import CONFIG, TOL, kohya_lora, peft_lora, run_paddle, run_torch, torch_model, with_alpha_keys
from torch_reference import random_diffusers_transformer, rel_err

from ppflux_lightning import lora
from ppflux_lightning.models.flux_transformer import FluxTransformer2DModel
from ppflux_lightning.utils.errors import CheckpointError
from ppflux_lightning.utils.safetensors_io import save_file

# kohya modules diffusers 0.31's converter reads at any width (fused qkv split by rows; its linear1 split assumes
# FLUX.1's full width, so linear1 is covered by test_lora_formats' hand merge), rank 6 vs the PEFT file's 4.
KOHYA_MODULES = ("double_blocks_0_img_attn_qkv", "double_blocks_1_txt_attn_qkv", "double_blocks_0_img_attn_proj",
                 "double_blocks_1_txt_mlp_0", "single_blocks_1_linear2")  # fmt: skip


class Pipe(lora.FluxLoraLoaderMixin):
    def __init__(self, transformer):
        self.transformer = transformer


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("flux_multi") / "transformer"
    random_diffusers_transformer(CONFIG).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def files(base_dir, tmp_path_factory):
    """{"peft": path, "kohya": path}: a PEFT file (rank 4, alpha 8, double + single blocks) and a kohya file
    (rank 6, alpha 3, BFL names)."""
    folder = tmp_path_factory.mktemp("lora_files")
    _, state = peft_lora(base_dir, alpha=8.0, rank=4)
    peft_path = str(folder / "peft.safetensors")
    save_file(with_alpha_keys(state, 8.0), peft_path, metadata={"format": "pt"})
    kohya = {k: v for k, v in kohya_lora(rank=6, alpha=3.0, seed=7).items() if k.split(".")[0][10:] in KOHYA_MODULES}
    kohya_path = str(folder / "kohya.safetensors")
    save_file(kohya, kohya_path)
    return {"peft": peft_path, "kohya": kohya_path}


def torch_pipe(base_dir):
    from diffusers import FluxPipeline

    return FluxPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=torch_model(base_dir))  # fmt: skip


def both_loaded(base_dir, files):
    """(diffusers pipeline, our pipeline) with "peft" and "kohya" loaded under those names."""
    ref, ours = torch_pipe(base_dir), Pipe(FluxTransformer2DModel.from_pretrained(base_dir))
    for pipe in (ref, ours):
        for name in ("peft", "kohya"):
            pipe.load_lora_weights(files[name], adapter_name=name)
    return ref, ours


def check(ref, ours):
    out = run_paddle(ours.transformer)
    assert rel_err(out, run_torch(ref.transformer)) < TOL
    return out


def test_two_adapters_weighted_one_alone_disable_enable(base_dir, files):
    ref, ours = both_loaded(base_dir, files)
    base = run_paddle(FluxTransformer2DModel.from_pretrained(base_dir))
    assert ours.get_list_adapters() == ref.get_list_adapters() == {"transformer": ["peft", "kohya"]}
    assert ours.get_active_adapters() == ref.get_active_adapters() == ["kohya"]  # the last loaded, as diffusers
    kohya_only = check(ref, ours)
    for pipe in (ref, ours):
        pipe.set_adapters(["peft", "kohya"], adapter_weights=[0.7, 0.4])
    both = check(ref, ours)
    assert ours.get_active_adapters() == ["peft", "kohya"]
    for pipe in (ref, ours):
        pipe.set_adapters("peft")  # weight None -> 1.0; kohya inactive
    check(ref, ours)
    for pipe in (ref, ours):
        pipe.set_adapters(["peft", "kohya"], [0.7, 0.4])
        pipe.disable_lora()
    np.testing.assert_array_equal(check(ref, ours), base)
    with lora.lora_disabled(ours.transformer):  # the teacher context: every adapter off
        np.testing.assert_array_equal(run_paddle(ours.transformer), base)
    for pipe in (ref, ours):
        pipe.enable_lora()
    np.testing.assert_allclose(check(ref, ours), both, rtol=0, atol=1e-6)
    with lora.lora_disabled(ours.transformer, adapter_names=["kohya"]):  # base + peft at 0.7
        peft_part = run_paddle(ours.transformer)
    assert rel_err(peft_part, base) > 1e-2 and rel_err(peft_part, both) > 1e-2 and rel_err(kohya_only, both) > 1e-2


def test_delete_one_and_reload_it(base_dir, files):
    ref, ours = both_loaded(base_dir, files)
    for pipe in (ref, ours):
        pipe.set_adapters(["peft", "kohya"], [0.7, 0.4])
        pipe.delete_adapters("peft")
    assert ours.get_list_adapters() == ref.get_list_adapters() == {"transformer": ["kohya"]}
    assert ours.get_active_adapters() == ref.get_active_adapters() == ["kohya"]
    check(ref, ours)
    assert not any("peft" in k for k in ours.transformer.state_dict())
    for pipe in (ref, ours):
        pipe.load_lora_weights(files["peft"], adapter_name="peft")
        pipe.set_adapters(["kohya", "peft"], [0.4, 0.7])
    check(ref, ours)
    with pytest.raises(ValueError, match="already in use"):
        ours.load_lora_weights(files["peft"], adapter_name="peft")
    with pytest.raises(ValueError, match=r"\['nope'\] not loaded"):
        ours.set_adapters(["nope"])


def test_fuse_both_then_unload(base_dir, files):
    ref, ours = both_loaded(base_dir, files)
    for pipe in (ref, ours):
        pipe.set_adapters(["peft", "kohya"], [0.7, 0.4])
    unfused = run_paddle(ours.transformer)
    calls = []
    ours.transformer.on_weights_changed = lambda: calls.append(1)  # the hook fused-qkv caches use
    for pipe in (ref, ours):
        pipe.fuse_lora(lora_scale=0.5)
    fused = check(ref, ours)
    assert rel_err(fused, unfused) > 1e-3 and calls == [1]
    with pytest.raises(ValueError, match="fused"):
        ours.disable_lora()
    ours.unfuse_lora()  # exact: back to the unfused outputs at the adapters' own weights
    np.testing.assert_allclose(run_paddle(ours.transformer), unfused, rtol=0, atol=1e-5)
    assert calls == [1, 1]
    ours.fuse_lora(lora_scale=0.5)
    for pipe in (ref, ours):
        pipe.unload_lora_weights()
    assert not lora.lora_layers(ours.transformer) and ours.get_list_adapters() == {}
    np.testing.assert_allclose(check(ref, ours), fused, rtol=0, atol=1e-5)


def test_default_names_and_fuse_named_adapter(base_dir, files):
    ours = Pipe(FluxTransformer2DModel.from_pretrained(base_dir))
    ours.load_lora_weights(files["peft"])
    ours.load_lora_weights(files["kohya"], scale=0.4)
    assert ours.get_list_adapters() == {"transformer": ["default_0", "default_1"]}
    ours.delete_adapters("default_0")
    ours.load_lora_weights(files["peft"])  # a fresh name, never an existing adapter overwritten
    assert ours.get_list_adapters() == {"transformer": ["default_1", "default_2"]}
    ours.set_adapters(["default_1", "default_2"], 0.5)
    expected = run_paddle(ours.transformer)
    ours.fuse_lora(adapter_names=["default_2"])  # the other active adapter keeps running unfused
    np.testing.assert_allclose(run_paddle(ours.transformer), expected, rtol=1e-5, atol=1e-5)


def test_saved_student_beside_a_frozen_adapter_loads_in_diffusers(base_dir, files, tmp_path):
    """The training setup: a frozen extra adapter plus a trained student; only the student is written."""
    model = FluxTransformer2DModel.from_pretrained(base_dir)
    lora.load_lora_weights(model, files["kohya"], adapter_name="style")
    lora.add_lora(model, rank=4, alpha=2.0, target_modules=["attn.to_q", "proj_mlp", "ff.net.2"],
                  adapter_name="student")  # fmt: skip
    assert {id(p) for p in model.parameters() if not p.stop_gradient} == {
        id(p) for p in lora.lora_parameters(model, ["student"])
    }
    paddle.seed(3)
    for layer in lora.lora_layers(model).values():
        if "student" in layer.adapters:
            b = layer.adapters["student"].lora_B
            b.set_value(paddle.randn(b.shape) * 0.3)
    assert lora.active_adapters(model) == ["student"]
    student_only = run_paddle(model)
    with pytest.raises(ValueError, match="several adapters"):
        lora.save_lora_weights(model, str(tmp_path))
    path = lora.save_lora_weights(model, str(tmp_path), adapter_name="student")
    ref = torch_pipe(base_dir)
    ref.load_lora_weights(path, adapter_name="student")
    assert rel_err(run_torch(ref.transformer), student_only) < TOL


# ---------------------------------------------------------------- XLabs and refused keys
def xlabs_lora(inner, blocks=2, rank=4, seed=11):
    """The x-flux DoubleStreamBlockLoraProcessor layout: `double_blocks.N.processor.{qkv,proj}_lora{1,2}.{down,up}
    .weight` (1 = image stream, 2 = text stream), torch Linear layout, no alpha."""
    g = np.random.default_rng(seed)
    state = {}
    for i in range(blocks):
        for kind, out in (("qkv", 3 * inner), ("proj", inner)):
            for stream in "12":
                stem = f"double_blocks.{i}.processor.{kind}_lora{stream}"
                state[stem + ".down.weight"] = g.standard_normal((rank, inner)).astype(np.float32) * 0.3
                state[stem + ".up.weight"] = g.standard_normal((out, rank)).astype(np.float32) * 0.3
    return state


def xlabs_merged_torch(base_dir, state):
    """Reference: `up @ down` added by hand to the diffusers modules of each x-flux processor (qkv split by rows)."""
    model = torch_model(base_dir)
    modules = dict(model.named_modules())
    targets = {("qkv", "1"): ["attn.to_q", "attn.to_k", "attn.to_v"], ("proj", "1"): ["attn.to_out.0"],
               ("qkv", "2"): ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
               ("proj", "2"): ["attn.to_add_out"]}  # fmt: skip
    with torch.no_grad():
        for key in [k for k in state if k.endswith(".down.weight")]:
            block, kind_stream = key.split(".")[1], key.split(".")[3]
            delta = state[key.replace(".down.", ".up.")] @ state[key]
            names = targets[(kind_stream[:-6], kind_stream[-1])]
            for part, name in zip(np.split(delta, len(names)), names):
                modules[f"transformer_blocks.{block}.{name}"].weight += torch.tensor(part)
    return model


def test_xlabs_file_matches_hand_merge_and_stacks(base_dir, files, tmp_path):
    state = xlabs_lora(inner=CONFIG["num_attention_heads"] * CONFIG["attention_head_dim"])
    reference = run_torch(xlabs_merged_torch(base_dir, state))
    save_file(state, str(tmp_path / "xlabs.safetensors"))
    model = FluxTransformer2DModel.from_pretrained(base_dir)
    names = lora.load_lora_weights(model, str(tmp_path / "xlabs.safetensors"), adapter_name="xlabs")
    assert len(names) == 2 * 8 and "transformer_blocks.1.attn.add_v_proj" in names
    assert rel_err(run_paddle(model), reference) < TOL
    prefixed = {"diffusion_model." + k: v for k, v in state.items()}  # ComfyUI-style prefix, same adapter
    lora.load_lora_weights(model, prefixed, adapter_name="again")
    lora.load_lora_weights(model, files["peft"], adapter_name="peft")  # any format can be any adapter
    lora.set_adapters(model, ["xlabs", "peft"], [1.0, 0.0])
    assert rel_err(run_paddle(model), reference) < TOL


@pytest.mark.parametrize("extra", ["dora", "text_encoder", "xlabs_single"])
def test_foreign_keys_refused_whole(base_dir, files, extra):
    model = FluxTransformer2DModel.from_pretrained(base_dir)
    lora.load_lora_weights(model, files["peft"], adapter_name="peft")
    before, state_keys = run_paddle(model), sorted(model.state_dict())
    from safetensors.numpy import load_file

    state = dict(load_file(files["peft"]))
    bad = {"dora": "transformer.transformer_blocks.0.attn.to_q.lora_magnitude_vector.dora_scale",
           "text_encoder": "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight",
           "xlabs_single": "single_blocks.0.processor.qkv_lora.down.weight"}[extra]  # fmt: skip
    state[bad] = np.zeros((1, 16), np.float32)
    with pytest.raises(CheckpointError, match=r"not supported; nothing was loaded.*" + bad.split(".")[1]):
        lora.load_lora_weights(model, state, adapter_name="bad")
    assert lora.adapter_names(model) == ["peft"] and sorted(model.state_dict()) == state_keys
    np.testing.assert_array_equal(run_paddle(model), before)

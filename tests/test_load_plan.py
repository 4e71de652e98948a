"""Load plans at real FLUX.1 size, without the memory: safetensors files with the published FLUX.1-dev / schnell key
and shape tables, written as a header plus ~24 GB of holes (sparse, deleted afterwards). The plan reads headers only.

Key tables: diffusers' from diffusers' own FluxTransformer2DModel built on torch's meta device with the published
config; Black Forest Labs' from reference.md section 1, checked here against diffusers' single-file converter (run on
meta tensors). Every parameter must be mapped, no file tensor left over, and the inferred config equal the published.
"""

import functools
import json
import os
import shutil
import struct
import sys

import pytest
import torch

from ppflux_lightning.models import FluxConfig, FluxTransformer2DModel
from ppflux_lightning.models.torch_weights import Rows, SwapHalves, linear_weight_names
from ppflux_lightning.utils.errors import CheckpointError
from ppflux_lightning.utils.safetensors_io import SafetensorsFile

# black-forest-labs/FLUX.1-dev transformer/config.json as published (diffusers 0.30.0.dev0: no RoPE axes key).
DEV_CONFIG = {
    "_class_name": "FluxTransformer2DModel", "_diffusers_version": "0.30.0.dev0", "attention_head_dim": 128,
    "guidance_embeds": True, "in_channels": 64, "joint_attention_dim": 4096, "num_attention_heads": 24,
    "num_layers": 19, "num_single_layers": 38, "patch_size": 1, "pooled_projection_dim": 768,
}
SCHNELL_CONFIG = {**DEV_CONFIG, "guidance_embeds": False}
SHARD_BYTES = 10 * 10**9  # the published folder has three shards of at most ~10 GB


def expected_config(published):
    """The published config with diffusers' defaults for the keys it leaves out."""
    return FluxConfig.from_dict({**published, "axes_dims_rope": (16, 56, 56)})


def diffusers_table(published):
    """Key -> shape of diffusers' FluxTransformer2DModel with the published config (meta device: no memory)."""
    return dict(_diffusers_table(json.dumps(published, sort_keys=True)))


@functools.cache
def _diffusers_table(published):
    from diffusers import FluxTransformer2DModel as DiffusersFlux

    config = {k: v for k, v in json.loads(published).items() if not k.startswith("_")}
    with torch.device("meta"):
        model = DiffusersFlux(**config)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def bfl_table(guidance, inner=3072, head_dim=128, depth=19, single=38, channels=64, joint=4096, pooled=768):
    """Key -> shape of a BFL flux1-dev/schnell file, from reference.md section 1 (PyTorch layout [out, in])."""
    table = {}

    def linear(name, n_in, n_out):
        table[name + ".weight"], table[name + ".bias"] = (n_out, n_in), (n_out,)

    mlp = 4 * inner
    linear("img_in", channels, inner)
    linear("txt_in", joint, inner)
    for stem, n_in in [("time_in", 256), ("vector_in", pooled)] + ([("guidance_in", 256)] if guidance else []):
        linear(f"{stem}.in_layer", n_in, inner)
        linear(f"{stem}.out_layer", inner, inner)
    for i in range(depth):
        for stream in ("img", "txt"):
            b = f"double_blocks.{i}.{stream}"
            linear(f"{b}_mod.lin", inner, 6 * inner)
            linear(f"{b}_attn.qkv", inner, 3 * inner)
            table[f"{b}_attn.norm.query_norm.scale"] = table[f"{b}_attn.norm.key_norm.scale"] = (head_dim,)
            linear(f"{b}_attn.proj", inner, inner)
            linear(f"{b}_mlp.0", inner, mlp)
            linear(f"{b}_mlp.2", mlp, inner)
    for i in range(single):
        b = f"single_blocks.{i}"
        linear(f"{b}.linear1", inner, 3 * inner + mlp)
        linear(f"{b}.linear2", inner + mlp, inner)
        table[f"{b}.norm.query_norm.scale"] = table[f"{b}.norm.key_norm.scale"] = (head_dim,)
        linear(f"{b}.modulation.lin", inner, 3 * inner)
    linear("final_layer.linear", inner, channels)
    linear("final_layer.adaLN_modulation.1", inner, 2 * inner)
    return table


def write_sparse(path, table, dtype="BF16"):
    """A safetensors file holding `table`'s tensors: the real header, then the data region as a hole."""
    header, offset = {}, 0
    for key in sorted(table):
        size = 2 * int(torch.Size(table[key]).numel())
        header[key] = {"dtype": dtype, "shape": list(table[key]), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset)
    return offset


def shard(table, limit):
    """HF-style shards: consecutive keys (sorted) filling up to `limit` bytes each."""
    shards, current, size = [], {}, 0
    for key in sorted(table):
        nbytes = 2 * int(torch.Size(table[key]).numel())
        if current and size + nbytes > limit:
            shards.append(current)
            current, size = {}, 0
        current[key], size = table[key], size + nbytes
    return shards + [current]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every layout at full size as sparse files; removed (and checked to have stayed sparse) at the end."""
    root = tmp_path_factory.mktemp("flux_sparse")
    dev = bfl_table(guidance=True)
    out = {}
    for name, prefix in [("bfl", ""), ("bfl_prefixed", "model.diffusion_model.")]:
        out[name] = str(root / f"flux1-dev-{name}.safetensors")
        write_sparse(out[name], {prefix + k: v for k, v in dev.items()})
    out["schnell"] = str(root / "flux1-schnell.safetensors")
    write_sparse(out["schnell"], bfl_table(guidance=False))
    folder = root / "transformer"
    folder.mkdir()
    table = diffusers_table(DEV_CONFIG)
    shards = shard(table, SHARD_BYTES)
    weight_map, total = {}, 0
    for i, part in enumerate(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_sparse(str(folder / name), part)
        weight_map.update(dict.fromkeys(part, name))
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    (folder / "config.json").write_text(json.dumps(DEV_CONFIG))
    out["diffusers"] = str(folder)
    out["diffusers_table"] = table
    paths = [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]
    apparent = sum(os.path.getsize(p) for p in paths)
    allocated = sum(os.stat(p).st_blocks * 512 for p in paths)
    assert apparent > 90 * 10**9 and allocated < 50 * 10**6, (apparent, allocated)  # ~4 x 24 GB of holes
    yield out
    shutil.rmtree(root)
    assert not os.path.exists(root)


@pytest.fixture(autouse=True)
def no_tensor_reads(monkeypatch):
    """A plan must come from headers alone: any tensor read fails the test."""

    def refuse(self, key):
        raise AssertionError(f"tensor data of {key!r} was read while planning")

    monkeypatch.setattr(SafetensorsFile, "get", refuse)


def check_complete(plan, file_keys):
    """Every parameter mapped once, every file tensor used, the layout rule applied by layer type."""
    params = plan.model.state_dict()
    assert [s.param for s in plan.steps] == list(params)
    assert {s.source for s in plan.steps} == set(file_keys)  # none left over
    linear = linear_weight_names(plan.model)
    assert {s.param for s in plan.steps if s.transpose} == linear
    assert all(s.layer == "Linear" for s in plan.steps if s.transpose)
    assert all(len(s.shape) == 1 for s in plan.steps if not s.transpose)  # biases and norm scales
    assert all(s.source_dtype == "BF16" for s in plan.steps)


def test_bfl_table_matches_diffusers_converter():
    """Our BFL key/shape table, converted by diffusers' own single-file converter, gives diffusers' model table."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    for guidance, published in [(True, DEV_CONFIG), (False, SCHNELL_CONFIG)]:
        bfl = {k: torch.empty(v, device="meta") for k, v in bfl_table(guidance).items()}
        converted = convert_flux_transformer_checkpoint_to_diffusers(bfl)
        assert {k: tuple(v.shape) for k, v in converted.items()} == diffusers_table(published)
    assert len(bfl_table(True)) == 780 and len(diffusers_table(DEV_CONFIG)) == 1160


@pytest.mark.parametrize("name", ["bfl", "bfl_prefixed"])
def test_bfl_dev_single_file(files, name):
    plan = FluxTransformer2DModel.load_plan(files[name], dtype="bfloat16")
    assert plan.model.config == expected_config(DEV_CONFIG)
    prefix = "model.diffusion_model." if name == "bfl_prefixed" else ""
    check_complete(plan, [prefix + k for k in bfl_table(guidance=True)])
    counts = plan.counts()
    assert counts["row slices"] == 2 * (19 * 6 + 38 * 4)  # weight and bias of q, k, v (x2 streams) / q, k, v, mlp
    assert counts["swapped halves"] == 2  # norm_out.linear weight and bias
    assert counts["source tensors"] == 780 and counts["parameters"] == 1160
    assert counts["elements"] == 11_901_408_320  # FLUX.1-dev's parameter count
    assert plan.source_bytes == 2 * counts["elements"]
    by_param = {s.param: s for s in plan.steps}
    k = by_param["single_transformer_blocks.37.proj_mlp.weight"]
    assert (k.source, k.transform, k.source_shape, k.shape) == (
        prefix + "single_blocks.37.linear1.weight", Rows(3 * 3072, 7 * 3072), (21504, 3072), (3072, 12288))
    assert by_param["norm_out.linear.bias"].transform == SwapHalves()
    assert plan.notes["layout"] == "bfl" and plan.notes.get("key prefix", "") == prefix


def test_bfl_schnell_single_file(files):
    plan = FluxTransformer2DModel.load_plan(files["schnell"])
    assert plan.model.config == expected_config(SCHNELL_CONFIG)
    check_complete(plan, bfl_table(guidance=False))
    assert not any("guidance" in s.param for s in plan.steps)


def test_diffusers_sharded_folder(files):
    plan = FluxTransformer2DModel.load_plan(files["diffusers"], dtype="bfloat16")
    assert plan.model.config == expected_config(DEV_CONFIG)
    table = files["diffusers_table"]
    check_complete(plan, table)
    assert len(plan.files) == 3
    for step in plan.steps:
        assert step.source == step.param and step.transform is None
        assert step.source_shape == table[step.param]
        assert step.shape == (table[step.param][::-1] if step.transpose else table[step.param])
    # The pipeline root resolves to its transformer/ folder.
    root_plan = FluxTransformer2DModel.load_plan(os.path.dirname(files["diffusers"]))
    assert root_plan.files == plan.files


def test_config_json_gaps_are_inferred_and_conflicts_named(files, tmp_path):
    folder = tmp_path / "transformer"
    folder.mkdir()
    for name in os.listdir(files["diffusers"]):
        if name.endswith(".safetensors"):
            os.symlink(os.path.join(files["diffusers"], name), folder / name)
        else:
            shutil.copy(os.path.join(files["diffusers"], name), folder / name)
    config = {k: v for k, v in DEV_CONFIG.items() if k != "num_attention_heads"}
    (folder / "config.json").write_text(json.dumps(config))
    plan = FluxTransformer2DModel.load_plan(str(folder))
    assert plan.model.config.num_attention_heads == 24  # from x_embedder / norm_q shapes, not a default
    (folder / "config.json").write_text(json.dumps({**config, "num_attention_heads": 12}))
    with pytest.raises(CheckpointError, match=r"config.json sets num_attention_heads=12, but the weights give 24"):
        FluxTransformer2DModel.load_plan(str(folder))
    (folder / "config.json").write_text(json.dumps(config))
    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert index["weight_map"]["x_embedder.bias"].endswith("00003-of-00003.safetensors")
    index["weight_map"]["x_embedder.bias"] = "diffusion_pytorch_model-00001-of-00003.safetensors"
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="does not match shard"):
        FluxTransformer2DModel.load_plan(str(folder))


def test_inspect_tool_prints_the_plan(files, capsys):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
    try:
        import inspect_checkpoint
    finally:
        sys.path.pop(0)
    assert inspect_checkpoint.main([files["bfl_prefixed"], "--all"]) == 0
    out = capsys.readouterr().out
    assert "layout: bfl" in out and "key prefix: model.diffusion_model." in out
    assert "num_attention_heads: 24" in out and "guidance_embeds: True" in out and "transposed: 504" in out
    assert ("  single_transformer_blocks.0.attn.to_k.weight [3072, 3072] Linear <- "
            "model.diffusion_model.single_blocks.0.linear1.weight BF16[21504, 3072] (rows 3072:6144, transposed)\n"
            ) in out
    assert inspect_checkpoint.main([files["bfl"] + ".missing"]) == 2
    assert capsys.readouterr().err.startswith("error: checkpoint not found:")

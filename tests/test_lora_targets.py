"""The default LoRA targets are the reference's 12 names matched by suffix, as PEFT does (reference.md section 4):
12 modules in every double block, 3 (attn.to_q/k/v) in every single block; 342 modules and 89.7M parameters on
FLUX.1-dev at rank 32. The old double-block-only selection stays available by name."""

import re
from collections import Counter

import paddle

import ppflux_lightning  # noqa: F401
from ppflux_lightning.lora import add_lora, lora_layers
from ppflux_lightning.lora.adapters import DOUBLE_BLOCK_TARGETS
from ppflux_lightning.models.flux_transformer import FluxConfig, FluxTransformer2DModel

REFERENCE_NAMES = ["attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0", "attn.add_k_proj", "attn.add_q_proj",
                   "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                   "ff_context.net.2"]  # the reference's LoraConfig target_modules


def per_block(names):
    return Counter(re.match(r"((?:single_)?transformer_blocks\.\d+)\.", n).group(1) for n in names)


def test_default_targets_adapt_12_per_double_and_3_per_single_block():
    with paddle.LazyGuard():  # FLUX.1-dev shapes without allocating 12B parameters
        model = FluxTransformer2DModel(FluxConfig())
        # PEFT suffix matching of the reference's list, applied by hand to the plain model
        peft = [n for n, layer in model.named_sublayers() if isinstance(layer, paddle.nn.Linear)
                and any(n == t or n.endswith("." + t) for t in REFERENCE_NAMES)]
        names = add_lora(model, 32, 8)
    counts = per_block(names)
    assert {counts[f"transformer_blocks.{i}"] for i in range(19)} == {12}
    assert {counts[f"single_transformer_blocks.{i}"] for i in range(38)} == {3}
    assert len(names) == 342 and sum(counts.values()) == 342
    single = sorted({n.split(".", 2)[2] for n in names if n.startswith("single_")})
    assert single == ["attn.to_k", "attn.to_q", "attn.to_v"]
    assert sorted(peft) == sorted(names)
    params = sum(int(np_.size) for layer in lora_layers(model).values() for np_ in (layer.lora_A, layer.lora_B))
    assert params == 89_653_248  # 228 x 32 x (in + out) of the double blocks + 114 x 32 x 6144 of the single ones


def test_double_block_targets_keep_the_old_selection():
    with paddle.LazyGuard():
        names = add_lora(FluxTransformer2DModel(FluxConfig()), 32, 8, target_modules=DOUBLE_BLOCK_TARGETS)
    assert len(names) == 228 and not any(n.startswith("single_") for n in names)

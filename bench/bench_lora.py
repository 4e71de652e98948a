"""Per-step transformer cost of the base model, one and two unfused LoRA adapters, both fused, and the teacher
(adapters off).

Two copies of one random transformer (plain, and with two adapters of random non-zero B, frozen as loaded files
are: "lightning" at `--rank` on `--targets`, "style" at half the rank on `--second-targets`) are timed round-robin
in one process: each round runs every variant once (an untimed step after setting its adapters, as the first step
of a generation, then a timed step), starting with a different one each round, so machine noise hits them alike.
Prints medians and ratios to the base median.

    python bench/bench_lora.py --size toy --repeats 40      # the toy transformer (width 64, 36 + 16 tokens, rank 8)
    python bench/bench_lora.py --size tiny --repeats 40     # the tiny pipeline's (width 32, 256 + 32 tokens, rank 4)
    python bench/bench_lora.py                              # width 512, 2 double + 4 single blocks, rank 32
    python bench/bench_lora.py --targets all --rank 64 --repeats 15
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # runnable from a checkout

import ppflux_lightning  # noqa: E402,F401  (sets the MKL switch before paddle is imported)

# isort: split
import argparse
import statistics
import time

import numpy as np
import paddle
from tqdm import tqdm

from ppflux_lightning import lora
from ppflux_lightning.models.checkpoint import default_axes_dims
from ppflux_lightning.models.flux_transformer import FluxConfig, FluxTransformer2DModel

# "default": FLUX-Lightning's 12 in the double blocks; "suffixes": the same 12 as PEFT suffixes (diffusers' FLUX
# DreamBooth-LoRA default, a typical style LoRA: also the single blocks' attn.to_q/k/v); "all": every block Linear.
ALL_BLOCK_TARGETS = r"(single_)?transformer_blocks\.\d+\..*"
TARGETS = {"default": None, "suffixes": list(lora.LIGHTNING_TARGETS), "all": ALL_BLOCK_TARGETS}


# Model sizes: the toy world's transformer (assets/toy/flux-toy, 48 px images) and the tiny test pipeline's
# (ppflux_lightning.pipelines.tiny at 64 px), with their training ranks; "medium" is a 512-wide FLUX.
SIZES = {
    "toy": dict(width=64, heads=2, double=2, single=2, grid=6, text_tokens=16, rank=8, in_channels=64, text_dim=64),
    "tiny": dict(width=32, heads=2, double=1, single=1, grid=16, text_tokens=32, rank=4, in_channels=16, text_dim=32),
    "medium": dict(width=512, heads=8, double=2, single=4, grid=16, text_tokens=64, rank=32, in_channels=64,
                   text_dim=256),
}  # fmt: skip


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="medium", help="preset for the flags left unset")
    p.add_argument("--width", type=int, help="inner dim (heads x head_dim)")
    p.add_argument("--heads", type=int)
    p.add_argument("--double", type=int, help="double-stream blocks")
    p.add_argument("--single", type=int, help="single-stream blocks")
    p.add_argument("--grid", type=int, help="packed latent grid side (image tokens = grid^2)")
    p.add_argument("--text-tokens", type=int)
    p.add_argument("--rank", type=int, help="rank of the first adapter (the second has half)")
    p.add_argument("--targets", choices=sorted(TARGETS), default="default", help="first adapter's modules")
    p.add_argument("--second-targets", choices=sorted(TARGETS), default="suffixes", help="second adapter's modules")
    p.add_argument("--repeats", type=int, default=9, help="timed rounds (after one warm-up round)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for key, value in SIZES[args.size].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def build(args):
    if args.width % args.heads:
        raise ValueError(f"--width {args.width} is not divisible by --heads {args.heads}")
    head_dim = args.width // args.heads
    config = FluxConfig(
        in_channels=args.in_channels, num_layers=args.double, num_single_layers=args.single,
        attention_head_dim=head_dim, num_attention_heads=args.heads, joint_attention_dim=args.text_dim,
        pooled_projection_dim=args.text_dim, guidance_embeds=True, axes_dims_rope=default_axes_dims(head_dim),
    )
    paddle.seed(args.seed)
    model = FluxTransformer2DModel(config)
    model.eval()
    g = np.random.default_rng(args.seed)
    n_img = args.grid**2
    ids = np.zeros((args.grid, args.grid, 3), np.float32)
    ids[..., 1], ids[..., 2] = np.arange(args.grid)[:, None], np.arange(args.grid)[None, :]
    inputs = (
        paddle.to_tensor(g.standard_normal((1, n_img, args.in_channels)).astype("float32")),
        paddle.to_tensor(g.standard_normal((1, args.text_tokens, args.text_dim)).astype("float32")),
        paddle.to_tensor(g.standard_normal((1, args.text_dim)).astype("float32")),
        0.5,
        paddle.to_tensor(ids.reshape(-1, 3)),
        paddle.zeros([args.text_tokens, 3]),
        0.35,
    )
    return model, inputs


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    args = parse_args()
    plain, inputs = build(args)
    model, _ = build(args)  # same seed: identical base weights
    first = lora.add_lora(model, args.rank, target_modules=TARGETS[args.targets], adapter_name="lightning")
    second = lora.add_lora(model, max(1, args.rank // 2), target_modules=TARGETS[args.second_targets],
                           adapter_name="style")  # fmt: skip
    paddle.seed(args.seed + 1)
    for layer in lora.lora_layers(model).values():  # trained-looking adapters: non-zero B
        for adapter in layer.adapters.values():
            adapter.lora_B.set_value(paddle.randn(adapter.lora_B.shape) * 0.01)
    for param in lora.lora_parameters(model):  # frozen, as adapters loaded from files are
        param.stop_gradient = True

    def run(m):
        m(*inputs).numpy()  # untimed: the first step after a change re-plans the LoRA layers (cached products)
        return timed(lambda: m(*inputs).numpy())  # a steady-state step; .numpy() waits for the result

    def unfused(names, weights):
        lora.set_adapters(model, names, weights)
        return run(model)

    def training_like():  # the trainer's forward: a trainable student beside a frozen extra adapter
        student = lora.lora_parameters(model, ["lightning"])
        for param in student:
            param.stop_gradient = False
        try:
            return unfused(["lightning", "style"], [1.0, 0.8])
        finally:
            for param in student:
                param.stop_gradient = True

    def fused():
        lora.set_adapters(model, ["lightning", "style"], [1.0, 0.8])
        lora.fuse_lora(model)
        try:
            return run(model)
        finally:
            lora.unfuse_lora(model)

    def teacher():
        with lora.lora_disabled(model):
            return run(model)

    variants = {
        "base (no LoRA)": lambda: run(plain),
        "1 adapter unfused": lambda: unfused(["lightning"], [1.0]),
        "2 adapters unfused": lambda: unfused(["lightning", "style"], [1.0, 0.8]),
        "2 unfused, 1 trainable": training_like,
        "2 adapters fused": fused,
        "teacher (adapters off)": teacher,
    }
    order = list(variants)
    times = {k: [] for k in variants}
    with paddle.no_grad():
        for fn in variants.values():  # warm-up round
            fn()
        for r in tqdm(range(args.repeats), desc="rounds"):
            for name in order[r % len(order) :] + order[: r % len(order)]:  # rotate who goes first
                times[name].append(variants[name]())
    n_img = args.grid**2
    print(f"config: {args.size} size, width {args.width}, heads {args.heads}, {args.double} double + {args.single} "
          f"single blocks, {n_img} image + {args.text_tokens} text tokens; adapters: rank {args.rank} on "
          f"{len(first)} Linear layers ({args.targets} targets) + rank {max(1, args.rank // 2)} on {len(second)} "
          f"({args.second_targets}); {args.repeats} rounds, paddle {paddle.__version__} CPU")  # fmt: skip
    base_median = statistics.median(times["base (no LoRA)"])
    print(f"{'variant':<26}{'median ms':>12}{'vs base':>10}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<26}{median * 1e3:>12.1f}{median / base_median:>10.3f}")
    print("(shared, noisy machine: compare the ratios, not the absolute times)")


if __name__ == "__main__":
    main()

"""Per-step transformer cost of the base model, the unfused LoRA, the fused LoRA and the teacher (adapters off).

Two copies of one random transformer (plain, and with adapters of random non-zero B) are timed round-robin in one
process: each round runs every variant once, starting with a different one each round, so machine noise hits them
alike. Prints medians and ratios to the base median.

    python bench/bench_lora.py                                    # width 512, 2 double + 4 single blocks, rank 32
    python bench/bench_lora.py --targets all --rank 64 --repeats 15
"""

import ppflux_lightning  # noqa: F401  (sets the MKL switch before paddle is imported)

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

# "all": every Linear inside the blocks, double and single (PEFT suffixes); "default": FLUX-Lightning's 12.
ALL_BLOCK_TARGETS = r"(single_)?transformer_blocks\.\d+\..*"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=512, help="inner dim (heads x head_dim)")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--double", type=int, default=2, help="double-stream blocks")
    p.add_argument("--single", type=int, default=4, help="single-stream blocks")
    p.add_argument("--grid", type=int, default=32, help="packed latent grid side (image tokens = grid^2)")
    p.add_argument("--text-tokens", type=int, default=64)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--targets", choices=["default", "all"], default="default")
    p.add_argument("--repeats", type=int, default=9, help="timed rounds (after one warm-up round)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def build(args):
    if args.width % args.heads:
        raise ValueError(f"--width {args.width} is not divisible by --heads {args.heads}")
    head_dim = args.width // args.heads
    config = FluxConfig(
        in_channels=64, num_layers=args.double, num_single_layers=args.single, attention_head_dim=head_dim,
        num_attention_heads=args.heads, joint_attention_dim=256, pooled_projection_dim=128, guidance_embeds=True,
        axes_dims_rope=default_axes_dims(head_dim),
    )
    paddle.seed(args.seed)
    model = FluxTransformer2DModel(config)
    model.eval()
    g = np.random.default_rng(args.seed)
    n_img = args.grid**2
    ids = np.zeros((args.grid, args.grid, 3), np.float32)
    ids[..., 1], ids[..., 2] = np.arange(args.grid)[:, None], np.arange(args.grid)[None, :]
    inputs = (
        paddle.to_tensor(g.standard_normal((1, n_img, 64)).astype("float32")),
        paddle.to_tensor(g.standard_normal((1, args.text_tokens, 256)).astype("float32")),
        paddle.to_tensor(g.standard_normal((1, 128)).astype("float32")),
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
    targets = None if args.targets == "default" else ALL_BLOCK_TARGETS
    names = lora.add_lora(model, args.rank, target_modules=targets)
    paddle.seed(args.seed + 1)
    for layer in lora.lora_layers(model).values():  # a trained-looking adapter: non-zero B
        layer.lora_B.set_value(paddle.randn(layer.lora_B.shape) * 0.01)

    def run(m):
        return timed(lambda: m(*inputs).numpy())  # .numpy() waits for the result

    def fused():
        lora.fuse_lora(model)
        try:
            return run(model)
        finally:
            lora.unfuse_lora(model)

    def teacher():
        with lora.lora_disabled(model):
            return run(model)

    variants = {
        "base (no LoRA)": lambda: run(plain), "LoRA unfused": lambda: run(model), "LoRA fused": fused,
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
    print(f"config: width {args.width}, heads {args.heads}, {args.double} double + {args.single} single blocks, "
          f"{n_img} image + {args.text_tokens} text tokens, rank {args.rank} on {len(names)} Linear layers "
          f"({args.targets} targets), {args.repeats} rounds, paddle {paddle.__version__} CPU")  # fmt: skip
    base_median = statistics.median(times["base (no LoRA)"])
    print(f"{'variant':<26}{'median ms':>12}{'vs base':>10}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<26}{median * 1e3:>12.1f}{median / base_median:>10.3f}")
    print("(shared, noisy machine: compare the ratios, not the absolute times)")


if __name__ == "__main__":
    main()

"""Where the toy teacher's training time goes: the cost per sample of one flow-matching step (forward, backward,
AdamW) of a toy FLUX transformer at several batch sizes, side by side in one process.

    python bench/bench_toy_teacher.py [--model assets/toy/flux-toy] [--batches 16,32,64,128,256] [--repeats 5]
    python bench/bench_toy_teacher.py --profile 64      # also Paddle's operator table for 3 steps of batch 64

The batch sizes are timed round-robin (each round runs every batch size once, starting with a different one), so
machine noise hits them alike; medians over the rounds, and each batch's cost per sample as a ratio to the largest
batch's. A ratio near 1 at small batches means the step is bound by the kernels' work, not by Python or per-op
dispatch, and a static graph would buy little. The transformer is built from `<model>/transformer/config.json` with
random weights (the cost does not depend on the values); the sequence is the toy world's (image tokens from
`toy_world.json`'s image size, text tokens its `max_sequence_length`). One process uses one core here.
"""

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ppflux_lightning  # noqa: E402,F401  (sets the MKL switch before paddle is imported)

# isort: split
import paddle  # noqa: E402

from ppflux_lightning.models.flux_transformer import FluxConfig, FluxTransformer2DModel  # noqa: E402
from ppflux_lightning.pipelines.flux_pipeline import latent_image_ids  # noqa: E402
from ppflux_lightning.toy.build import load_toy_config  # noqa: E402


def load_model(folder):
    path = os.path.join(folder, "transformer", "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no transformer/config.json in {folder!r}")
    with open(path) as f:
        config = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    toy = load_toy_config(folder)
    with open(os.path.join(folder, "vae", "config.json")) as f:
        vae_scale = 2 ** (len(json.load(f)["block_out_channels"]) - 1)
    paddle.seed(0)
    return FluxTransformer2DModel(FluxConfig(**config)), toy["image_size"] // vae_scale, toy["max_sequence_length"]


def make_step(model, latent_grid, text_tokens, batch):
    """One training step on random inputs of `batch` samples (a closure; inputs made once)."""
    cfg = model.config
    tokens = (latent_grid // 2) ** 2
    x = paddle.randn([batch, tokens, cfg.in_channels])
    embeds = paddle.randn([batch, text_tokens, cfg.joint_attention_dim])
    pooled = paddle.randn([batch, cfg.pooled_projection_dim])
    t, g = paddle.rand([batch]), paddle.full([batch], 3.5)
    img_ids, txt_ids = latent_image_ids(latent_grid, latent_grid), paddle.zeros([text_tokens, 3])
    target = paddle.randn(x.shape)
    opt = paddle.optimizer.AdamW(1e-4, parameters=model.parameters())

    def step():
        pred = model(x, embeds, pooled, t, img_ids, txt_ids, guidance=g)
        loss = paddle.square(pred - target).mean()
        loss.backward()
        opt.step()
        opt.clear_grad()
        return float(loss)

    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.path.join(ROOT, "assets", "toy", "flux-toy"))
    p.add_argument("--batches", default="16,32,64,128,256", help="comma-separated batch sizes")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (after one warm-up round)")
    p.add_argument("--profile", type=int, default=None, metavar="BATCH",
                   help="also print Paddle's operator summary for 3 steps at this batch size")
    a = p.parse_args(argv)
    try:
        batches = [int(b) for b in a.batches.split(",")]
        if not batches or min(batches) < 1 or a.repeats < 1:
            raise ValueError
    except ValueError:
        print(f"error: --batches must be positive integers and --repeats >= 1, got {a.batches!r} / {a.repeats}",
              file=sys.stderr)
        return 2
    try:
        model, grid, text_tokens = load_model(a.model)
    except (OSError, KeyError, json.JSONDecodeError) as e:
        print(f"error: cannot read the toy model {a.model!r}: {e}", file=sys.stderr)
        return 2
    steps = {b: make_step(model, grid, text_tokens, b) for b in batches}
    times = {b: [] for b in batches}
    for r in range(a.repeats + 1):
        order = batches[r % len(batches):] + batches[:r % len(batches)]
        for b in order:
            start = time.perf_counter()
            steps[b]()
            if r:  # round 0 warms up
                times[b].append(time.perf_counter() - start)
    per_sample = {b: statistics.median(times[b]) / b for b in batches}
    largest = max(batches)
    width = model.config.num_attention_heads * model.config.attention_head_dim
    print(f"toy teacher step (width {width}, {(grid // 2) ** 2} image + {text_tokens} text tokens), "
          f"{a.repeats} rounds, medians")
    print("| batch | ms / step | ms / sample | per-sample cost vs batch %d |" % largest)
    print("|---|---|---|---|")
    for b in batches:
        print(f"| {b} | {1000 * statistics.median(times[b]):.0f} | {1000 * per_sample[b]:.2f} | "
              f"{per_sample[b] / per_sample[largest]:.2f}x |")
    if a.profile:
        import paddle.profiler as profiler

        step = make_step(model, grid, text_tokens, a.profile)
        step()
        # on_trace_ready: keep the summary in memory (the default writes a chrome trace into ./profiler_log)
        prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=lambda _: None)
        prof.start()
        for _ in range(3):
            step()
            prof.step()
        prof.stop()
        prof.summary(op_detail=False, sorted_by=profiler.SortedKeys.CPUTotal, time_unit="ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

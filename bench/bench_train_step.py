"""Cost of one FLUX-Lightning training step vs one plain LoRA flow-matching step on the same model, and peak memory
of the generator step with and without gradient checkpointing.

    python bench/bench_train_step.py [--width-heads 4 --head-dim 64 --double 2 --single 4 --grid 16 --repeats 5]

Times are medians over `--repeats` runs after a warm-up, measured side by side in one process, as wall time and as
this process's CPU time (all threads): on a shared machine the CPU-time ratios move much less with the other jobs'
load. Memory is the peak of Paddle's allocator during one generator step above the resting state.
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
import paddle.nn.functional as F

from ppflux_lightning.lora import add_lora, lora_parameters
from ppflux_lightning.models.flux_transformer import FluxConfig, FluxTransformer2DModel
from ppflux_lightning.objectives import Conditioning, DistillationRecipe, config_defaults
from ppflux_lightning.schedulers.flow_match import FlowMatchEulerScheduler

OBJECTIVES = config_defaults()  # the reference recipe: consistency + adversarial 0.1 + DMD 0.01 + reflow 0.01


def build(args):
    paddle.seed(0)
    head_dim = args.head_dim
    first = max(2, head_dim // 8 // 2 * 2)  # FLUX splits 128 as (16, 56, 56): scale that split, keep pairs even
    second = (head_dim - first) // 4 * 2
    rope = (first, second, head_dim - first - second)
    cfg = FluxConfig(in_channels=64, num_layers=args.double, num_single_layers=args.single, attention_head_dim=head_dim,
                     num_attention_heads=args.heads, joint_attention_dim=args.text_dim, pooled_projection_dim=64,
                     axes_dims_rope=rope)
    model = FluxTransformer2DModel(cfg)
    add_lora(model, args.rank)
    model.train()
    side = args.grid
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    img_ids = paddle.to_tensor(np.stack([np.zeros_like(rows), rows, cols], -1).reshape(-1, 3).astype("float32"))
    b = args.batch
    cond = Conditioning(paddle.randn([b, args.text_len, args.text_dim]), paddle.randn([b, 64]), img_ids,
                        paddle.zeros([args.text_len, 3]), 3.5)
    latents = paddle.randn([b, side * side, 64])
    recipe = DistillationRecipe.from_config(model, FlowMatchEulerScheduler(), OBJECTIVES, side * side,
                                            student_parameters=lora_parameters(model))
    return model, recipe, cond, latents


def lightning_step(model, recipe, cond, latents, group, step, opt):
    draws = recipe.draws(0, step, range(latents.shape[0]), latents.shape[1:])
    losses = recipe.losses(cond, latents, draws, group)
    paddle.add_n(list(losses.values())).backward()
    opt[group].step()
    opt[group].clear_grad()
    for p in recipe.parameters("discriminator") + recipe.parameters("generator"):
        p.clear_gradient(set_to_zero=False)


def flow_matching_step(model, recipe, cond, latents, group, step, opt):
    """Plain LoRA fine-tuning: one student forward at a random sigma, MSE to the velocity noise - x0."""
    b = latents.shape[0]
    noise = paddle.randn(latents.shape)
    sigma = paddle.rand([b])
    x_t = (1 - sigma.reshape([-1, 1, 1])) * latents + sigma.reshape([-1, 1, 1]) * noise
    v = model(x_t, timestep=sigma, **cond.kwargs(b))
    F.mse_loss(v, noise - latents).backward()
    opt["generator"].step()
    opt["generator"].clear_grad()


def optimizers(model, recipe):
    return {g: paddle.optimizer.AdamW(parameters=recipe.parameters(g), learning_rate=1e-5) for g in recipe.groups}


def sync():
    if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count():
        paddle.device.cuda.synchronize()


def timings(args):
    model, recipe, cond, latents = build(args)
    opt = optimizers(model, recipe)
    cases = {"flow_matching_lora": (flow_matching_step, "generator"),
             "lightning_generator": (lightning_step, "generator"),
             "lightning_discriminator": (lightning_step, "discriminator")}
    wall, cpu = {name: [] for name in cases}, {name: [] for name in cases}
    for rep in range(args.repeats + 1):  # interleaved so background load hits every case alike; rep 0 warms up
        for name, (fn, group) in cases.items():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fn(model, recipe, cond, latents, group, rep, opt)
            sync()
            if rep:
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    med = lambda d: {name: statistics.median(v) for name, v in d.items()}
    return med(wall), med(cpu)


def peak_memory(args, checkpointing):
    """Peak allocator growth (MB) during one generator step: Paddle's device stats on GPU, its host stats on CPU."""
    from paddle.base import core

    model, recipe, cond, latents = build(args)
    model.enable_gradient_checkpointing(checkpointing)
    opt = optimizers(model, recipe)
    lightning_step(model, recipe, cond, latents, "generator", 0, opt)  # optimizer state exists before measuring
    gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    kind, dev = ("device", paddle.device.cuda.current_device()) if gpu else ("host", 0)
    getattr(core, f"{kind}_memory_stat_reset_peak_value")("Allocated", dev)
    before = getattr(core, f"{kind}_memory_stat_current_value")("Allocated", dev)
    lightning_step(model, recipe, cond, latents, "generator", 1, opt)
    peak = getattr(core, f"{kind}_memory_stat_peak_value")("Allocated", dev)
    return (peak - before) / 2**20, kind


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--double", type=int, default=2)
    p.add_argument("--single", type=int, default=4)
    p.add_argument("--grid", type=int, default=16, help="packed latent grid side (tokens = grid^2)")
    p.add_argument("--text-len", type=int, default=64)
    p.add_argument("--text-dim", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    wall, cpu = timings(args)
    print(f"model: {args.double}+{args.single} blocks, width {args.heads * args.head_dim}, {args.grid ** 2} image + "
          f"{args.text_len} text tokens, batch {args.batch}, LoRA rank {args.rank}; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'step':28s} {'wall s':>8s} {'x FM':>6s} {'cpu s':>8s} {'x FM':>6s}")
    rows = list(wall) + ["lightning (mean of D and G)"]
    for d in (wall, cpu):
        d["lightning (mean of D and G)"] = (d["lightning_generator"] + d["lightning_discriminator"]) / 2
    w0, c0 = wall["flow_matching_lora"], cpu["flow_matching_lora"]
    for name in rows:
        w, c = wall[name], cpu[name]
        print(f"{name:28s} {w:8.3f} {w / w0:6.2f} {c:8.3f} {c / c0:6.2f}")
    for on in (False, True):
        mb, kind = peak_memory(args, on)
        print(f"peak {kind} memory above the resting state in a generator step, gradient checkpointing "
              f"{'on ' if on else 'off'}: {mb:8.1f} MB")


if __name__ == "__main__":
    main()

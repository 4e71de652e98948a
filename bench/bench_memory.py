"""The memory estimate (tools/estimate_memory.py) against measured peaks of real train steps on this CPU.

    python bench/bench_memory.py [--widths 64 128 256] [--double 2 --single 4 --resolution 256 --steps 4]

For each width, with and without gradient checkpointing, a fresh process builds the real `Trainer` on a random
FLUX-architecture transformer of that width (the 12 reference LoRA targets, one D head per block, cached random
embeddings) and runs `--steps` train steps (D and G alternate). Measured = the peak of Paddle's host allocator
(`core.host_memory_stat_peak_value("Allocated", 0)`: the bytes of every live CPU tensor, exact and resettable; the
process RSS would add the Python/Paddle runtime, MKL workspaces and freed-but-cached heap pages, and its lifetime
maximum cannot be reset after warm-up), reset after one warm-up D and G step so that the AdamW moments exist.
Estimate = `engine.memory.estimate(cfg, device="cpu")` of the same config. Ratios are estimate / measured.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # runnable from a checkout

import ppflux_lightning  # noqa: E402,F401  (before paddle)
from ppflux_lightning.config import load_config, validate
from ppflux_lightning.engine.memory import REFERENCE_TARGETS, estimate
from ppflux_lightning.engine.schema import DEFAULTS

TEXT_DIM, POOLED_DIM, LATENT_CHANNELS, HEAD_DIM = 64, 64, 16, 32


def rope_split(head_dim):
    first = max(2, head_dim // 8 // 2 * 2)
    second = (head_dim - first) // 4 * 2
    return [first, second, head_dim - first - second]


def build_inputs(root, width, args):
    """`root/model` (random transformer of `width` + scheduler) and `root/cache` (random cached embeddings)."""
    import paddle

    from ppflux_lightning.data import DATASETS
    from ppflux_lightning.data.cached import write_cache
    from ppflux_lightning.models.flux_transformer import FluxConfig, FluxTransformer2DModel
    from ppflux_lightning.schedulers.flow_match import FlowMatchEulerScheduler

    paddle.seed(0)
    fc = FluxConfig(in_channels=4 * LATENT_CHANNELS, num_layers=args.double, num_single_layers=args.single,
                    attention_head_dim=HEAD_DIM, num_attention_heads=width // HEAD_DIM, joint_attention_dim=TEXT_DIM,
                    pooled_projection_dim=POOLED_DIM, axes_dims_rope=rope_split(HEAD_DIM))
    model = os.path.join(root, "model")
    FluxTransformer2DModel(fc).save_pretrained(os.path.join(model, "transformer"))
    FlowMatchEulerScheduler().save_pretrained(os.path.join(model, "scheduler"))
    images = os.path.join(root, "images")
    os.makedirs(images)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (args.resolution,) * 2 + (3,), dtype=np.uint8)).save(
            os.path.join(images, f"{i}.png"))
        with open(os.path.join(images, f"{i}.txt"), "w") as f:
            f.write(f"caption {i}")
    side = args.resolution // 8

    def encode(captions, pixels):
        n = len(captions)
        return {"prompt_embeds": rng.standard_normal((n, args.text_len, TEXT_DIM)),
                "pooled_prompt_embeds": rng.standard_normal((n, POOLED_DIM)),
                "latents": rng.standard_normal((n, LATENT_CHANNELS, side, side))}

    source = {"type": "folder", "path": images, "resolution": args.resolution}
    write_cache(encode, DATASETS.build(source), os.path.join(root, "cache"), source, with_latents=True)
    return model, os.path.join(root, "cache")


def config(root, model, cache, recompute, args):
    cfg = {"model": {"pretrained": model, "dtype": "float32", "gradient_checkpointing": recompute,
                     "max_sequence_length": args.text_len},
           "lora": {"rank": 8, "alpha": 8, "target_modules": list(REFERENCE_TARGETS)},
           "objectives": {"solver": {"num_timesteps": 20, "num_phases": 4}},
           "train": {"output_dir": os.path.join(root, "out"), "max_steps": args.steps, "batch_size": args.batch,
                     "checkpoint_every": 0, "validate_every": 0, "validation_prompts": [], "log_every": 1},
           "data": {"type": "cached", "path": cache, "resolution": args.resolution}}
    return validate(cfg, DEFAULTS)


def worker(cfg_path):
    """Run the train steps of one config; print the measured peaks as JSON (runs in a fresh process)."""
    from paddle.base import core

    from ppflux_lightning.engine.trainer import Trainer

    cfg = load_config(cfg_path, [], schema=DEFAULTS)
    trainer = Trainer(cfg)
    stream = trainer.micro_batches(0)
    batches = [next(stream) for _ in range(cfg.train.max_steps)]  # data loading outside the measured window
    for batch in batches[:2]:  # one D and one G step first: AdamW creates its moments at a group's first step
        trainer.train_step([batch])
    resting = core.host_memory_stat_current_value("Allocated", 0)
    peaks = {}
    for batch in batches[2:]:
        group = trainer.recipe.group_at(trainer.step)
        core.host_memory_stat_reset_peak_value("Allocated", 0)
        trainer.train_step([batch])
        peaks[group] = max(peaks.get(group, 0), core.host_memory_stat_peak_value("Allocated", 0))
    print(json.dumps({"peaks": peaks, "resting": resting}))


def measure(cfg, root):
    path = os.path.join(root, f"cfg-{cfg.model.gradient_checkpointing}.yaml")
    import yaml

    with open(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", path], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--double", type=int, default=2)
    parser.add_argument("--single", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=256, help="pixels (image tokens = (res / 16)^2)")
    parser.add_argument("--text_len", type=int, default=32)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="train steps (D, G, ...); the first two warm up")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    print(f"{args.double} double + {args.single} single blocks, {(args.resolution // 16) ** 2} image + "
          f"{args.text_len} text tokens, batch {args.batch}, float32, {args.steps} steps; MiB")
    print("| width | recompute | step | estimate | measured | ratio | estimate above resting | measured above resting "
          "| ratio |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    ratios = []
    mib = lambda b: b / 2**20
    for width in args.widths:
        with tempfile.TemporaryDirectory() as root:
            model, cache = build_inputs(root, width, args)
            for recompute in (False, True):
                cfg = config(root, model, cache, recompute, args)
                est = estimate(cfg, device="cpu")
                got = measure(cfg, root)
                for group in ("generator", "discriminator"):
                    # resting = weights + optimizer states: the estimate's static part
                    e, m = est.step_bytes(group), got["peaks"][group]
                    e_up, m_up = e - est.static_bytes, m - got["resting"]
                    ratios.append(e / m)
                    print(f"| {width} | {'on' if recompute else 'off'} | {group[0].upper()} | {mib(e):.1f} | "
                          f"{mib(m):.1f} | {e / m:.3f} | {mib(e_up):.1f} | {mib(m_up):.1f} | {e_up / m_up:.3f} |",
                          flush=True)
    print(f"estimate / measured: {min(ratios):.3f} .. {max(ratios):.3f} "
          f"(worst {max(abs(r - 1) for r in ratios):.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

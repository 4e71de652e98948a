"""Latency of the exported static-graph pipeline vs Paddle dygraph vs diffusers eager (PyTorch), all on the CPU.

    python bench/bench_deploy.py [--repeats 5] [--teacher_repeats 2] [--threads 2] [--configs tiny medium]
                                 [--tables step e2e teacher]

One process, same thread count for all three; runs are interleaved and reported as medians and ratios. Tables:
per denoising step (one transformer call, batch 1), end to end at 4 steps (text encoders + 4 steps + VAE decode,
from identical weights and initial latents), and the 4-step student vs the 28- and 50-step teacher end to end on
the static pipeline (same model, only the step count differs); `--tables` picks which. The exported transformer
and the dygraph one both run fused projections (export fuses the pipeline's transformer in place).
MKL_DEBUG_CPU_TYPE=5 (set by `import ppflux_lightning` on AMD) speeds Paddle's MKL up; `PPFLUX_NO_MKL_FIX=1`
measures without it.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # runnable from a checkout

CONFIGS = {
    # The tiny test pipeline as built: 256 image tokens.
    "tiny": dict(transformer=None, height=64, width=64, text_len=32),
    # A 768-wide transformer (12 heads x 64), 2 double + 4 single blocks, 1024 image tokens.
    "medium": dict(transformer=dict(in_channels=16, num_layers=2, num_single_layers=4, attention_head_dim=64,
                                    num_attention_heads=12, joint_attention_dim=32, pooled_projection_dim=32,
                                    guidance_embeds=True, axes_dims_rope=[8, 28, 28]),
                   height=128, width=128, text_len=64),
}
TABLES = ("step", "e2e", "teacher")
PROMPT = "a lighthouse on a rocky coast under a stormy sky"


def median_ms(fns, repeats):
    """Interleave the callables `repeats` times after one warm-up each; {label: median ms}."""
    times = {label: [] for label in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for label, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[label].append(1000 * (time.perf_counter() - start))
    return {label: statistics.median(t) for label, t in times.items()}


def build(name, folder):
    """The tiny pipeline folder, with the transformer replaced for larger configurations; its export."""
    import paddle

    from ppflux_lightning.export import export_pipeline, load_pipeline
    from ppflux_lightning.models import FluxConfig, FluxTransformer2DModel
    from ppflux_lightning.pipelines import build_tiny_pipeline

    spec = CONFIGS[name]
    model_dir = build_tiny_pipeline(os.path.join(folder, name), seed=0)
    if spec["transformer"]:
        paddle.seed(0)
        transformer = FluxTransformer2DModel(FluxConfig(**spec["transformer"]))
        transformer.save_pretrained(os.path.join(model_dir, "transformer"))
    pipe = load_pipeline(model_dir)
    pipe.set_progress_bar_config(disable=True)
    export_dir = export_pipeline(pipe, os.path.join(folder, name + "_export"), [(spec["height"], spec["width"])],
                                 steps=4, max_sequence_length=spec["text_len"])
    return model_dir, pipe, export_dir


def bench_config(name, folder, repeats, teacher_repeats, threads, tables):
    import numpy as np
    import paddle
    import torch
    from diffusers import FluxPipeline as TorchFluxPipeline

    from ppflux_lightning.export import DeployPipeline, StaticGraph
    from ppflux_lightning.pipelines import latent_image_ids, make_latents

    spec = CONFIGS[name]
    height, width, text_len = spec["height"], spec["width"], spec["text_len"]
    model_dir, pipe, export_dir = build(name, folder)
    deploy = DeployPipeline(export_dir, threads=threads)
    ref = TorchFluxPipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    ref.set_progress_bar_config(disable=True)

    # ---- one denoising step: a transformer call at batch 1
    cfg = pipe.transformer.config
    factor = deploy.config["vae"]["scale_factor"]
    h, w = height // factor, width // factor
    rng = np.random.default_rng(0)
    arrays = dict(
        hidden_states=make_latents(0, 1, cfg.in_channels // 4, h, w),
        encoder_hidden_states=rng.standard_normal((1, text_len, cfg.joint_attention_dim)).astype(np.float32),
        pooled_projections=rng.standard_normal((1, cfg.pooled_projection_dim)).astype(np.float32),
        timestep=np.array([0.5], np.float32),
        img_ids=latent_image_ids(h, w).numpy(),
        txt_ids=np.zeros((text_len, 3), np.float32),
        guidance=np.array([3.5], np.float32),
    )
    pd_in = {k: paddle.to_tensor(v) for k, v in arrays.items()}
    th_in = {k: torch.tensor(v) for k, v in arrays.items()}

    def dygraph_step():
        with paddle.no_grad():
            return pipe.transformer(**pd_in).numpy()

    def torch_step():
        with torch.no_grad():
            return ref.transformer(**th_in).sample.numpy()

    step = end_to_end = diffs = teacher = None
    if "step" in tables:
        print(f"[{name}] per-step timings", file=sys.stderr)
        onednn = StaticGraph(os.path.join(export_dir, "transformer"), onednn=True, threads=threads)
        step = median_ms({"dygraph": dygraph_step, "static": lambda: deploy.graphs["transformer"](**arrays),
                          "static_onednn": lambda: onednn(**arrays), "diffusers": torch_step}, repeats)

    # ---- end to end, 4 steps, identical initial latents
    latents = make_latents(1, 1, cfg.in_channels // 4, h, w)
    if "e2e" in tables:
        print(f"[{name}] end-to-end timings", file=sys.stderr)
        call = dict(height=height, width=width, guidance_scale=3.5, max_sequence_length=text_len, output_type="np")
        results = {}

        def keep(label, images):
            results[label] = images

        fns = {
            "dygraph": lambda: keep("dygraph", pipe(PROMPT, num_inference_steps=4, latents=latents, **call).images),
            "static": lambda: keep("static", deploy(PROMPT, steps=4, latents=latents)),
            "diffusers": lambda: keep("diffusers", ref(PROMPT, num_inference_steps=4, latents=torch.tensor(latents),
                                                      **call).images),
        }
        end_to_end = median_ms(fns, repeats)
        diffs = {k: float(np.abs(results[k] - results["dygraph"]).max()) for k in ("static", "diffusers")}

    # ---- student (4 steps) vs teacher (28, 50 steps) on the static pipeline
    if "teacher" in tables:
        print(f"[{name}] student vs teacher timings", file=sys.stderr)
        teacher = median_ms({n: (lambda n=n: deploy(PROMPT, steps=n, latents=latents)) for n in (4, 28, 50)},
                            teacher_repeats)
    return step, end_to_end, diffs, teacher


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--teacher_repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    # Interleaved runs: idle OpenMP workers of one library must not spin on the cores the next one needs.
    os.environ.setdefault("KMP_BLOCKTIME", "0")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    import ppflux_lightning  # noqa: F401  (MKL switch before paddle)

    torch.set_num_threads(args.threads)
    mkl = os.environ.get("MKL_DEBUG_CPU_TYPE", "unset")
    print(f"CPU, {args.threads} threads for Paddle, the predictor and PyTorch; MKL_DEBUG_CPU_TYPE={mkl}; "
          f"KMP_BLOCKTIME={os.environ['KMP_BLOCKTIME']}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; "
          f"medians of {args.repeats} interleaved runs (teacher table: {args.teacher_repeats}); load average before: "
          f"{' '.join(format(x, '.1f') for x in os.getloadavg())}", file=sys.stderr)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench_deploy_") as folder:
        for name in args.configs:
            rows[name] = bench_config(name, folder, args.repeats, args.teacher_repeats, args.threads, args.tables)
    print(f"load average after: {' '.join(format(x, '.1f') for x in os.getloadavg())}")

    if "step" in args.tables:
        print("\nPer denoising step (one transformer call, batch 1), ms:")
        print("| config | dygraph | static predictor | static + oneDNN | diffusers eager | static / dygraph "
              "| static / diffusers | oneDNN / static |")
        print("|---|---|---|---|---|---|---|---|")
        for name, (step, _, _, _) in rows.items():
            print(f"| {name} | {step['dygraph']:.1f} | {step['static']:.1f} | {step['static_onednn']:.1f} | "
                  f"{step['diffusers']:.1f} | {step['static'] / step['dygraph']:.2f}x | "
                  f"{step['static'] / step['diffusers']:.2f}x | {step['static_onednn'] / step['static']:.2f}x |")
    if "e2e" in args.tables:
        print_end_to_end(rows)
    if "teacher" in args.tables:
        print_teacher(rows)


def print_end_to_end(rows):
    print("\nEnd to end, 4 steps (text encoders + 4 steps + VAE decode), ms; max |image - dygraph image|:")
    print("| config | dygraph | static predictor | diffusers eager | dygraph / static | diffusers / static "
          "| static diff | diffusers diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (_, e2e, diffs, _) in rows.items():
        print(f"| {name} | {e2e['dygraph']:.1f} | {e2e['static']:.1f} | {e2e['diffusers']:.1f} | "
              f"{e2e['dygraph'] / e2e['static']:.2f}x | {e2e['diffusers'] / e2e['static']:.2f}x | "
              f"{diffs['static']:.1e} | {diffs['diffusers']:.1e} |")


def print_teacher(rows):
    print("\nStudent vs teacher end to end on the static pipeline (same model, steps differ), ms:")
    print("| config | 4 steps | 28 steps | 50 steps | 28 / 4 | 50 / 4 |")
    print("|---|---|---|---|---|---|")
    for name, (_, _, _, t) in rows.items():
        print(f"| {name} | {t[4]:.1f} | {t[28]:.1f} | {t[50]:.1f} | {t[28] / t[4]:.2f}x | {t[50] / t[4]:.2f}x |")


if __name__ == "__main__":
    main()

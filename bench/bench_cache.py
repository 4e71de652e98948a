"""Benchmark the cache policies against the uncached run, side by side in one process.

For each method and threshold: median wall clock of the denoising run and its speedup over the uncached median, the
fraction of block evaluations skipped, and against the uncached images of the same prompts and seeds: PSNR/SSIM,
FID (toy-task or Inception features) and, on a toy model, validity and prompt adherence. Writes PREFIX.md (table),
PREFIX.json and PREFIX.png (speed/quality Pareto plot).

    python bench/bench_cache.py --model DIR --steps 50,28          # a diffusers-layout FLUX folder (the pipeline)
    python bench/bench_cache.py --model DIR --lora LORA --steps 4  # a LoRA student (fused)
    python bench/bench_cache.py --random-medium --steps 28         # random transformer, for timing only
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # runnable from a checkout

import ppflux_lightning  # noqa: E402,F401  (sets the MKL switch before paddle is imported)

# isort: split
import argparse
import json
import shlex
import statistics
import time

import numpy as np
import paddle
from tqdm import tqdm

from ppflux_lightning.acceleration import POLICIES, CacheConfig, build_policy
from ppflux_lightning.eval.evaluate import sampling_defaults
from ppflux_lightning.eval.fid import extract_features, fid_from_features
from ppflux_lightning.eval.image_metrics import psnr, ssim
from ppflux_lightning.models.flux_transformer import FluxConfig, FluxTransformer2DModel
from ppflux_lightning.schedulers.flow_match import FlowMatchEulerScheduler
from ppflux_lightning.toy.features import load_feature_spec
from ppflux_lightning.toy.metrics import task_scores
from ppflux_lightning.toy.quickstart import default_features_dir, eval_prompt_set
from ppflux_lightning.utils.atomic import atomic_file

# Calibrated on the trained toy teacher (block 0 changes a few % per step, as in FLUX.1); a random transformer needs
# a higher grid (see docs/acceleration.md).
DEFAULT_THRESHOLDS = {
    "teacache": [0.25, 0.5, 0.8],
    "fbcache": [0.04, 0.06, 0.1],
    "firstblock_taylor": [0.04, 0.06, 0.1],
    "teablockcache": [0.1, 0.2, 0.4],
    "sortblock": [0.25, 0.5, 1.0],
}
FEATURES_FALLBACK_DIR = os.path.join("outputs", "bench_cache", "task_features")
COLORS = {"teacache": "#d62728", "fbcache": "#ff7f0e", "firstblock_taylor": "#1f77b4", "teablockcache": "#2ca02c",
          "sortblock": "#9467bd"}


class RandomTransformerWorkload:
    """A randomly initialised transformer and a plain Euler loop: real timing, meaningless images. The output
    latents, unpacked to a grid and scaled by the uncached output's range, stand in for images."""

    def __init__(self, width, heads, double, single, grid, text_tokens, batch, seed):
        if width % heads or (width // heads) % 4:
            raise ValueError(f"width {width} must split into {heads} heads of a size divisible by 4")
        head_dim = width // heads
        rope = (head_dim // 8 * 2, head_dim * 7 // 16 // 2 * 2, 0)
        rope = (rope[0], rope[1], head_dim - rope[0] - rope[1])
        paddle.seed(seed)
        self.config = FluxConfig(
            in_channels=64, num_layers=double, num_single_layers=single, attention_head_dim=head_dim,
            num_attention_heads=heads, joint_attention_dim=256, pooled_projection_dim=128, guidance_embeds=True,
            axes_dims_rope=rope,
        )
        self.model = FluxTransformer2DModel(self.config)
        self.model.eval()
        self.grid = grid
        rng = np.random.default_rng(seed)
        rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        tensor = lambda a: paddle.to_tensor(np.asarray(a, np.float32))
        self.latents = tensor(rng.standard_normal((batch, grid * grid, 64)))
        self.context = tensor(rng.standard_normal((batch, text_tokens, 256)))
        self.pooled = tensor(rng.standard_normal((batch, 128)))
        self.img_ids = tensor(np.stack([np.zeros(grid * grid), rows.ravel(), cols.ravel()], -1))
        self.txt_ids = tensor(np.zeros((text_tokens, 3)))
        self.description = (f"random transformer: inner {width} ({heads} heads), {double}+{single} blocks, "
                            f"{grid * grid} image + {text_tokens} text tokens, batch {batch}, fp32")
        self.range = None

    @paddle.no_grad()
    def run(self, config, steps, timing=True):
        """(outputs [N, H, W, C], cache stats or None); the timing run is also the quality run here."""
        policy = build_policy(config) if config is not None else None
        scheduler = FlowMatchEulerScheduler()
        scheduler.set_timesteps(steps, image_seq_len=self.grid * self.grid)
        self.model.cache_policy = policy
        if policy is not None:
            policy.begin(steps)
        x = self.latents
        try:
            for i, sigma in enumerate(scheduler.sigmas[:-1]):
                if policy is not None:
                    policy.set_step(i)
                v = self.model(x, self.context, self.pooled, float(sigma), self.img_ids, self.txt_ids, guidance=3.5)
                x = scheduler.step(v, i, x)
        finally:
            self.model.cache_policy = None
        out = x.numpy().reshape(x.shape[0], self.grid, self.grid, -1)
        if config is None:  # the uncached output fixes the [0, 1] scaling shared by every run
            self.range = (out.min(), out.max())
        low, high = self.range
        return (out - low) / (high - low), policy.stats.as_dict() if policy is not None else None


class PipelineWorkload:
    """`ppflux_lightning.pipelines.FluxPipeline` on a diffusers-layout folder: prompt i always starts from the noise of
    seed `seeds[i]`, sampled in batches of `batch_size`; images as float arrays in [0, 1]. Timing runs only the first
    `timing_batches` batches (repeated); quality runs the whole prompt set once."""

    separate_quality_run = True

    def __init__(self, model_dir, prompts, seeds, height, width, guidance, lora=None, lora_scale=1.0,
                 max_sequence_length=512, batch_size=16, timing_batches=1):
        try:
            from ppflux_lightning.pipelines.flux_pipeline import FluxPipeline, make_latents
        except ImportError as error:
            raise SystemExit(f"--model needs ppflux_lightning.pipelines.FluxPipeline, unavailable: {error}") from None
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"model folder {model_dir!r} does not exist")
        if batch_size < 1 or timing_batches < 1:
            raise ValueError(f"--batch-size and --timing-batches must be >= 1, got {batch_size} and {timing_batches}")
        self.pipe = FluxPipeline.from_pretrained(model_dir)
        self.pipe.set_progress_bar_config(disable=True)
        if lora:  # fused, so a step of the student costs what a teacher step costs
            self.pipe.load_lora_weights(lora, scale=lora_scale)
            self.pipe.fuse_lora()
        self.make_latents = make_latents
        self.prompts, self.seeds = list(prompts), list(seeds)
        self.height, self.width, self.guidance = height, width, guidance
        self.max_sequence_length, self.batch_size = max_sequence_length, batch_size
        self.timing_count = min(len(self.prompts), batch_size * timing_batches)
        self.description = (f"FluxPipeline on {model_dir}{f' + LoRA {lora} x{lora_scale:g} (fused)' if lora else ''}:"
                            f" {height}x{width}, guidance {guidance}; quality on {len(self.prompts)} prompts with "
                            f"one seed each (batches of {batch_size}), timing on the first {self.timing_count}")

    def latents(self, seeds):
        scale = self.pipe.vae_scale_factor
        channels = self.pipe.transformer.config.in_channels // 4
        return np.concatenate([self.make_latents(int(s), 1, channels, self.height // scale, self.width // scale)
                               for s in seeds])

    def run(self, config, steps, timing=True, seed_offset=0):
        """(images [N, H, W, 3], summed cache stats or None) over the timing prompts or the whole prompt set."""
        count = self.timing_count if timing else len(self.prompts)
        images, stats = [], None
        for start in range(0, count, self.batch_size):
            prompts = self.prompts[start:min(start + self.batch_size, count)]
            seeds = [s + seed_offset for s in self.seeds[start:start + len(prompts)]]
            if config is None:
                self.pipe.disable_cache()
            else:
                self.pipe.enable_cache(config)
            try:
                out = self.pipe(prompts, num_inference_steps=steps, height=self.height, width=self.width,
                                guidance_scale=self.guidance, latents=self.latents(seeds), output_type="np",
                                max_sequence_length=self.max_sequence_length)
            finally:
                policy = self.pipe.cache_policy
                self.pipe.disable_cache()
            images.append(np.asarray(getattr(out, "images", out), np.float64))
            if policy is not None:
                batch = policy.stats.as_dict()
                stats = batch if stats is None else {k: stats[k] + batch[k] for k in stats}
        if stats is not None:
            total = stats["blocks_run"] + stats["blocks_skipped"]
            stats["skipped_fraction"] = stats["blocks_skipped"] / total if total else 0.0
        return np.clip(np.concatenate(images), 0.0, 1.0), stats


class QualityScorer:
    """FID of a cached image set against the uncached set of the same prompts and seeds (toy-task or Inception
    features), toy validity and prompt adherence, and the FID floor: the uncached model with other seeds."""

    def __init__(self, feature_fn, prompts, adherence):
        self.feature_fn, self.prompts, self.adherence = feature_fn, prompts, adherence
        self.reference = None

    def set_reference(self, images):
        if self.feature_fn is not None:
            self.reference = extract_features(images, self.feature_fn, desc="FID features")

    def __call__(self, images):
        scores = {}
        if self.feature_fn is not None:
            scores["fid"] = fid_from_features(extract_features(images, self.feature_fn, desc="FID features"),
                                              self.reference)
        if self.adherence:  # a toy model: the task's exact validity (clean scene) and adherence
            task = task_scores(images, self.prompts)  # reads every image once
            scores.update(validity=task["validity"], adherence=task["adherence"])
        return scores


def measure(workload, configs, steps, repeats, scorer=None):
    """Interleaved timing repeats (uncached first in each round) so machine noise hits every configuration alike,
    then one quality run per configuration (the timing run itself for workloads without a separate quality set)."""
    workload.run(None, min(steps, 2))  # warm-up
    labels = ["uncached"] + [f"{c.method}@{c.threshold:g}" for c in configs]
    times = {label: [] for label in labels}
    timed = {}
    bar = tqdm(total=repeats * len(labels), desc=f"{steps} steps, timing", file=sys.stdout, mininterval=10)
    for r in range(repeats):
        for label, config in zip(labels, [None] + configs):
            start = time.perf_counter()
            out, stats = workload.run(config, steps)
            times[label].append(time.perf_counter() - start)
            if r == 0:
                timed[label] = (out, stats)
            bar.update()
    bar.close()
    separate = getattr(workload, "separate_quality_run", False)
    results = {}
    for label, config in tqdm(list(zip(labels, [None] + configs)), desc=f"{steps} steps, quality", file=sys.stdout,
                              mininterval=10, disable=not separate):
        results[label] = workload.run(config, steps, timing=False) if separate else timed[label]
    reference = results["uncached"][0]
    floor = None
    if scorer is not None:
        scorer.set_reference(reference)
        if separate:  # what an independent draw of the same prompts scores: the scale FIDs are read against
            floor = scorer(workload.run(None, steps, timing=False, seed_offset=10**6)[0])
    base = statistics.median(times["uncached"])
    rows = []
    for label, config in zip(labels, [None] + configs):
        out, stats = results[label]
        timed_stats = timed[label][1]
        median = statistics.median(times[label])
        ratios = [u / t for u, t in zip(times["uncached"], times[label])]
        rows.append({
            "label": label,
            "method": config.method if config else "uncached",
            "threshold": config.threshold if config else None,
            "steps": steps,
            "median_s": median,
            "speedup": base / median,
            "speedup_paired_median": statistics.median(ratios),
            "skipped_fraction_timed": timed_stats["skipped_fraction"] if timed_stats else 0.0,
            "skipped_fraction": stats["skipped_fraction"] if stats else 0.0,
            "full_steps": timed_stats["full_steps"] * steps / timed_stats["steps"] if timed_stats else steps,
            "images": len(out),
            "psnr": float(np.mean(np.minimum(psnr(out, reference), 99.0))),
            "ssim": float(np.mean(ssim(out, reference))),
            **(scorer(out) if scorer is not None else {}),
            "times_s": times[label],
        })
    return {"rows": rows, "floor": floor}


def markdown(results_by_steps, description, repeats):
    lines = [f"Workload: {description}. Medians of {repeats} interleaved repeats; the machine is shared and noisy "
             "(2 cores, other jobs running), so read speedups as ratios measured side by side, not absolute times. "
             "Skipped blocks: on the timed batch / on the whole quality set; quality columns: whole quality set "
             "against the uncached images of the same prompts and seeds.", ""]
    for steps, result in results_by_steps.items():
        rows = result["rows"]
        extra = [k for k in ("fid", "validity", "adherence") if k in rows[0]]
        names = {"fid": "FID to uncached", "validity": "validity %", "adherence": "adherence %"}
        lines += [f"### {steps} steps", "",
                  "| method | threshold | median s | speedup | paired speedup | skipped blocks | full steps | PSNR dB "
                  "| SSIM |" + "".join(f" {names[k]} |" for k in extra),
                  "|---|---|---|---|---|---|---|---|---|" + "---|" * len(extra)]
        for r in rows:
            thr = "-" if r["threshold"] is None else f"{r['threshold']:g}"
            psnr_text = "inf" if r["psnr"] >= 99 else f"{r['psnr']:.2f}"
            lines.append(f"| {r['method']} | {thr} | {r['median_s']:.2f} | {r['speedup']:.2f}x | "
                         f"{r['speedup_paired_median']:.2f}x | {100 * r['skipped_fraction_timed']:.1f}% / "
                         f"{100 * r['skipped_fraction']:.1f}% | {r['full_steps']:.3g}/{steps} | {psnr_text} | "
                         f"{r['ssim']:.4f} |" + "".join(f" {r[k]:.2f} |" for k in extra))
        floor = result.get("floor")
        if floor:
            lines += ["", f"Scale: the uncached model on the same {rows[0]['images']} prompts with other seeds scores "
                      + ", ".join(f"{names[k]} {v:.2f}" for k, v in floor.items())
                      + " (FID of an independent draw at this sample count)."]
        lines.append("")
    return "\n".join(lines)


def pareto_plot(results_by_steps, path, title):
    """SSIM (and FID, when measured) against speedup, one line per method and step count (points in threshold order,
    dashed for the second step count); matplotlib when installed, else a PIL drawing of the SSIM panel."""
    panels = [("ssim", "SSIM against uncached output")]
    if all("fid" in result["rows"][0] for result in results_by_steps.values()):
        panels.append(("fid", "FID to uncached images (lower is better)"))
    series = {key: [] for key, _ in panels}
    for n, (steps, result) in enumerate(results_by_steps.items()):
        rows = sorted(result["rows"], key=lambda r: r["threshold"] or 0)
        for method in POLICIES:
            for key in series:
                pts = [(r["speedup"], r[key]) for r in rows if r["method"] == method]
                if pts:
                    series[key].append((f"{method} ({steps} steps)", COLORS[method], pts, n % 2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _pil_plot(series["ssim"], path, title)
    fig, axes = plt.subplots(1, len(panels), figsize=(8 * len(panels), 5.5), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for name, color, pts, dashed in series[key]:
            ax.plot(*zip(*pts), marker="o", color=color, linestyle="--" if dashed else "-", label=name)
        ax.plot([1.0], [1.0 if key == "ssim" else 0.0], marker="*", color="black", markersize=12, linestyle="none",
                label="uncached")
        ax.set_xlabel("speedup over uncached (median wall clock)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _pil_plot(series, path, title):
    from PIL import Image, ImageDraw

    size, margin = (880, 600), (70, 40, 250, 60)  # left, top, right, bottom
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    xs = [1.0] + [p[0] for s in series for p in s[2]]
    ys = [1.0] + [p[1] for s in series for p in s[2]]
    x_span, y_span = max(max(xs) - min(xs), 0.1), max(1.0 - min(ys), 1e-3)
    x0, x1 = min(xs) - 0.05 * x_span, max(xs) + 0.05 * x_span
    y0, y1 = min(ys) - 0.1 * y_span, 1.0 + 0.05 * y_span
    left, top, right, bottom = margin[0], margin[1], size[0] - margin[2], size[1] - margin[3]
    to_px = lambda x, y: (left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top))
    draw.rectangle([left, top, right, bottom], outline="black")
    for i in range(6):
        xv, yv = x0 + i * (x1 - x0) / 5, y0 + i * (y1 - y0) / 5
        px, _ = to_px(xv, y0)
        _, py = to_px(x0, yv)
        draw.line([px, top, px, bottom], fill="#e0e0e0")
        draw.line([left, py, right, py], fill="#e0e0e0")
        draw.text((px - 12, bottom + 5), f"{xv:.2f}", fill="black")
        draw.text((left - 55, py - 6), f"{yv:.4f}", fill="black")
    draw.text((left, 5), title, fill="black")
    draw.text(((left + right) // 2 - 120, size[1] - 25), "speedup over uncached (median wall clock)", fill="black")
    draw.text((5, top - 15), "SSIM vs uncached", fill="black")
    for n, (name, color, pts, _) in enumerate(series):
        pixels = [to_px(x, y) for x, y in pts]
        if len(pixels) > 1:
            draw.line(pixels, fill=color, width=2)
        for px, py in pixels:
            draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=color)
        draw.line([right + 15, top + 18 * n + 6, right + 35, top + 18 * n + 6], fill=color, width=3)
        draw.text((right + 40, top + 18 * n), name, fill="black")
    px, py = to_px(1.0, 1.0)
    draw.rectangle([px - 5, py - 5, px + 5, py + 5], fill="black")
    draw.text((right + 40, top + 18 * len(series)), "uncached (black square)", fill="black")
    with atomic_file(path) as tmp:
        image.save(tmp, format="PNG")


def parse_thresholds(items):
    """`method=a,b,c` overrides of the default threshold grid."""
    grid = {m: list(v) for m, v in DEFAULT_THRESHOLDS.items()}
    for item in items or []:
        method, sep, values = item.partition("=")
        if not sep or method not in POLICIES:
            raise SystemExit(f"--thresholds expects METHOD=a,b,c with METHOD in {sorted(POLICIES)}, got {item!r}")
        grid[method] = [float(v) for v in values.split(",") if v]
    return grid


def pipeline_workload(args):
    """The FluxPipeline workload and its quality scorer (FID and, for a toy model, validity and adherence) from the
    flags."""
    if not os.path.isdir(args.model):
        raise FileNotFoundError(f"model folder {args.model!r} does not exist")
    defaults = sampling_defaults(args.model)
    if args.prompts:
        prompts, seeds = args.prompts, list(range(len(args.prompts)))
    elif defaults["toy"]:
        prompts, seeds = eval_prompt_set(args.eval_prompts)
    else:
        raise SystemExit(f"{args.model} is not a toy model: pass --prompts")
    pick = lambda value, key: defaults[key] if value is None else value
    workload = PipelineWorkload(
        args.model, prompts, [s + args.seed for s in seeds], pick(args.height, "height"),
        pick(args.image_width, "width"), pick(args.guidance, "guidance_scale"), args.lora, args.lora_scale,
        pick(args.max_sequence_length, "max_sequence_length"), args.batch_size, args.timing_batches)
    spec = args.features
    if spec is None and defaults["toy"]:
        spec = "task:" + default_features_dir(args.model, os.path.dirname(FEATURES_FALLBACK_DIR))
    feature_fn = None if spec in (None, "none") else load_feature_spec(spec, image_size=defaults["height"])
    if feature_fn is None and not defaults["toy"]:
        return workload, None
    return workload, QualityScorer(feature_fn, prompts, adherence=defaults["toy"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="diffusers-layout FLUX folder (FluxPipeline)")
    source.add_argument("--random-medium", action="store_true", help="random transformer, for timing")
    parser.add_argument("--steps", default="28", help="comma-separated step counts, e.g. 50,28")
    parser.add_argument("--methods", default=",".join(POLICIES), help="comma-separated cache methods")
    parser.add_argument("--thresholds", nargs="*", help="METHOD=a,b,c overrides of the default threshold grid")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="docs/acceleration_bench", help="output prefix for .md, .json and .png")
    parser.add_argument("--seed", type=int, default=0)
    random_group = parser.add_argument_group("--random-medium size")
    random_group.add_argument("--width", type=int, default=768)
    random_group.add_argument("--heads", type=int, default=12)
    random_group.add_argument("--double", type=int, default=4)
    random_group.add_argument("--single", type=int, default=8)
    random_group.add_argument("--grid", type=int, default=32, help="packed latent grid side (image tokens = grid^2)")
    random_group.add_argument("--text-tokens", type=int, default=64)
    random_group.add_argument("--batch", type=int, default=1)
    pipe_group = parser.add_argument_group("--model generation")
    pipe_group.add_argument("--prompts", nargs="+", help="prompts (seeds SEED, SEED+1, ...); default for a toy model: "
                            "--eval-prompts held-out prompts of the toy task")
    pipe_group.add_argument("--eval-prompts", type=int, default=64, help="toy eval-split prompts, one seed each")
    pipe_group.add_argument("--batch-size", type=int, default=16, help="prompts per pipeline call")
    pipe_group.add_argument("--timing-batches", type=int, default=1, help="batches timed (the first ones)")
    pipe_group.add_argument("--height", type=int, help="default: the toy model's size, else 1024")
    pipe_group.add_argument("--image-width", type=int, help="default: the toy model's size, else 1024")
    pipe_group.add_argument("--guidance", type=float, help="default: the toy model's, else 3.5")
    pipe_group.add_argument("--max-sequence-length", type=int, help="T5 tokens (default: the toy model's, else 512)")
    pipe_group.add_argument("--lora", help="LoRA file or folder fused into the pipeline (e.g. the 4-step student)")
    pipe_group.add_argument("--lora-scale", type=float, default=1.0)
    pipe_group.add_argument("--features", help="FID features: task:DIR (toy classifier, trained into DIR when absent) "
                            "or inception:FILE.pdparams; 'none' skips FID (default for a toy model: "
                            f"task:{FEATURES_FALLBACK_DIR} unless assets/toy/task_features exists)")
    args = parser.parse_args(argv)

    steps_list = [int(s) for s in args.steps.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    grid = parse_thresholds(args.thresholds)
    configs = [CacheConfig(m, t) for m in methods for t in grid.get(m) or []]  # CacheConfig rejects unknown methods
    if args.repeats < 1 or not steps_list or min(steps_list) < 1:
        raise SystemExit(f"need --repeats >= 1 and step counts >= 1, got {args.repeats} and {args.steps!r}")
    if args.random_medium:
        workload = RandomTransformerWorkload(args.width, args.heads, args.double, args.single, args.grid,
                                             args.text_tokens, args.batch, args.seed)
        scorer = None
    else:
        workload, scorer = pipeline_workload(args)
    print(workload.description)
    rows_by_steps = {steps: measure(workload, configs, steps, args.repeats, scorer) for steps in steps_list}
    table = markdown(rows_by_steps, workload.description, args.repeats)
    print(table)
    command = "python bench/bench_cache.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    with atomic_file(args.out + ".md") as tmp, open(tmp, "w") as f:
        f.write(f"Command: `{command}`\n\n{table}\n")
    with atomic_file(args.out + ".json") as tmp, open(tmp, "w") as f:
        json.dump({"command": command, "workload": workload.description, "repeats": args.repeats,
                   "results": {str(k): v for k, v in rows_by_steps.items()}}, f, indent=1)
    pareto_plot(rows_by_steps, args.out + ".png", workload.description)
    print(f"wrote {args.out}.md, .json and .png")


if __name__ == "__main__":
    main()

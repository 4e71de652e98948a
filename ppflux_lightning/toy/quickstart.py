"""The toy-world distillation loop end to end: teacher -> training data -> FLUX-Lightning student -> metrics -> report.

`run_quickstart` is `tools/quickstart.py`; the building blocks (`write_train_data`, `train_student`, `Sampler`,
`score_images`, `save_rows_grid`) are shared with `bench/bench_distill.py`. Every image set is sampled from the same
eval prompts and per-prompt seeds, so rows compare pixel to pixel (PSNR) and as distributions (FID-to-teacher).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np

from ..utils.atomic import atomic_dir, atomic_file
from . import task

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MODEL = os.path.join("assets", "toy", "flux-toy")
CONFIG_DIR = os.path.join(REPO_ROOT, "configs", "toy")
DATA_MARKER = "toy_dataset.json"
FINAL_LORA = "pytorch_lora_weights.safetensors"
RUN_MARKER = "run.json"


# ---------------------------------------------------------------- teacher and data
def ensure_toy_model(path, quick=False):
    """The toy pipeline folder `path`; built with the toy builder when it does not exist yet (quick: ~2 min build)."""
    if os.path.isfile(os.path.join(path, "model_index.json")):
        return path
    if os.path.exists(path):
        raise FileNotFoundError(f"{path!r} exists but is not a pipeline folder (no model_index.json)")
    from .build import BuildSettings, build_toy

    print(f"[quickstart] no toy model at {path!r}: building it ({'quick' if quick else 'full'} build)", flush=True)
    tool = os.path.join(REPO_ROOT, "tools", "build_toy.py")
    nproc = min(2, os.cpu_count() or 1)
    if quick or nproc == 1 or not os.path.isfile(tool):
        build_toy(path, BuildSettings.quick() if quick else BuildSettings())
    elif subprocess.call([sys.executable, tool, "--out", path, "--nproc", str(nproc)]) != 0:
        raise RuntimeError(f"building the toy model into {path!r} failed (see the output above)")
    return path


def write_train_data(folder, count, image_size, seed=0):
    """Render `count` seeded TRAIN-split scenes as `NNNNN.png` + `NNNNN.txt` (the `folder` dataset layout).

    A folder already holding the same (count, size, seed) is kept, so reruns skip the rendering.
    """
    from PIL import Image

    if count < 1:
        raise ValueError(f"training image count must be >= 1, got {count}")
    spec = {"count": int(count), "image_size": int(image_size), "seed": int(seed), "split": "train",
            "task": task.fingerprint()}
    marker = os.path.join(folder, DATA_MARKER)
    if os.path.isfile(marker):
        with open(marker) as f:
            if json.load(f) == spec:
                return folder
    images, captions = task.sample_dataset(count, image_size, seed, split="train")
    with atomic_dir(folder, overwrite=True, ours=DATA_MARKER) as tmp:
        for i, (image, text) in enumerate(zip(images, captions)):
            Image.fromarray(image).save(os.path.join(tmp, f"{i:05d}.png"))
            with open(os.path.join(tmp, f"{i:05d}.txt"), "w", encoding="utf-8") as f:
                f.write(text + "\n")
        with open(os.path.join(tmp, DATA_MARKER), "w") as f:
            json.dump(spec, f)
    return folder


def toy_settings(model_dir):
    """(image size, max T5 length, guidance) of a toy pipeline folder, from its `toy_world.json`."""
    from .build import load_toy_config

    cfg = load_toy_config(model_dir)
    return int(cfg["image_size"]), int(cfg["max_sequence_length"]), float(cfg["guidance_scale"])


def eval_prompt_set(count):
    """`task.eval_prompts(count)` (open attributes at every level, held-out triples named in full, a quarter
    two-object prompts) and their seeds 0..count-1."""
    prompts = task.eval_prompts(count)
    return prompts, list(range(len(prompts)))


# ---------------------------------------------------------------- training
def generator_groups(cfg):
    """Optimizer groups per cycle: 2 with the adversarial loss (D and G steps alternate), else 1."""
    return 2 if cfg.objectives.adversarial.enabled else 1


def student_config(config_path, model_dir, data_dir, out_dir, steps, seed, overrides=()):
    """The validated training config: `steps` generator steps (optimizer steps x D/G groups), toy sizes filled in."""
    from ..config import load_config
    from ..engine.schema import DEFAULTS

    image_size, max_len, guidance = toy_settings(model_dir)
    base = [f"model.pretrained={model_dir}", f"data.path={data_dir}", f"data.resolution={image_size}",
            f"model.max_sequence_length={max_len}", f"model.guidance={guidance}", f"train.output_dir={out_dir}",
            f"train.seed={seed}"]
    cfg = load_config(config_path, base + list(overrides), schema=DEFAULTS)
    if steps < 1:
        raise ValueError(f"training steps must be >= 1, got {steps}")
    cfg.train.max_steps = int(steps) * generator_groups(cfg)
    cfg.train.checkpoint_every = min(int(cfg.train.checkpoint_every), cfg.train.max_steps)
    return cfg


def train_student(cfg):
    """Train (or resume, or skip when finished with the same config) one LoRA student; returns its LoRA path."""
    from ..engine.trainer import Trainer, dump_config

    # the config names the teacher and the data by path: their fingerprints make a rebuilt toy model or re-rendered
    # data a different run (never skipped as finished, never resumed from the old run's checkpoints)
    text = dump_config(cfg) + (f"# inputs: model {folder_fingerprint(cfg.model.pretrained)}, "
                               f"data {folder_fingerprint(cfg.data.path)}\n")
    out = cfg.train.output_dir
    lora_path = os.path.join(out, FINAL_LORA)
    marker = os.path.join(out, RUN_MARKER)
    if os.path.isfile(lora_path) and os.path.isfile(marker):
        with open(marker) as f:
            if json.load(f).get("config") == text:
                print(f"[distill] {out}: finished earlier with the same config, skipped", flush=True)
                return lora_path
    discard_stale_checkpoints(out, text)
    started = time.time()
    Trainer(cfg, resume="auto", config_text=text).train()
    with atomic_file(marker) as tmp, open(tmp, "w") as f:
        json.dump({"config": text, "train_seconds": round(time.time() - started, 1)}, f)
    return lora_path


def discard_stale_checkpoints(out_dir, config_text):
    """Remove `checkpoint-*` left in `out_dir` by a run with another config, so `resume=latest` never continues it."""
    import shutil

    from ..engine.checkpoint import list_checkpoints

    path = os.path.join(out_dir, "config.yaml")
    if not os.path.isdir(out_dir) or not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        if f.read() == config_text:
            return
    for _, folder in list_checkpoints(out_dir):
        print(f"[distill] {folder}: written with another config, removed", flush=True)
        shutil.rmtree(folder)


def folder_fingerprint(path):
    """Digest of the names, sizes and modification times of every file under `path`: it changes whenever anything
    there is rewritten (a rebuilt toy model, re-rendered data), so results keyed on it are never reused across
    versions."""
    digest = hashlib.sha1()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            file = os.path.join(root, name)
            st = os.stat(file)
            digest.update(f"{os.path.relpath(file, path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- sampling and metrics
class Sampler:
    """Batched sampling from one toy pipeline: prompt i always starts from `make_latents(seeds[i])`."""

    def __init__(self, model_dir, batch_size=16):
        from ..pipelines.flux_pipeline import FluxPipeline

        self.pipe = FluxPipeline.from_pretrained(model_dir)
        self.pipe.set_progress_bar_config(disable=True)
        self.image_size, self.max_len, self.guidance = toy_settings(model_dir)
        self.batch_size = batch_size

    def latents(self, seeds):
        from ..pipelines.flux_pipeline import make_latents

        h = self.image_size // self.pipe.vae_scale_factor
        channels = self.pipe.transformer.config.in_channels // 4
        return np.concatenate([make_latents(int(s), 1, channels, h, h) for s in seeds])

    def sample(self, prompts, seeds, steps, desc="sampling"):
        """(images float [N, H, W, 3] in [0, 1], seconds per image of every batch)."""
        from tqdm import tqdm

        images, per_image = [], []
        starts = range(0, len(prompts), self.batch_size)
        for start in tqdm(starts, desc=desc, leave=False):
            p, s = prompts[start:start + self.batch_size], seeds[start:start + self.batch_size]
            t0 = time.perf_counter()
            out = self.pipe(p, height=self.image_size, width=self.image_size, num_inference_steps=steps,
                            guidance_scale=self.guidance, latents=self.latents(s), max_sequence_length=self.max_len,
                            output_type="np").images
            per_image.append((time.perf_counter() - t0) / len(p))
            images.append(out)
        return np.concatenate(images), per_image

    def sample_student(self, lora_path, prompts, seeds, steps=4, desc="student"):
        """Sample with a LoRA fused into the transformer (so a step costs what a teacher step costs), then remove it."""
        self.pipe.load_lora_weights(lora_path)
        self.pipe.fuse_lora()
        try:
            return self.sample(prompts, seeds, steps, desc)
        finally:
            self.pipe.unfuse_lora()
            self.pipe.unload_lora_weights()


def default_features_dir(model_dir, out_dir):
    """A feature network committed next to the toy model (`<model>/../task_features`), else `<out>/task_features`."""
    from .features import TASK_FEATURES_WEIGHTS

    beside = os.path.join(os.path.dirname(os.path.abspath(model_dir.rstrip("/"))), "task_features")
    if os.path.isfile(os.path.join(beside, TASK_FEATURES_WEIGHTS)):
        return beside
    return os.path.join(out_dir, "task_features")


def score_images(images, prompts, reference, feature_fn, reference_features=None):
    """FID-to-teacher, the exact task metrics (`toy.metrics.task_scores`: validity, adherence, coverage) and PSNR vs
    the teacher (dB, mean over pairs)."""
    from ..eval.fid import extract_features, fid_from_features
    from ..eval.image_metrics import psnr
    from .metrics import task_scores

    if reference_features is None:
        reference_features = extract_features(reference, feature_fn)
    fid = fid_from_features(extract_features(images, feature_fn), reference_features)
    return {"fid_to_teacher": fid, **task_scores(images, prompts),
            "psnr_vs_teacher": float(np.mean(np.minimum(psnr(images, reference), 100.0)))}


def save_rows_grid(rows, path, columns, scale=2, label_width=96):
    """One PNG: a labelled row of `columns` images per (label, images float [N, H, W, 3]) entry."""
    from PIL import Image, ImageDraw

    size = rows[0][1].shape[1]
    cell = size * scale
    canvas = Image.new("RGB", (label_width + columns * cell, len(rows) * cell), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        draw.text((4, r * cell + cell // 2 - 6), label, fill=(0, 0, 0))
        for c, image in enumerate(images[:columns]):
            tile = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
            canvas.paste(tile.resize((cell, cell), Image.NEAREST), (label_width + c * cell, r * cell))
    with atomic_file(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


# ---------------------------------------------------------------- the quickstart
@dataclasses.dataclass
class QuickstartSettings:
    """What `tools/quickstart.py` runs; `smoke()` is the seconds-long end-to-end check."""

    out: str = os.path.join("outputs", "quickstart")
    model: str = DEFAULT_MODEL
    config: str = os.path.join(CONFIG_DIR, "full.yaml")
    steps: int = 100                # generator steps of the student
    train_images: int = 2000
    eval_prompts: int = 96
    grid_columns: int = 8
    seed: int = 0
    features: str = ""              # FID feature network folder ("" = default_features_dir; trained if missing)
    feature_steps: int = 400
    quick_build: bool = False       # build the toy teacher with the quick settings when it is missing
    overrides: tuple = ()

    @classmethod
    def smoke(cls, **kw):
        base = dict(steps=2, train_images=16, eval_prompts=8, grid_columns=4, feature_steps=10, quick_build=True)
        return cls(**{**base, **kw})


def run_quickstart(s: QuickstartSettings):
    """Distill, evaluate and report; returns the result dict (also written as `<out>/results.json`)."""
    started = time.time()
    os.makedirs(s.out, exist_ok=True)
    model = ensure_toy_model(s.model, s.quick_build)
    image_size, _, _ = toy_settings(model)
    data = write_train_data(os.path.join(s.out, "train_data"), s.train_images, image_size, s.seed)
    cfg = student_config(s.config, model, data, os.path.join(s.out, "student"), s.steps, s.seed, s.overrides)
    t0 = time.time()
    lora_path = train_student(cfg)
    train_seconds = time.time() - t0

    from .features import load_task_features

    features = load_task_features(s.features or default_features_dir(model, s.out), s.feature_steps,
                                  image_size=image_size, seed=s.seed)
    prompts, seeds = eval_prompt_set(s.eval_prompts)
    sampler = Sampler(model)
    teacher50, t50 = sampler.sample(prompts, seeds, 50, "teacher@50")
    teacher4, t4 = sampler.sample(prompts, seeds, 4, "teacher@4")
    student4, s4 = sampler.sample_student(lora_path, prompts, seeds, 4, "student@4")

    from ..eval.fid import extract_features
    from .metrics import task_scores

    ref = extract_features(teacher50, features)
    rows = {
        "teacher@50": {**task_scores(teacher50, prompts), "seconds_per_image": t50},
        "teacher@4": {**score_images(teacher4, prompts, teacher50, features, ref), "seconds_per_image": t4},
        "student@4": {**score_images(student4, prompts, teacher50, features, ref), "seconds_per_image": s4},
    }
    for row in rows.values():
        row["seconds_per_image"] = float(np.median(row["seconds_per_image"]))
    grid = save_rows_grid([(k, v) for k, v in zip(rows, (teacher50, teacher4, student4))],
                          os.path.join(s.out, "grid.png"), s.grid_columns)
    result = {"model": model, "config": s.config, "steps": s.steps, "train_images": s.train_images,
              "eval_prompts": len(prompts), "lora": lora_path, "grid": grid, "rows": rows,
              "train_seconds": round(train_seconds, 1), "total_seconds": round(time.time() - started, 1)}
    with atomic_file(os.path.join(s.out, "results.json")) as tmp, open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    with atomic_file(os.path.join(s.out, "report.md")) as tmp, open(tmp, "w") as f:
        f.write(report_markdown(result, prompts[:s.grid_columns]))
    return result


def fmt(value, digits=2):
    return "—" if value is None else f"{value:.{digits}f}"


def report_markdown(result, grid_prompts):
    rows = result["rows"]
    base = rows["teacher@50"]["seconds_per_image"]
    lines = [
        "# FLUX-Lightning quickstart (toy world)", "",
        f"Teacher `{result['model']}`, config `{os.path.relpath(result['config'], REPO_ROOT)}`, "
        f"{result['steps']} generator steps on {result['train_images']} training images "
        f"({result['train_seconds']} s), evaluated on {result['eval_prompts']} evaluation prompts, one seed each.",
        "", "Validity, adherence and coverage are read by the task's exact detector (`toy.metrics`); FID-to-teacher "
        "and PSNR are measured against teacher@50 images of the same prompts and seeds. Coverage TV is the largest "
        "over colour, shape and cell (0 = the uniform distribution the data has).", "",
        "| row | validity % | one-object adherence % | coverage TV | FID-to-teacher | PSNR vs teacher (dB) | "
        "s / image | speed vs teacher@50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {fmt(row['validity'], 1)} | {fmt(row.get('adherence_single'), 1)} | "
                     f"{fmt(row.get('coverage_tv'), 3)} | {fmt(row.get('fid_to_teacher'))} | "
                     f"{fmt(row.get('psnr_vs_teacher'))} | {row['seconds_per_image']:.4f} | "
                     f"{base / row['seconds_per_image']:.1f}x |")
    lines += ["", "Seconds per image: median over batches, measured side by side in this run (the machine may be "
              "shared, so compare ratios, not absolute times).", "",
              f"![grid]({os.path.basename(result['grid'])})", "",
              "Grid rows: teacher@50 | teacher@4 | student@4; columns (same prompts and seeds in every row):", ""]
    lines += [f"{i + 1}. {p}" for i, p in enumerate(grid_prompts)]
    lines.append(f"\nTotal time: {result['total_seconds']} s.")
    return "\n".join(lines) + "\n"


def summary_line(result):
    rows = result["rows"]
    st, t4, t50 = rows["student@4"], rows["teacher@4"], rows["teacher@50"]
    return (f"student@4: validity {st['validity']:.1f}% (teacher@50 {t50['validity']:.1f}%, teacher@4 "
            f"{t4['validity']:.1f}%), coverage TV {fmt(st['coverage_tv'], 3)} (teacher@50 "
            f"{fmt(t50['coverage_tv'], 3)}), FID-to-teacher {st['fid_to_teacher']:.2f} (teacher@4 "
            f"{t4['fid_to_teacher']:.2f}), PSNR {st['psnr_vs_teacher']:.2f} dB; report in "
            f"{os.path.dirname(result['grid'])}/report.md ({result['total_seconds']:.0f} s)")

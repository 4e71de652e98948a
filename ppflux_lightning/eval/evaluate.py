"""Generate paired image sets with a pipeline and score them: FID (to a reference such as the teacher), CLIP score,
PSNR/SSIM against the reference, plus any task-specific scores a caller passes in; results as JSON and markdown.

Image i of every set uses prompt i and seed `seed + i`, so a student and its teacher start from the same noise and
PSNR/SSIM between them are meaningful.
"""

import json
import os

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..utils.atomic import atomic_file
from ..utils.errors import InputFileError
from ..utils.files import TOY_CONFIG_NAME
from .fid import extract_features, fid_from_features
from .image_io import to_uint8, write_prompts
from .image_metrics import psnr, ssim

GENERATION_FILE = "generation.json"


def generate_images(pipe, prompts, out_dir, steps, seed=0, height=1024, width=1024, guidance_scale=3.5,
                    max_sequence_length=512, settings=None):
    """Sample one image per prompt into `out_dir` (`00000.png`, ...), resuming where an earlier run with the same
    settings stopped; returns the uint8 images `[N, H, W, 3]`."""
    record = {"steps": steps, "seed": seed, "height": height, "width": width, "guidance_scale": guidance_scale,
              "max_sequence_length": max_sequence_length, "prompts": len(prompts), **(settings or {})}
    os.makedirs(out_dir, exist_ok=True)
    record_path = os.path.join(out_dir, GENERATION_FILE)
    if os.path.isfile(record_path):
        with open(record_path) as f:
            previous = json.load(f)
        if previous != record:
            changed = sorted(k for k in set(previous) | set(record) if previous.get(k) != record.get(k))
            raise InputFileError(f"{out_dir} holds images made with other settings ({', '.join(changed)}); "
                             "choose another folder or delete it")
    with atomic_file(record_path) as tmp, open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    write_prompts(prompts, os.path.join(out_dir, "prompts.txt"))
    pipe.set_progress_bar_config(disable=True)
    images = []
    for i, prompt in enumerate(tqdm(prompts, desc=f"sampling {steps} steps")):
        path = os.path.join(out_dir, f"{i:05d}.png")
        if os.path.isfile(path):
            images.append(np.asarray(Image.open(path).convert("RGB")))
            continue
        image = pipe(prompt, height=height, width=width, num_inference_steps=steps, guidance_scale=guidance_scale,
                     seed=seed + i, max_sequence_length=max_sequence_length, output_type="np").images[0]
        image = to_uint8(image)
        with atomic_file(path) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        images.append(image)
    return np.stack(images)


def evaluate_images(images, prompts, reference=None, feature_fn=None, clip_scorer=None, extra_metrics=None):
    """Every metric the inputs allow, as a flat dict.

    `fid` needs `reference` and `feature_fn`; `psnr`/`ssim` need a `reference` (paired by index, same size: another
    size is an error, not a silently missing metric);
    `clip_score` needs `clip_scorer`; `extra_metrics(images, prompts) -> dict` adds task-specific scores (the toy
    world's validity / adherence / coverage, passed in by `tools/eval.py`).
    """
    if len(images) != len(prompts):
        raise InputFileError(f"{len(images)} images but {len(prompts)} prompts")
    metrics = {"images": len(images)}
    if reference is not None:
        if len(reference) != len(images):
            raise InputFileError(f"{len(images)} images but {len(reference)} reference images")
        if np.shape(reference) != np.shape(images):
            raise InputFileError(f"the reference images are {np.shape(reference)[2]}x{np.shape(reference)[1]} and "
                                 f"the images {np.shape(images)[2]}x{np.shape(images)[1]}: PSNR/SSIM compare pairs "
                                 "of one size; resize one set or give a matching reference")
        if feature_fn is not None:
            metrics["fid"] = fid_from_features(extract_features(images, feature_fn, desc="features"),
                                               extract_features(reference, feature_fn, desc="reference features"))
        a, b = _unit(images), _unit(reference)
        metrics["psnr"] = float(np.mean(np.minimum(psnr(a, b), 100.0)))  # identical pairs count as 100 dB
        if min(a.shape[1:3]) >= 11:
            metrics["ssim"] = float(np.mean(ssim(a, b)))
    if clip_scorer is not None:
        metrics["clip_score"] = clip_scorer(images, prompts)
    if extra_metrics is not None:
        metrics.update(extra_metrics(images, prompts))
    return metrics


def _unit(images):
    images = np.asarray(images)
    return images.astype(np.float64) / 255.0 if images.dtype == np.uint8 else images.astype(np.float64)


def write_report(metrics, out_dir, description=None):
    """`metrics.json` and `metrics.md` (one table) in `out_dir`; returns the markdown."""
    lines = ["# Evaluation", ""]
    if description:
        lines += [description, ""]
    lines += ["| metric | value |", "|---|---:|"]
    for name, value in metrics.items():
        lines.append(f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |")
    markdown = "\n".join(lines) + "\n"
    os.makedirs(out_dir, exist_ok=True)
    with atomic_file(os.path.join(out_dir, "metrics.json")) as tmp, open(tmp, "w") as f:
        json.dump(metrics, f, indent=2)
    with atomic_file(os.path.join(out_dir, "metrics.md")) as tmp, open(tmp, "w") as f:
        f.write(markdown)
    return markdown



def load_feature_fn(spec):
    """A FID feature network from `fid-inception:FILE` (the standard FID Inception, converted by
    tools/convert_fid_inception.py) or `inception:FILE.pdparams` (paddle.vision's ImageNet InceptionV3). The toy
    world's `task:FOLDER` is `toy.features.load_feature_spec`, which falls back to this."""
    from . import features

    kind, sep, path = spec.partition(":")
    if not sep or not path or kind not in ("fid-inception", "inception"):
        raise InputFileError(f"feature network must be fid-inception:FILE or inception:FILE (or, for the toy world, "
                             f"task:FOLDER), got {spec!r}")
    if kind == "fid-inception":
        from .fid_inception import FIDInceptionFeatures

        return FIDInceptionFeatures(path)
    return features.InceptionFeatures(path)


def sampling_defaults(model_dir):
    """Image size, guidance and text length to sample a model folder with: its TOY_CONFIG_NAME when it is a toy
    model, else FLUX.1-dev's 1024 px, guidance 3.5, 512 T5 tokens."""
    path = os.path.join(model_dir, TOY_CONFIG_NAME)
    if os.path.isfile(path):
        with open(path) as f:
            toy = json.load(f)
        return {"height": toy["image_size"], "width": toy["image_size"], "guidance_scale": toy["guidance_scale"],
                "max_sequence_length": toy["max_sequence_length"], "toy": True}
    return {"height": 1024, "width": 1024, "guidance_scale": 3.5, "max_sequence_length": 512, "toy": False}

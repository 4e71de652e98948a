"""Build the toy FLUX: tokenizers, frozen random text encoders, a trained VAE and a trained teacher, saved as a
diffusers-layout FLUX folder that every tool of the project loads like a real FLUX.1-dev repository."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import numpy as np
import paddle

from ..engine import distributed
from ..models.flux_transformer import FluxConfig, FluxTransformer2DModel
from ..models.text_encoders import build_clip_text_model, build_t5_encoder, save_text_encoder
from ..models.tokenizers import make_clip_tokenizer, make_t5_tokenizer, set_model_max_length
from ..models.vae import save_vae
from ..pipelines.flux_pipeline import MODEL_INDEX, FluxPipeline, latent_image_ids, pack_latents
from ..schedulers.flow_match import FlowMatchConfig, FlowMatchEulerScheduler
from ..utils.atomic import atomic_dir, atomic_file
from ..utils.files import TOY_CONFIG_NAME
from . import task
from .metrics import task_scores
from .train_teacher import TeacherSchedule, train_teacher
from .train_vae import build_vae, encode_mean, latent_factors, reconstruct, reconstruction_psnr, train_vae

CURVE_STEPS = (1, 2, 4, 8, 16, 50)  # the teacher's few-step curve in the build report


@dataclasses.dataclass
class BuildSettings:
    """Sizes and schedules of one build; `quick()` is the ~1-2 minute end-to-end check."""

    image_size: int = task.IMAGE_SIZE
    dataset_size: int = 12000
    vae_channels: tuple = (8, 16, 32)
    vae_steps: int = 2000
    vae_batch: int = 16
    vae_crop: int = 48  # whole images: 32 px crops were 2.25x cheaper per step but reached only 22.8 dB in 800 steps
    vae_lr: float = 5e-3
    vae_latent_noise: float = 0.0  # > 0: noise (x latent std) on the decoder's input over the last 40 % of steps
    text_width: int = 64
    width: int = 96  # transformer inner dim = heads x head_dim
    heads: int = 3
    double_blocks: int = 2
    single_blocks: int = 2
    captions_per_image: int = 1  # > 1: the teacher sees each image under that many captions (task.caption_variants)
    teacher: TeacherSchedule = dataclasses.field(default_factory=TeacherSchedule)
    guidance_scale: float = 3.5
    sample_steps: int = 50
    eval_prompts: int = 384  # task.eval_prompts(n) sampled for the build report
    eval_per_level: int = 96  # and task.level_balanced_prompts(n): n one-object prompts per level of specification
    curve_steps: tuple = CURVE_STEPS
    seed: int = 0

    @classmethod
    def quick(cls, seed=0):
        return cls(dataset_size=64, vae_steps=8, vae_batch=4, teacher=TeacherSchedule(
            steps=12, guidance_steps=4, batch_size=8, warmup=2, seed=seed), sample_steps=2, eval_prompts=8,
            eval_per_level=2, curve_steps=(1, 2), seed=seed)


def caption_corpus():
    """Tokenizer training text: every caption word on its own line (repeated, so sentencepiece keeps whole words as
    pieces and a caption stays short), every one-object caption, and pairs joined so ' and ' is seen."""
    singles = [task.caption((s,)) for s in task.all_specs()]
    return task.vocabulary() * 20 + singles + [f"{a} and {b}" for a, b in zip(singles[::2], singles[1::2])]


def text_encoder_configs(clip_vocab, t5_vocab, width):
    """HF configs of the frozen random toy text encoders (both `width` wide, 2 layers)."""
    clip = {"vocab_size": clip_vocab, "hidden_size": width, "intermediate_size": 2 * width, "projection_dim": width,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "bos_token_id": clip_vocab - 2,
            "eos_token_id": clip_vocab - 1, "pad_token_id": 1}
    t5 = {"vocab_size": t5_vocab, "d_model": width, "d_kv": width // 4, "d_ff": 2 * width, "num_layers": 2,
          "num_heads": 4, "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
          "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6, "feed_forward_proj": "gated-gelu",
          "dense_act_fn": "gelu_new", "is_gated_act": True, "is_encoder_decoder": False, "pad_token_id": 0,
          "eos_token_id": 1}
    return clip, t5


def transformer_config(settings: BuildSettings, latent_channels, text_width):
    head_dim = settings.width // settings.heads
    if settings.width % settings.heads or head_dim % 8:
        raise ValueError(f"width {settings.width} must split into {settings.heads} heads of a multiple of 8")
    image_axis = (head_dim * 7 // 16) // 2 * 2  # FLUX.1 splits a head 16/56/56: 1/8 text axis, 7/16 per image axis
    rope = (head_dim - 2 * image_axis, image_axis, image_axis)
    return FluxConfig(in_channels=4 * latent_channels, num_layers=settings.double_blocks,
                      num_single_layers=settings.single_blocks, attention_head_dim=head_dim,
                      num_attention_heads=settings.heads, joint_attention_dim=text_width,
                      pooled_projection_dim=text_width, guidance_embeds=True, axes_dims_rope=rope)


def t5_length(tokenizer, prompts):
    """Smallest multiple of 8 that holds every prompt's T5 tokens (with </s>)."""
    longest = max(len(ids) for ids in tokenizer(prompts)["input_ids"])
    return int(-(-longest // 8) * 8)


def _log(message):
    if not distributed.is_main():
        return
    print(f"[build_toy {time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_toy(out_dir, settings: BuildSettings | None = None, samples_path=None, features_dir=None):
    """Train every component and write the pipeline folder `out_dir` (replaced atomically). Returns a report dict.

    `features_dir` (a `toy.features` network folder) adds FID-to-teacher to the few-step curve of the report.
    Under `paddle.distributed.launch` the VAE and teacher steps are split over the processes (same result, faster);
    process 0 writes the folder and evaluates it, the others return None after training.
    """
    from paddlenlp.transformers import CLIPTokenizer, T5Tokenizer

    settings = settings or BuildSettings()
    rank, world = distributed.init()
    started = time.time()
    report = {"settings": dataclasses.asdict(settings), "processes": world}
    stage = out_dir.rstrip("/") + f".staging{rank}"
    shutil.rmtree(stage, ignore_errors=True)
    os.makedirs(stage)
    try:
        # --- tokenizers and frozen text encoders
        corpus = caption_corpus()
        clip_vocab = make_clip_tokenizer(os.path.join(stage, "tokenizer"), corpus, vocab_size=640)
        t5_vocab = make_t5_tokenizer(os.path.join(stage, "tokenizer_2"), corpus, vocab_size=64)
        tokenizer = CLIPTokenizer.from_pretrained(os.path.join(stage, "tokenizer"))
        tokenizer_2 = T5Tokenizer.from_pretrained(os.path.join(stage, "tokenizer_2"))
        longest = max((task.caption((s,)) for s in task.all_specs()), key=len)
        max_len = t5_length(tokenizer_2, corpus + [f"{longest} and {longest}"])  # the longest two-object caption
        set_model_max_length(os.path.join(stage, "tokenizer_2"), max_len)
        clip_cfg, t5_cfg = text_encoder_configs(clip_vocab, t5_vocab, settings.text_width)
        paddle.seed(settings.seed)
        text_encoder, text_encoder_2 = build_clip_text_model(clip_cfg), build_t5_encoder(t5_cfg)

        # --- data and VAE
        _log(f"rendering {settings.dataset_size} training images ({settings.image_size} px)")
        images, captions = training_data(settings)
        held_images, _ = task.sample_dataset(min(128, settings.dataset_size), settings.image_size, settings.seed + 1,
                                             split="eval")
        paddle.seed(settings.seed)
        vae = build_vae(settings.vae_channels, sample_size=settings.image_size)
        t0 = time.time()
        train_vae(vae, images, settings.vae_steps, settings.vae_batch, lr=settings.vae_lr, crop=settings.vae_crop,
                  seed=settings.seed, latent_noise=settings.vae_latent_noise)
        report["vae_seconds"] = round(time.time() - t0, 1)
        held_reconstructed = reconstruct(vae, held_images)  # encode + decode once, for both numbers
        report["vae_psnr_eval_db"] = round(reconstruction_psnr(held_reconstructed, held_images), 2)
        held_captions = task.eval_prompts(len(held_images))
        report["vae_valid_eval"] = round(task_scores(held_reconstructed, held_captions)["validity"], 1)
        _log(f"VAE reconstruction PSNR on held-out scenes: {report['vae_psnr_eval_db']} dB, "
             f"{report['vae_valid_eval']} % read as valid scenes")
        raw = encode_mean(vae, images)
        shift, scale = latent_factors(raw)
        vae.register_to_config(shift_factor=shift, scaling_factor=scale)
        report.update(latent_shift_factor=shift, latent_scaling_factor=scale, latent_grid=list(raw.shape[2:]),
                      max_sequence_length=max_len)

        # --- prompt embeddings through the pipeline's own encoder (identical to inference)
        config = transformer_config(settings, vae.config.latent_channels, settings.text_width)
        paddle.seed(settings.seed)
        model = FluxTransformer2DModel(config)
        scheduler = FlowMatchEulerScheduler(FlowMatchConfig(shift=3.0))
        pipe = FluxPipeline(model, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler)
        inputs = teacher_inputs(pipe, raw, captions, max_len)
        report["image_tokens"] = inputs["latents"].shape[1]
        report["min_pooled_distance"] = _min_pairwise_distance(inputs["pooled_embeds"][:256])

        # --- teacher
        t0 = time.time()
        teacher, history = train_teacher(model, schedule=settings.teacher, **inputs)
        report["teacher_seconds"] = round(time.time() - t0, 1)
        report["teacher_final_loss"] = round(float(np.mean(history[-50:])), 4)
        if rank != 0:
            return None

        # --- write the folder
        toy_config = {"image_size": settings.image_size, "max_sequence_length": max_len,
                      "guidance_scale": settings.guidance_scale, "num_inference_steps": settings.sample_steps,
                      "task": "ppflux_lightning.toy.task"}
        with atomic_dir(out_dir, overwrite=True, ours=TOY_CONFIG_NAME) as tmp:
            with open(os.path.join(tmp, "model_index.json"), "w") as f:
                json.dump(MODEL_INDEX, f, indent=2)
            with open(os.path.join(tmp, TOY_CONFIG_NAME), "w") as f:
                json.dump(toy_config, f, indent=2)
            teacher.save_pretrained(os.path.join(tmp, "transformer"))
            save_vae(vae, os.path.join(tmp, "vae"))
            save_text_encoder(text_encoder, os.path.join(tmp, "text_encoder"))
            save_text_encoder(text_encoder_2, os.path.join(tmp, "text_encoder_2"))
            for name in ("tokenizer", "tokenizer_2"):
                shutil.copytree(os.path.join(stage, name), os.path.join(tmp, name))
            scheduler.save_pretrained(os.path.join(tmp, "scheduler"))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    report["build_seconds_before_sampling"] = round(time.time() - started, 1)

    # --- reload like any user and sample
    feature_fn = None
    if features_dir:
        from .features import TaskFeatures

        feature_fn = TaskFeatures(features_dir)
    report.update(evaluate_toy(out_dir, settings.eval_prompts, samples_path=samples_path, feature_fn=feature_fn,
                               curve_steps=settings.curve_steps, per_level=settings.eval_per_level))
    report["build_seconds"] = round(time.time() - started, 1)
    report["folder_bytes"] = folder_bytes(out_dir)
    return report


def training_data(settings: BuildSettings):
    """The build's training images and, per image, its caption or (`captions_per_image` > 1) a list of captions: the
    drawn one first, then fresh draws given the scene (`task.caption_variants`, seeded); the images are the same."""
    images, captions, scenes = task.sample_dataset(settings.dataset_size, settings.image_size, settings.seed,
                                                   return_scenes=True)
    if settings.captions_per_image > 1:
        rng = np.random.default_rng(settings.seed + 2)
        captions = [[c, *task.caption_variants(scene, settings.captions_per_image - 1, rng)]
                    for c, scene in zip(captions, scenes)]
    return images, captions


def teacher_inputs(pipe, raw_latents, captions, max_len):
    """Every input of `train_teacher` but the model and the schedule (a dict of its keyword arguments), from the VAE
    means `raw_latents` [N, C, h, w] of the training images and their `captions` (one per image, or a list of K per
    image; K = 1 is the same as one per image): latents normalised with the pipeline VAE's `shift_factor` /
    `scaling_factor` and packed, each distinct caption (and the empty prompt) encoded once through the pipeline's own
    text encoders at `max_len` T5 tokens, the RoPE ids and FLUX's dynamic shift for the token count. Used by the
    build and by `bench/bench_teacher_schedule.py`, which retrains a built teacher."""
    shift, scale = float(pipe.vae.config.shift_factor), float(pipe.vae.config.scaling_factor)
    latents = pack_latents(paddle.to_tensor((raw_latents - shift) * scale)).numpy()
    index = np.asarray(captions, dtype=object)  # [N] or [N, K]: K captions per image, one drawn per sample
    if index.ndim == 2 and index.shape[1] == 1:
        index = index[:, 0]  # one caption per image: no per-sample draw, the one-caption random stream
    distinct = sorted(set(index.ravel().tolist()))
    lookup = {c: i for i, c in enumerate(distinct)}
    embeds, pooled = _encode(pipe, distinct, max_len)
    h, w = raw_latents.shape[2], raw_latents.shape[3]
    return {"latents": latents, "prompt_embeds": embeds, "pooled_embeds": pooled,
            "caption_index": np.vectorize(lookup.get, otypes=[np.int64])(index),
            "null_embeds": _encode(pipe, [""], max_len),
            "img_ids": latent_image_ids(h, w), "txt_ids": paddle.zeros([max_len, 3], dtype="float32"),
            "mu": pipe.scheduler.mu(latents.shape[1])}


def load_toy_config(path):
    """The `toy_world.json` of a toy pipeline folder."""
    file = os.path.join(path, TOY_CONFIG_NAME)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"no {TOY_CONFIG_NAME} in {path!r}: not a toy-world pipeline folder")
    with open(file) as f:
        return json.load(f)


def sample_toy(pipe, prompts, seed, toy_config, steps=None, guidance_scale=None):
    """Images float [N, H, W, 3] in [0, 1] for a batch of prompts (noise drawn from one seed), at the toy model's
    sampling settings unless `steps` / `guidance_scale` are given."""
    size = toy_config["image_size"]
    return pipe(list(prompts), height=size, width=size, seed=int(seed),
                num_inference_steps=steps or toy_config["num_inference_steps"],
                guidance_scale=toy_config["guidance_scale"] if guidance_scale is None else guidance_scale,
                max_sequence_length=toy_config["max_sequence_length"], output_type="np").images


def evaluate_toy(path, n_prompts=512, samples_path=None, feature_fn=None, curve_steps=CURVE_STEPS, seed=0,
                 per_level=0):
    """The teacher at every step count of `curve_steps` (guidance and text length from `toy_world.json`) on
    `task.eval_prompts(n_prompts)`, one seed per prompt: validity, adherence, coverage (`toy.metrics`), and with a
    `feature_fn` FID-to-teacher against the most-step images (that row: against itself with other seeds).
    `per_level` > 0 adds `levels_curve`: the same step counts on `task.level_balanced_prompts(per_level)` (one-object
    prompts, every level of specification alike), which is where the bars per level are read.

    `samples_path` gets a grid of the most-step images and `<stem>-steps.png` one row per step count."""
    from ..eval.fid import extract_features, fid_from_features
    from ..eval.image_metrics import psnr
    from .quickstart import Sampler, save_rows_grid

    prompts = task.eval_prompts(n_prompts)
    seeds = [seed + i for i in range(len(prompts))]
    sampler = Sampler(path)
    steps = sorted(curve_steps)
    images = {n: sampler.sample(prompts, seeds, n, f"teacher@{n}")[0] for n in steps}
    top = steps[-1]
    curve = {}
    ref = extract_features(images[top], feature_fn) if feature_fn else None
    for n in steps:
        row = {"steps": n, **task_scores(images[n], prompts)}
        if n != top:
            row["psnr_vs_teacher"] = float(np.mean(np.minimum(psnr(images[n], images[top]), 100.0)))
        if feature_fn is not None:
            if n == top:  # the sampling floor: the same prompts with other seeds
                other = sampler.sample(prompts, [s + 100000 for s in seeds], n, f"teacher@{n} other seeds")[0]
                row["fid_to_teacher"] = fid_from_features(extract_features(other, feature_fn), ref)
            else:
                row["fid_to_teacher"] = fid_from_features(extract_features(images[n], feature_fn), ref)
        curve[f"teacher@{n}"] = row
    if samples_path:
        save_grid(images[top][:16], samples_path, columns=8)
        stem, ext = os.path.splitext(samples_path)
        save_rows_grid([(f"teacher@{n}", images[n]) for n in steps], f"{stem}-steps{ext}", columns=10)
    result = {"eval_prompts": len(prompts), "curve": curve, "grid_prompts": prompts[:16]}
    if per_level:
        balanced = task.level_balanced_prompts(per_level)
        seeds = [seed + i for i in range(len(balanced))]
        result["per_level"] = per_level
        result["levels_curve"] = {f"teacher@{n}": {"steps": n, **task_scores(
            sampler.sample(balanced, seeds, n, f"teacher@{n}, per level")[0], balanced)} for n in steps}
    return result


def save_grid(images, path, columns=8, scale=2):
    """float [N, H, W, 3] in [0, 1] -> one PNG grid, nearest-neighbour upscaled."""
    from PIL import Image

    n, hh, ww, _ = images.shape
    rows = -(-n // columns)
    canvas = np.zeros((rows * hh, columns * ww, 3), np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * hh:(r + 1) * hh, c * ww:(c + 1) * ww] = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    picture = Image.fromarray(canvas).resize((columns * ww * scale, rows * hh * scale), Image.NEAREST)
    with atomic_file(path) as tmp:
        picture.save(tmp, format="PNG")


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _encode(pipe, prompts, max_len, batch_size=256):
    embeds, pooled = [], []
    for i in range(0, len(prompts), batch_size):
        e, p, _ = pipe.encode_prompt(prompts[i:i + batch_size], max_sequence_length=max_len)
        embeds.append(e.numpy())
        pooled.append(p.numpy())
    return np.concatenate(embeds), np.concatenate(pooled)


def _min_pairwise_distance(vectors):
    v = np.asarray(vectors, np.float64)
    d = np.sqrt(((v[:, None] - v[None]) ** 2).sum(-1))
    return float(d[~np.eye(len(v), dtype=bool)].min()) if len(v) > 1 else 0.0

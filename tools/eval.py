"""Evaluate generated images: FID (e.g. to the teacher: the seed's FID-FLUX), CLIP score, toy-task metrics,
PSNR/SSIM against a paired reference. Writes metrics.json and metrics.md.

    # images already on disk (one per prompt, sorted names = prompt order)
    python tools/eval.py score --images out/student --reference out/teacher --prompts prompts.txt \
        --features fid-inception:weights/fid_inception.safetensors --clip weights/clip-vit-large-patch14 \
        --out out/eval
    # a model folder + LoRA + steps: samples student and teacher (same seeds), then scores
    python tools/eval.py run --model assets/toy/flux-toy --lora student/pytorch_lora_weights.safetensors \
        --steps 4 --reference-steps 50 --prompts prompts.txt --out out/eval
    # sample only
    python tools/eval.py generate --model DIR [--lora FILE] --steps 4 --prompts FILE --out out/student
    # the toy world's FID feature network
    python tools/eval.py train-features --out out/task_features
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppflux_lightning import cli  # noqa: E402  (before paddle: sets the MKL switch)
from ppflux_lightning.utils.atomic import check_output_dir, has_marker  # noqa: E402
from ppflux_lightning.utils.device import DTYPES  # noqa: E402
from ppflux_lightning.utils.files import check_pipeline_folder  # noqa: E402


def add_sampling_args(p):
    p.add_argument("--model", required=True, help="diffusers-layout FLUX folder (the toy model or FLUX.1-dev)")
    p.add_argument("--lora", help="LoRA file of the student (diffusers/PEFT, kohya or PaddleMIX)")
    p.add_argument("--lora-scale", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--height", type=int, help="default: the toy model's size, else 1024")
    p.add_argument("--width", type=int)
    p.add_argument("--guidance", type=float, help="default: the toy model's, else 3.5")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: bfloat16 on a bf16 GPU, else float32")


def add_metric_args(p):
    p.add_argument("--features", help="FID features: fid-inception:FILE (the standard FID network, converted by "
                   "tools/convert_fid_inception.py), inception:FILE.pdparams (paddle.vision ImageNet weights; FIDs "
                   "not comparable with published ones) or task:FOLDER (toy; trained if absent)")
    p.add_argument("--clip", help="local paddlenlp CLIP folder for the CLIP score")
    p.add_argument("--adherence", action="store_true",
                   help="toy-task validity, adherence and coverage (task captions only)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="sample one image per prompt into a folder")
    add_sampling_args(gen)
    gen.add_argument("--prompts", required=True)
    gen.add_argument("--limit", type=int)
    gen.add_argument("--out", required=True)
    score = sub.add_parser("score", help="score folders of images")
    score.add_argument("--images", required=True)
    score.add_argument("--prompts", help="default: IMAGES/prompts.txt")
    score.add_argument("--reference", help="paired reference images (e.g. the teacher's) for FID and PSNR/SSIM")
    score.add_argument("--out", required=True)
    add_metric_args(score)
    run = sub.add_parser("run", help="sample student and teacher with a model folder, then score")
    add_sampling_args(run)
    run.add_argument("--prompts", required=True)
    run.add_argument("--limit", type=int)
    run.add_argument("--reference", help="reference image folder instead of sampling the teacher")
    run.add_argument("--reference-steps", type=int, default=50, help="teacher steps (LoRA off)")
    run.add_argument("--out", required=True)
    add_metric_args(run)
    feats = sub.add_parser("train-features", help="train the toy FID feature network")
    feats.add_argument("--out", required=True)
    feats.add_argument("--steps", type=int, default=500)
    feats.add_argument("--image-size", type=int, default=None)
    feats.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def is_eval_output(path):
    """A folder this tool wrote: our marker, metrics, or a toy feature network (eval.features.TASK_FEATURES_CONFIG)."""
    return has_marker(path, "eval") or any(os.path.isfile(os.path.join(path, name))
                                           for name in ("metrics.json", "task_features.json"))


def check_args(args):
    """Every check that needs no model: runs before Paddle is imported."""
    if args.command in ("generate", "run"):
        info = check_pipeline_folder(args.model)
        cli.existing_file("--lora", args.lora)
        cli.number("--lora-scale", args.lora_scale)
        cli.number("--steps", args.steps, min=1, max=1000)
        cli.seed("--seed", args.seed)
        for option in ("height", "width"):
            if getattr(args, option) is not None:
                cli.multiple_of(f"--{option}", getattr(args, option), 2 * info["vae_scale_factor"])
        cli.number("--guidance", args.guidance, min=0)
        cli.existing_file("--prompts", args.prompts)
        cli.number("--limit", args.limit, min=1)
    if args.command == "run":
        cli.number("--reference-steps", args.reference_steps, min=1, max=1000)
    if args.command == "score":
        cli.existing_dir("--images", args.images)
        cli.existing_file("--prompts", args.prompts)
        if args.features and not args.reference:
            raise cli.UserError("--features computes FID against --reference: pass the reference image folder")
    if args.command in ("score", "run"):
        cli.existing_dir("--reference", args.reference)
        cli.existing_dir("--clip", args.clip)
    if args.command == "train-features":
        cli.number("--steps", args.steps, min=1)
        cli.number("--image-size", args.image_size, above=0)
        cli.seed("--seed", args.seed)
    inputs = [getattr(args, name, None) for name in ("model", "images", "reference", "prompts", "lora")]
    check_output_dir(args.out, True, is_eval_output, protect=inputs, option="--out")


def load_pipeline(args):
    from ppflux_lightning.eval import evaluate
    from ppflux_lightning.pipelines import FluxPipeline
    from ppflux_lightning.utils.device import resolve_dtype

    pipe = FluxPipeline.from_pretrained(args.model, dtype=resolve_dtype(args.dtype, "--dtype"))
    defaults = evaluate.sampling_defaults(args.model)
    sampling = {"height": args.height or defaults["height"], "width": args.width or defaults["width"],
                "guidance_scale": defaults["guidance_scale"] if args.guidance is None else args.guidance,
                "max_sequence_length": defaults["max_sequence_length"]}
    return pipe, sampling, defaults["toy"]


def sample(pipe, sampling, args, prompts, out_dir, steps, lora):
    from ppflux_lightning.eval import evaluate

    settings = {"model": os.path.abspath(args.model), "lora": os.path.abspath(lora) if lora else None,
                "lora_scale": args.lora_scale if lora else None}
    if lora:
        pipe.load_lora_weights(lora, scale=args.lora_scale)
    try:
        return evaluate.generate_images(pipe, prompts, out_dir, steps, args.seed, settings=settings, **sampling)
    finally:
        if lora:
            pipe.unload_lora_weights()


def score(args, images, prompts, reference, toy=False, image_size=None):
    from ppflux_lightning.eval import evaluate
    from ppflux_lightning.toy.features import load_feature_spec  # tools sit on top: the toy world's parts
    from ppflux_lightning.toy.metrics import task_scores

    features = args.features or (f"task:{os.path.join(args.out, 'task_features')}" if toy else None)
    feature_fn = load_feature_spec(features, image_size=image_size) if features and reference is not None else None
    clip_scorer = None
    if args.clip:
        from ppflux_lightning.eval.clip_score import CLIPScorer

        clip_scorer = CLIPScorer.from_pretrained(args.clip)
    metrics = evaluate.evaluate_images(images, prompts, reference, feature_fn, clip_scorer,
                                       task_scores if args.adherence or toy else None)
    if "fid" in metrics:
        metrics["fid_features"] = features
    print(evaluate.write_report(metrics, args.out, f"`{' '.join(sys.argv)}`"), end="")
    return metrics


def _main(argv):
    args = parse_args(argv)
    check_args(args)
    with cli.output_folder(args.out, "eval"):
        run_command(args)


def run_command(args):
    from ppflux_lightning.eval.image_io import load_images, read_prompts

    if args.command == "train-features":
        from ppflux_lightning.toy.features import train_task_features

        extra = {"image_size": args.image_size} if args.image_size else {}
        accuracy = train_task_features(args.out, steps=args.steps, seed=args.seed, **extra)
        print(json.dumps({"out": args.out, "cell_accuracy": accuracy}))
    elif args.command == "generate":
        pipe, sampling, _ = load_pipeline(args)
        prompts = read_prompts(args.prompts, args.limit)
        sample(pipe, sampling, args, prompts, args.out, args.steps, args.lora)
        print(f"wrote {len(prompts)} images to {args.out}")
    elif args.command == "score":
        prompts = read_prompts(args.prompts or os.path.join(args.images, "prompts.txt"))
        images = load_images(args.images, len(prompts))
        reference = load_images(args.reference, len(prompts)) if args.reference else None
        score(args, images, prompts, reference)
    else:
        pipe, sampling, toy = load_pipeline(args)
        prompts = read_prompts(args.prompts, args.limit)
        images = sample(pipe, sampling, args, prompts, os.path.join(args.out, "student"), args.steps, args.lora)
        if args.reference:
            reference = load_images(args.reference, len(prompts))
        else:
            reference = sample(pipe, sampling, args, prompts, os.path.join(args.out, "teacher"),
                               args.reference_steps, None)
        score(args, images, prompts, reference, toy, sampling["height"] if toy else None)


def main(argv=None):
    """Exit code 0, or 2 with one line on stderr for a user's mistake (see ppflux_lightning.cli)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

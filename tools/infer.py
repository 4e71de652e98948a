"""Text-to-image with a FLUX pipeline folder; writes an image (a grid when there are several images).

    python tools/infer.py --model DIR --prompt "a red cat" [--steps 4 --guidance 3.5 --height 1024 --width 1024
        --seed 0 --num_images 1 --out out.png --dtype auto --lora FILE[:WEIGHT] [--lora FILE2[:WEIGHT] ...]
        --cache METHOD --cache_threshold X]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppflux_lightning import cli  # noqa: E402  (before paddle: sets the MKL switch)
from ppflux_lightning.utils.device import DTYPES  # noqa: E402
from ppflux_lightning.utils.files import check_pipeline_folder  # noqa: E402


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--model", required=True, help="diffusers-layout FLUX folder")
    p.add_argument("--prompt", required=True)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--guidance", type=float, default=3.5)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_images", type=int, default=1)
    p.add_argument("--max_sequence_length", type=int, default=None,
                   help="T5 prompt length (default: the model's tokenizer_2 model_max_length, at most 512)")
    p.add_argument("--out", default="out.png", help="image file (.png, .jpg, .webp, .bmp)")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: bfloat16 on a bf16 GPU, else float32")
    p.add_argument("--lora", action="append", metavar="FILE[:WEIGHT]",
                   help="LoRA file (diffusers/PEFT, kohya, XLabs or PaddleMIX), repeatable: the adapters stack")
    p.add_argument("--lora_scale", type=float, default=1.0, help="weight of a --lora given without :WEIGHT")
    p.add_argument("--cache", help="training-free cache method (see ppflux_lightning.acceleration)")
    p.add_argument("--cache_threshold", type=float, default=None, help="default: the method's own")
    return p.parse_args(argv)


def check_args(args):
    """Every check that needs no model: runs before Paddle is imported. Returns the LoRAs."""
    info = check_pipeline_folder(args.model)
    if not args.prompt.strip():
        raise cli.UserError("--prompt is empty")
    cli.number("--steps", args.steps, min=1, max=1000)
    cli.number("--guidance", args.guidance, min=0)
    multiple = 2 * info["vae_scale_factor"]
    cli.multiple_of("--height", args.height, multiple)
    cli.multiple_of("--width", args.width, multiple)
    cli.seed("--seed", args.seed)
    cli.number("--num_images", args.num_images, min=1, max=64)
    cli.number("--max_sequence_length", args.max_sequence_length, min=1, max=info["t5_max_length"])
    cli.number("--lora_scale", args.lora_scale)
    loras = cli.lora_specs("--lora", args.lora, args.lora_scale)
    cli.image_output("--out", args.out, protect=[args.model] + [spec["file"] for spec in loras])
    cli.number("--cache_threshold", args.cache_threshold, min=0)
    return loras


def _main(argv):
    args = parse_args(argv)
    loras = check_args(args)
    from ppflux_lightning.utils.device import resolve_dtype

    dtype = resolve_dtype(args.dtype, "--dtype")
    cache = cli.cache_config(args.cache, args.cache_threshold) if args.cache else None
    from ppflux_lightning.pipelines import FluxPipeline
    from ppflux_lightning.pipelines.grid import save_image_grid

    pipe = FluxPipeline.from_pretrained(args.model, dtype=dtype)
    if loras:
        pipe.load_lora_stack(loras)
    if cache is not None:
        pipe.enable_cache(cache)
    cli.warn_truncation(pipe, [args.prompt], args.max_sequence_length)
    images = pipe(
        args.prompt,
        height=args.height,
        width=args.width,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        num_images_per_prompt=args.num_images,
        max_sequence_length=args.max_sequence_length,
    ).images
    save_image_grid(images, args.out)
    print(f"wrote {args.out} ({len(images)} image{'s' if len(images) > 1 else ''})")


def main(argv=None):
    """Exit code 0, or 2 with one line on stderr for a user's mistake (see ppflux_lightning.cli)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Export a FLUX pipeline folder (LoRAs fused) to static graphs for Paddle Inference / CINN.

    [FLAGS_use_cinn=1] python deploy/export.py --model DIR --output EXPORT_DIR [--overwrite]
        [--lora FILE[:WEIGHT] ... --lora_scale S --lora_alpha A] [--height 1024 --width 1024 |
        --resolutions 1024x1024,768x1344] [--dtype auto] [--steps 4 --guidance 3.5 --max_sequence_length L]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppflux_lightning import cli  # noqa: E402  (before paddle: sets the MKL switch)
from ppflux_lightning.utils.device import DTYPES  # noqa: E402
from ppflux_lightning.utils.files import check_pipeline_folder, is_export_folder  # noqa: E402


def parse_resolutions(text):
    try:
        return [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolutions must look like 1024x1024,768x1344, got {text!r}") from None


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--model", required=True, help="diffusers-layout FLUX folder")
    p.add_argument("--output", required=True, help="export folder (written under a temporary name, then renamed)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    p.add_argument("--lora", action="append", metavar="FILE[:WEIGHT]",
                   help="LoRA file fused before export (diffusers/PEFT, kohya, XLabs or PaddleMIX), repeatable")
    p.add_argument("--lora_scale", type=float, default=1.0, help="weight of a --lora given without :WEIGHT")
    p.add_argument("--lora_alpha", type=float, default=None,
                   help="override the alpha of every --lora file (8: FLUX-Lightning)")
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--resolutions", type=parse_resolutions, help="several HxW buckets; overrides --height/--width")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: bfloat16 on a bf16 GPU, else float32")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--guidance", type=float, default=3.5)
    p.add_argument("--max_sequence_length", type=int, default=None,
                   help="T5 prompt length (default: the model's tokenizer_2 model_max_length, at most 512)")
    return p.parse_args(argv)


def check_args(args):
    """Every check that needs no model: runs before Paddle is imported. Returns the resolutions and the LoRAs."""
    info = check_pipeline_folder(args.model)
    multiple = 2 * info["vae_scale_factor"]
    resolutions = args.resolutions or [(args.height, args.width)]
    if not resolutions:
        raise cli.UserError("--resolutions is empty")
    for hw in resolutions:
        if len(hw) != 2:
            raise cli.UserError(f"--resolutions: {'x'.join(map(str, hw))!r} is not HxW")
        cli.multiple_of("--height" if not args.resolutions else "--resolutions height", hw[0], multiple)
        cli.multiple_of("--width" if not args.resolutions else "--resolutions width", hw[1], multiple)
    cli.number("--lora_scale", args.lora_scale)
    cli.number("--lora_alpha", args.lora_alpha, above=0)
    loras = cli.lora_specs("--lora", args.lora, args.lora_scale)
    for spec in loras:
        spec["alpha"] = args.lora_alpha
    cli.number("--steps", args.steps, min=1, max=1000)
    cli.number("--guidance", args.guidance, min=0)
    cli.number("--max_sequence_length", args.max_sequence_length, min=1, max=info["t5_max_length"])
    protect = [args.model] + [spec["file"] for spec in loras]
    cli.output_dir("--output", args.output, args.overwrite, is_export_folder, protect=protect)
    return resolutions, loras, protect


def _main(argv):
    args = parse_args(argv)
    resolutions, loras, protect = check_args(args)
    cli.quiet_native_warnings()
    from ppflux_lightning.utils.device import resolve_dtype

    dtype = resolve_dtype(args.dtype, "--dtype")
    from ppflux_lightning.export import export_pipeline, load_pipeline

    pipe = load_pipeline(args.model, dtype, loras)
    export_pipeline(
        pipe,
        args.output,
        resolutions,
        steps=args.steps,
        guidance=args.guidance,
        max_sequence_length=args.max_sequence_length,
        lora=loras or None,
        overwrite=args.overwrite,
        protect=protect,
    )
    print(f"exported {args.model} to {args.output}")


def main(argv=None):
    """Exit code 0, or 2 with one line on stderr for a user's mistake (see ppflux_lightning.cli)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

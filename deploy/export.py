"""Export a FLUX pipeline folder (LoRAs fused) to static graphs for Paddle Inference / CINN.

    [FLAGS_use_cinn=1] python deploy/export.py --model DIR --output EXPORT_DIR [--lora FILE[:WEIGHT] ...
        --lora_scale S --lora_alpha A] [--height 1024 --width 1024 | --resolutions 1024x1024,768x1344] [--dtype float32]
        [--steps 4 --guidance 3.5 --max_sequence_length L]
"""

import argparse

import ppflux_lightning  # noqa: F401  (sets the MKL switch before paddle is imported)
from ppflux_lightning.export import export_pipeline, load_pipeline
from ppflux_lightning.lora.pipeline_mixin import parse_lora_specs


def parse_resolutions(text):
    try:
        return [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolutions must look like 1024x1024,768x1344, got {text!r}") from None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="diffusers-layout FLUX folder")
    p.add_argument("--output", required=True, help="export folder (replaced whole when complete)")
    p.add_argument("--lora", action="append", metavar="FILE[:WEIGHT]",
                   help="LoRA file fused before export (diffusers/PEFT, kohya, XLabs or PaddleMIX), repeatable")
    p.add_argument("--lora_scale", type=float, default=1.0, help="weight of a --lora given without :WEIGHT")
    p.add_argument("--lora_alpha", type=float, default=None,
                   help="override the alpha of every --lora file (8: FLUX-Lightning)")
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--resolutions", type=parse_resolutions, help="several HxW buckets; overrides --height/--width")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--guidance", type=float, default=3.5)
    p.add_argument("--max_sequence_length", type=int, default=None,
                   help="T5 prompt length (default: the model's tokenizer_2 model_max_length, at most 512)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    loras = parse_lora_specs(args.lora, args.lora_scale, args.lora_alpha)
    pipe = load_pipeline(args.model, args.dtype, loras)
    export_pipeline(
        pipe,
        args.output,
        args.resolutions or [(args.height, args.width)],
        steps=args.steps,
        guidance=args.guidance,
        max_sequence_length=args.max_sequence_length,
        lora=loras or None,
    )
    print(f"exported {args.model} to {args.output}")


if __name__ == "__main__":
    main()

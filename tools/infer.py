"""Text-to-image with a FLUX pipeline folder; writes a PNG (a grid when there are several images).

    python tools/infer.py --model DIR --prompt "a red cat" [--steps 4 --guidance 3.5 --height 1024 --width 1024
        --seed 0 --num_images 1 --out out.png --dtype float32 --lora FILE[:WEIGHT] [--lora FILE2[:WEIGHT] ...]
        --cache METHOD --cache_threshold X]
"""

import argparse

import ppflux_lightning  # noqa: F401  (sets the MKL switch before paddle is imported)
from ppflux_lightning.pipelines import FluxPipeline
from ppflux_lightning.pipelines.grid import save_image_grid


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    p.add_argument("--out", default="out.png")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--lora", action="append", metavar="FILE[:WEIGHT]",
                   help="LoRA file (diffusers/PEFT, kohya, XLabs or PaddleMIX), repeatable: the adapters stack")
    p.add_argument("--lora_scale", type=float, default=1.0, help="weight of a --lora given without :WEIGHT")
    p.add_argument("--cache", help="training-free cache method (see ppflux_lightning.acceleration)")
    p.add_argument("--cache_threshold", type=float, default=None, help="default: the method's own")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    pipe = FluxPipeline.from_pretrained(args.model, dtype=args.dtype)
    if args.lora:
        pipe.load_lora_stack(args.lora, weight=args.lora_scale)
    if args.cache:
        from ppflux_lightning.acceleration import CacheConfig

        pipe.enable_cache(CacheConfig(method=args.cache, threshold=args.cache_threshold))
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


if __name__ == "__main__":
    main()

"""Text to image with an exported FLUX pipeline on Paddle Inference predictors (CINN with FLAGS_use_cinn=1).

    [FLAGS_use_cinn=1] python deploy/infer.py --model_dir EXPORT_DIR --prompt "a red cat" [--seed 0
        --num_images 1 --output out.png --device cpu|gpu[:N] --steps N --guidance G --height H --width W
        --benchmark N]
"""

import argparse

import ppflux_lightning  # noqa: F401  (sets the MKL switch before paddle is imported)
from ppflux_lightning.export import DeployPipeline, median_timings
from ppflux_lightning.pipelines.flux_pipeline import to_pil
from ppflux_lightning.pipelines.grid import save_image_grid


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True, help="folder written by deploy/export.py")
    p.add_argument("--prompt", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_images", type=int, default=1)
    p.add_argument("--output", default="out.png")
    p.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N")
    p.add_argument("--precision", choices=["float32", "float16", "bfloat16"], help="GPU precision (default: dtype)")
    p.add_argument("--threads", type=int, help="CPU math threads (default: OMP_NUM_THREADS or all cores)")
    p.add_argument("--onednn", action="store_true", help="use oneDNN kernels on the CPU (slower here, see README)")
    p.add_argument("--steps", type=int, help="default: the export's")
    p.add_argument("--guidance", type=float, help="default: the export's")
    p.add_argument("--height", type=int, help="default: the export's only resolution")
    p.add_argument("--width", type=int)
    p.add_argument("--benchmark", type=int, default=0, metavar="N", help="print median per-stage timings of N runs")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    pipe = DeployPipeline(args.model_dir, device=args.device, precision=args.precision, threads=args.threads,
                          onednn=args.onednn)
    call = dict(prompt=args.prompt, seed=args.seed, num_images=args.num_images, height=args.height,
                width=args.width, steps=args.steps, guidance=args.guidance)
    images = pipe(**call)
    save_image_grid(to_pil(images), args.output)
    print(f"wrote {args.output} ({len(images)} image{'s' if len(images) > 1 else ''})")
    if args.benchmark:
        medians = median_timings(pipe, args.benchmark, **call)
        print(f"median of {args.benchmark} runs (device {args.device}, CINN {'on' if pipe.use_cinn else 'off'}):")
        for stage, seconds in medians.items():
            print(f"  {stage:<14} {seconds * 1000:10.1f} ms")


if __name__ == "__main__":
    main()

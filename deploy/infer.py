"""Text to image with an exported FLUX pipeline on Paddle Inference predictors (CINN with FLAGS_use_cinn=1).

    [FLAGS_use_cinn=1] python deploy/infer.py --model_dir EXPORT_DIR --prompt "a red cat" [--seed 0
        --num_images 1 --output out.png --device cpu|gpu[:N] --steps N --guidance G --height H --width W
        --benchmark N]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppflux_lightning import cli  # noqa: E402  (before paddle: sets the MKL switch)
from ppflux_lightning.utils.files import DEPLOY_FILE  # noqa: E402


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--model_dir", required=True, help="folder written by deploy/export.py")
    p.add_argument("--prompt", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_images", type=int, default=1)
    p.add_argument("--output", default="out.png", help="image file (.png, .jpg, .webp, .bmp)")
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


def check_args(args):
    """Every check that needs no predictor: runs before Paddle is imported."""
    cli.existing_dir("--model_dir", args.model_dir)
    if not os.path.isfile(os.path.join(args.model_dir, DEPLOY_FILE)):
        raise cli.UserError(f"--model_dir {args.model_dir!r} has no {DEPLOY_FILE}: not a deploy/export.py folder")
    if not args.prompt.strip():
        raise cli.UserError("--prompt is empty")
    cli.seed("--seed", args.seed)
    cli.number("--num_images", args.num_images, min=1, max=64)
    cli.image_output("--output", args.output, protect=[args.model_dir])
    kind, _, index = args.device.partition(":")
    if kind not in ("cpu", "gpu") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise cli.UserError(f"--device must be cpu, gpu or gpu:N, got {args.device!r}")
    cli.number("--threads", args.threads, min=1)
    cli.number("--steps", args.steps, min=1, max=1000)
    cli.number("--guidance", args.guidance, min=0)
    cli.number("--height", args.height, above=0)
    cli.number("--width", args.width, above=0)
    cli.number("--benchmark", args.benchmark, min=0)


def check_resolution(config, height, width):
    """--height/--width must name an exported resolution (or be left out when there is only one)."""
    exported = [tuple(r) for r in config["resolutions"]]
    listed = ", ".join(f"{h}x{w}" for h, w in exported)
    if height is None and width is None:
        if len(exported) > 1:
            raise cli.UserError(f"this export has several resolutions ({listed}): pass --height and --width")
        return
    if height is None or width is None or (height, width) not in exported:
        raise cli.UserError(f"--height {height} --width {width} is not an exported resolution; exported: {listed}")


def _main(argv):
    args = parse_args(argv)
    check_args(args)
    from ppflux_lightning.export import DeployPipeline, load_deploy_config, median_timings
    from ppflux_lightning.export.predictor import check_device
    from ppflux_lightning.pipelines.flux_pipeline import to_pil
    from ppflux_lightning.pipelines.grid import save_image_grid

    check_resolution(load_deploy_config(args.model_dir), args.height, args.width)
    try:
        check_device(args.device)
    except ValueError as e:
        raise cli.UserError(f"--device: {e}") from None
    pipe = DeployPipeline(args.model_dir, device=args.device, precision=args.precision, threads=args.threads,
                          onednn=args.onednn)
    call = dict(prompt=args.prompt, seed=args.seed, num_images=args.num_images, height=args.height,
                width=args.width, steps=args.steps, guidance=args.guidance)
    cli.warn_truncation(pipe, [args.prompt], pipe.config["max_sequence_length"])
    images = pipe(**call)
    save_image_grid(to_pil(images), args.output)
    print(f"wrote {args.output} ({len(images)} image{'s' if len(images) > 1 else ''})")
    if args.benchmark:
        medians = median_timings(pipe, args.benchmark, **call)
        print(f"median of {args.benchmark} runs (device {args.device}, CINN {'on' if pipe.use_cinn else 'off'}):")
        for stage, seconds in medians.items():
            print(f"  {stage:<14} {seconds * 1000:10.1f} ms")


def main(argv=None):
    """Exit code 0, or 2 with one line on stderr for a user's mistake (see ppflux_lightning.cli)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Quickstart: distill the committed toy FLUX teacher into a 4-step FLUX-Lightning student, evaluate it, report.

    python tools/quickstart.py [--out outputs/quickstart] [--steps N] [--model assets/toy/flux-toy] [--smoke]

Writes `<out>/report.md`, `<out>/grid.png` (teacher@50 | teacher@4 | student@4) and `<out>/results.json`: the toy
task's exact validity, adherence and coverage (`ppflux_lightning.toy.metrics`), FID-to-teacher and PSNR vs teacher@50.
A rerun into the same folder continues (finished parts are skipped); a folder the quickstart did not write is refused.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppflux_lightning import cli  # noqa: E402  (before paddle: sets the MKL switch)
from ppflux_lightning.config import load_config  # noqa: E402
from ppflux_lightning.engine.ranges import check_ranges  # noqa: E402
from ppflux_lightning.engine.schema import DEFAULTS  # noqa: E402
from ppflux_lightning.toy.quickstart import QuickstartSettings  # noqa: E402
from ppflux_lightning.utils.atomic import check_output_dir, has_marker  # noqa: E402
from ppflux_lightning.utils.files import check_pipeline_folder  # noqa: E402

MARKER_KIND = "quickstart"


def parse_args(argv=None):
    d = QuickstartSettings()
    p = cli.parser(__doc__)
    p.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--model", default=d.model, help="toy pipeline folder; built when missing (default %(default)s)")
    p.add_argument("--config", default=d.config, help="training config (default configs/toy/full.yaml)")
    p.add_argument("--steps", type=int, help=f"student generator steps (default {d.steps})")
    p.add_argument("--train-images", type=int, help=f"rendered training images (default {d.train_images})")
    p.add_argument("--eval-prompts", type=int, help=f"evaluation prompts (default {d.eval_prompts})")
    p.add_argument("--features", default="", help="FID feature network folder (default <out>/task_features)")
    p.add_argument("--seed", type=int, default=d.seed, help="data and training seed")
    p.add_argument("--smoke", action="store_true", help="seconds-long end-to-end check (tiny schedule)")
    cli.add_overrides(p, "training config override, e.g. -o train.lr=5e-4 (-o a=1 b=2 or -o a=1 -o b=2)")
    return p.parse_args(argv)


def is_quickstart_output(path):
    return has_marker(path, MARKER_KIND) or os.path.isfile(os.path.join(path, "results.json"))


def check_args(args):
    """Every check before anything is rendered, trained or built."""
    if os.path.exists(args.model) or os.path.abspath(args.model) != os.path.abspath(QuickstartSettings().model):
        check_pipeline_folder(args.model)  # only the default toy model is built when missing
    cli.existing_file("--config", args.config)
    cfg = load_config(args.config, args.override, schema=DEFAULTS)
    check_ranges(cfg)
    cli.number("--steps", args.steps, min=1)
    cli.number("--train-images", args.train_images, min=1)
    cli.number("--eval-prompts", args.eval_prompts, min=1)
    cli.seed("--seed", args.seed)
    check_output_dir(args.out, True, is_quickstart_output, protect=[args.model, args.config], option="--out")


def _main(argv):
    args = parse_args(argv)
    check_args(args)
    from ppflux_lightning.toy.quickstart import run_quickstart, summary_line

    chosen = {"steps": args.steps, "train_images": args.train_images, "eval_prompts": args.eval_prompts}
    settings = (QuickstartSettings.smoke if args.smoke else QuickstartSettings)(
        out=args.out, model=args.model, config=args.config, features=args.features, seed=args.seed,
        overrides=tuple(args.override), **{k: v for k, v in chosen.items() if v is not None})
    with cli.output_folder(args.out, MARKER_KIND):
        result = run_quickstart(settings)
    print(summary_line(result))
    return 0


def main(argv=None):
    """Exit code 0, or 2 with one line on stderr for a user's mistake (see ppflux_lightning.cli)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

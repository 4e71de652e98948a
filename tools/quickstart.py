"""Quickstart: distill the committed toy FLUX teacher into a 4-step FLUX-Lightning student, evaluate it, report.

    python tools/quickstart.py [--out outputs/quickstart] [--steps N] [--model assets/toy/flux-toy] [--smoke]

Writes `<out>/report.md`, `<out>/grid.png` (teacher@50 | teacher@4 | student@4) and `<out>/results.json`: the toy
task's exact validity, adherence and coverage (`ppflux_lightning.toy.metrics`), FID-to-teacher and PSNR vs teacher@50.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ppflux_lightning  # noqa: E402,F401  (before paddle: sets the MKL switch)
from ppflux_lightning.toy.quickstart import QuickstartSettings, run_quickstart, summary_line  # noqa: E402
from ppflux_lightning.utils.errors import CheckpointError, ConfigError  # noqa: E402


def parse_args(argv=None):
    d = QuickstartSettings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--model", default=d.model, help="toy pipeline folder; built when missing (default %(default)s)")
    p.add_argument("--config", default=d.config, help="training config (default configs/toy/full.yaml)")
    p.add_argument("--steps", type=int, help=f"student generator steps (default {d.steps})")
    p.add_argument("--train-images", type=int, help=f"rendered training images (default {d.train_images})")
    p.add_argument("--eval-prompts", type=int, help=f"evaluation prompts (default {d.eval_prompts})")
    p.add_argument("--features", default="", help="FID feature network folder (default <out>/task_features)")
    p.add_argument("--seed", type=int, default=d.seed, help="data and training seed")
    p.add_argument("--smoke", action="store_true", help="seconds-long end-to-end check (tiny schedule)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override, e.g. -o train.lr=5e-4 (repeatable)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    chosen = {"steps": args.steps, "train_images": args.train_images, "eval_prompts": args.eval_prompts}
    settings = (QuickstartSettings.smoke if args.smoke else QuickstartSettings)(
        out=args.out, model=args.model, config=args.config, features=args.features, seed=args.seed,
        overrides=tuple(args.override), **{k: v for k, v in chosen.items() if v is not None})
    try:
        result = run_quickstart(settings)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_line(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

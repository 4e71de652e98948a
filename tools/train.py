"""Train a FLUX-Lightning LoRA: `python tools/train.py -c CONFIG [-o key=value ...] [-r latest|auto|PATH]`.

Multi-process: `python -m paddle.distributed.launch --nproc_per_node N tools/train.py -c CONFIG`.
`-o` takes both styles: `-o a=1 b=2` and `-o a=1 -o b=2`. A fresh run refuses an output folder that holds an
earlier run unless `--overwrite` is given; `-r latest` continues one (an error when there is none), `-r auto`
continues one when there is one.
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppflux_lightning import cli  # noqa: E402  (before paddle: sets the MKL switch)
from ppflux_lightning.config import load_config  # noqa: E402
from ppflux_lightning.engine.output_dir import prepare_output_dir, resolve_resume  # noqa: E402
from ppflux_lightning.engine.ranges import check_ranges  # noqa: E402
from ppflux_lightning.engine.schema import DEFAULTS, REQUIRED  # noqa: E402
from ppflux_lightning.utils.files import read_transformer_config  # noqa: E402


def parse_args(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("-c", "--config", required=True, help="YAML config (may use _BASE_)")
    cli.add_overrides(parser)
    parser.add_argument("-r", "--resume", default=None,
                        help="'latest' (the newest checkpoint; an error if none), 'auto' (latest if any) or a "
                             "checkpoint folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in train.output_dir")
    return parser.parse_args(argv)


def check_config(cfg, args):
    """Every check that needs no model: keys, ranges, input paths, the output folder. Runs before Paddle loads."""
    check_ranges(cfg)
    for key in REQUIRED:
        section, name = key.split(".")
        if cfg[section][name] in (None, ""):
            raise cli.UserError(f"config key {key!r} must be set (e.g. -o {key}=...)")
    cli.existing_dir("model.pretrained", cfg.model.pretrained)
    read_transformer_config(os.path.join(cfg.model.pretrained, "transformer"))
    if not os.path.exists(cfg.data.path):
        raise cli.UserError(f"data.path {cfg.data.path!r} not found")
    if args.resume not in (None, "latest", "auto"):
        cli.existing_dir("-r", args.resume)
    if args.resume and args.overwrite:
        raise cli.UserError("-r and --overwrite contradict each other: resume a run or replace it")
    prepare_output_dir(cfg.train.output_dir, args.resume, args.overwrite,
                       protect=[cfg.model.pretrained, cfg.data.path])
    if args.resume == "latest":
        resolve_resume(cfg.train.output_dir, "latest")  # nothing to resume is an error before anything loads


def _main(argv):
    args = parse_args(argv)
    cfg = load_config(args.config, args.override, schema=DEFAULTS)
    check_config(cfg, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from ppflux_lightning.engine.trainer import Trainer, TrainingDiverged, dump_config

    cli.quiet_launcher_stop()
    try:
        Trainer(cfg, resume=args.resume, config_text=dump_config(cfg)).train()
    except TrainingDiverged as e:
        raise cli.UserError(str(e)) from e
    return 0


def main(argv=None):
    """Exit code 0, or 2 with one line on stderr for a user's mistake (see ppflux_lightning.cli)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Train a FLUX-Lightning LoRA: `python tools/train.py -c CONFIG [-o key=value ...] [-r latest|PATH]`.

Multi-process: `python -m paddle.distributed.launch --nproc_per_node N tools/train.py -c CONFIG`.
"""

import argparse
import logging
import sys

import ppflux_lightning  # noqa: F401  (before paddle: sets the MKL switch)
from ppflux_lightning.config import load_config
from ppflux_lightning.engine.schema import DEFAULTS
from ppflux_lightning.engine.trainer import Trainer, TrainingDiverged, dump_config
from ppflux_lightning.utils.errors import CheckpointError, ConfigError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="YAML config (may use _BASE_)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. -o train.max_steps=10 (repeatable)")
    parser.add_argument("-r", "--resume", default=None, help="'latest' or a checkpoint folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cfg = load_config(args.config, args.override, schema=DEFAULTS)
        Trainer(cfg, resume=args.resume, config_text=dump_config(cfg)).train()
    except (ConfigError, CheckpointError, FileNotFoundError, TrainingDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

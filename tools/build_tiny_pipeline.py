"""Write a random tiny FLUX pipeline (diffusers layout, Paddle only) for demos and tests.

    python tools/build_tiny_pipeline.py --out outputs/tiny-flux [--seed 0] [--schnell] [--overwrite]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppflux_lightning import cli  # noqa: E402  (sets the MKL switch before paddle is imported)
from ppflux_lightning.utils.atomic import check_output_dir, has_marker  # noqa: E402


def _main(argv):
    parser = cli.parser(__doc__)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing tiny pipeline folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schnell", action="store_true", help="no guidance embedding (FLUX.1-schnell style)")
    args = parser.parse_args(argv)
    cli.seed("--seed", args.seed)
    check_output_dir(args.out, args.overwrite, lambda p: has_marker(p, "tiny_pipeline"), option="--out")
    from ppflux_lightning.pipelines import build_tiny_pipeline

    print(build_tiny_pipeline(args.out, seed=args.seed, guidance_embeds=not args.schnell, overwrite=args.overwrite))


def main(argv=None):
    """Exit code 0, or 2 with one line on stderr for a user's mistake (see ppflux_lightning.cli)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Write a random tiny FLUX pipeline (diffusers layout, Paddle only) for demos and tests.

    python tools/build_tiny_pipeline.py --out outputs/tiny-flux [--seed 0] [--schnell]
"""

import argparse

import ppflux_lightning  # noqa: F401  (sets the MKL switch before paddle is imported)
from ppflux_lightning.pipelines import build_tiny_pipeline


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (replaced whole)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schnell", action="store_true", help="no guidance embedding (FLUX.1-schnell style)")
    args = parser.parse_args(argv)
    print(build_tiny_pipeline(args.out, seed=args.seed, guidance_embeds=not args.schnell))


if __name__ == "__main__":
    main()

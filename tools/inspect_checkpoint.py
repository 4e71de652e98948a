"""Print the load plan of a FLUX transformer checkpoint without reading any tensor data (safetensors headers only).

    python tools/inspect_checkpoint.py PATH [--config CONFIG.json] [--dtype bfloat16] [--all] [--debug]

PATH: a diffusers `transformer/` folder (one file or shards with an index), a pipeline folder holding one, or a
Black Forest Labs single file (`flux1-dev.safetensors`, with or without `model.diffusion_model.`). Prints the layout,
the resolved config (config.json checked against the tensor shapes, missing keys inferred from them) and each
parameter's source tensor, row slice and transpose. A checkpoint that does not fit ends with `error: ...`, exit 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppflux_lightning import cli  # noqa: E402  (before paddle: sets the MKL switch)
from ppflux_lightning.utils.files import read_json_object  # noqa: E402


def _main(argv):
    parser = cli.parser(__doc__)
    parser.add_argument("path", help="transformer folder, pipeline folder or single safetensors file")
    parser.add_argument("--config", help="config.json to use instead of the folder's (e.g. RoPE axes of a BFL file)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="parameter dtype of the planned model")
    parser.add_argument("--all", action="store_true", help="list every parameter (default: the first 20)")
    args = parser.parse_args(argv)
    if not os.path.exists(args.path):
        raise FileNotFoundError(f"checkpoint not found: {args.path!r}")
    config = read_json_object(args.config, "--config") if args.config else None
    from ppflux_lightning.models import FluxTransformer2DModel

    plan = FluxTransformer2DModel.load_plan(args.path, config=config, dtype=args.dtype)
    print(plan.format(limit=None if args.all else 20))


def main(argv=None):
    """Exit code 0, or 2 with one line on stderr for a user's mistake (see ppflux_lightning.cli)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

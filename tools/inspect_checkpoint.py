"""Print the load plan of a FLUX transformer checkpoint without reading any tensor data (safetensors headers only).

    python tools/inspect_checkpoint.py PATH [--config CONFIG.json] [--dtype bfloat16] [--all] [--debug]

PATH: a diffusers `transformer/` folder (one file or shards with an index), a pipeline folder holding one, or a
Black Forest Labs single file (`flux1-dev.safetensors`, with or without `model.diffusion_model.`). Prints the layout,
the resolved config (config.json checked against the tensor shapes, missing keys inferred from them) and each
parameter's source tensor, row slice and transpose. A checkpoint that does not fit ends with `error: ...`, exit 2.
"""

import argparse
import json
import sys

import ppflux_lightning  # noqa: F401  (before paddle: sets the MKL switch)
from ppflux_lightning.models import FluxTransformer2DModel
from ppflux_lightning.utils.errors import CheckpointError, ConfigError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="transformer folder, pipeline folder or single safetensors file")
    parser.add_argument("--config", help="config.json to use instead of the folder's (e.g. RoPE axes of a BFL file)")
    parser.add_argument("--dtype", default="float32", help="parameter dtype of the planned model")
    parser.add_argument("--all", action="store_true", help="list every parameter (default: the first 20)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    try:
        config = None
        if args.config:
            with open(args.config) as f:
                config = json.load(f)
        plan = FluxTransformer2DModel.load_plan(args.path, config=config, dtype=args.dtype)
    except (CheckpointError, ConfigError, FileNotFoundError, json.JSONDecodeError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(plan.format(limit=None if args.all else 20))
    return 0


if __name__ == "__main__":
    sys.exit(main())

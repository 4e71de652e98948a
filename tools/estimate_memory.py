"""Estimate per-GPU training memory: `python tools/estimate_memory.py -c CONFIG [-o key=value ...]`.

Analytic (no model is built): weights, LoRA and discriminator parameters, gradients, optimizer states and the
activations of the graphs the recipe keeps alive, at the config's real shapes (see ppflux_lightning.engine.memory).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppflux_lightning import cli  # noqa: E402  (before paddle: sets the MKL switch)
from ppflux_lightning.config import load_config  # noqa: E402
from ppflux_lightning.engine.schema import DEFAULTS  # noqa: E402


def _main(argv):
    parser = cli.parser(__doc__)
    parser.add_argument("-c", "--config", required=True, help="YAML config (may use _BASE_)")
    cli.add_overrides(parser, "override a config key, e.g. -o model.gradient_checkpointing=false")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                        help="gpu: fused attention, dtype auto = bfloat16; cpu: this machine's attention, float32")
    parser.add_argument("--world_size", type=int, default=1, help="processes (adds the gradient all-reduce buffers)")
    parser.add_argument("--encoders", choices=("auto", "resident", "offloaded"), default="auto",
                        help="text encoders + VAE on the GPU: auto decides from data.type / validation")
    parser.add_argument("--lora_dtype", choices=("float32", "bfloat16"), default="float32",
                        help="adapter dtype: the trainer keeps fp32 adapters; bfloat16 = the reference's O2 cast")
    args = parser.parse_args(argv)
    cli.number("--world_size", args.world_size, min=1, integer=True)
    cli.existing_file("-c", args.config)
    cfg = load_config(args.config, args.override, schema=DEFAULTS)
    from ppflux_lightning.engine.memory import estimate, format_estimate

    encoders = {"auto": None, "resident": True, "offloaded": False}[args.encoders]
    est = estimate(cfg, device=args.device, world_size=args.world_size, encoders=encoders, lora_dtype=args.lora_dtype)
    print(format_estimate(est, title=f"# Memory per GPU: {args.config}"))


def main(argv=None):
    """Exit code 0, or 2 with one line on stderr for a user's mistake (see ppflux_lightning.cli)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Estimate per-GPU training memory: `python tools/estimate_memory.py -c CONFIG [-o key=value ...]`.

Analytic (no model is built): weights, LoRA and discriminator parameters, gradients, optimizer states and the
activations of the graphs the recipe keeps alive, at the config's real shapes (see ppflux_lightning.engine.memory).
"""

import argparse
import sys

import ppflux_lightning  # noqa: F401  (before paddle: sets the MKL switch)
from ppflux_lightning.config import load_config
from ppflux_lightning.engine.memory import estimate, format_estimate
from ppflux_lightning.engine.schema import DEFAULTS
from ppflux_lightning.utils.errors import ConfigError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="YAML config (may use _BASE_)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. -o model.gradient_checkpointing=false (repeatable)")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                        help="gpu: fused attention, dtype auto = bfloat16; cpu: this machine's attention, float32")
    parser.add_argument("--world_size", type=int, default=1, help="processes (adds the gradient all-reduce buffers)")
    parser.add_argument("--encoders", choices=("auto", "resident", "offloaded"), default="auto",
                        help="text encoders + VAE on the GPU: auto decides from data.type / validation")
    parser.add_argument("--lora_dtype", choices=("float32", "bfloat16"), default="float32",
                        help="adapter dtype: the trainer keeps fp32 adapters; bfloat16 = the reference's O2 cast")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for bad input")
    args = parser.parse_args(argv)
    try:
        if args.world_size < 1:
            raise ConfigError(f"--world_size must be >= 1, got {args.world_size}")
        cfg = load_config(args.config, args.override, schema=DEFAULTS)
        encoders = {"auto": None, "resident": True, "offloaded": False}[args.encoders]
        est = estimate(cfg, device=args.device, world_size=args.world_size, encoders=encoders,
                       lora_dtype=args.lora_dtype)
    except (ConfigError, FileNotFoundError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_estimate(est, title=f"# Memory per GPU: {args.config}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

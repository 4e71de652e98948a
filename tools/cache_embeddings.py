"""Precompute T5/CLIP prompt embeddings (and optionally VAE latents) of a dataset into safetensors shards.

    python tools/cache_embeddings.py -c configs/x.yaml [-o data.path=...] --out DIR [--with-latents]
    python tools/cache_embeddings.py --model FLUX_DIR --data-type laion --data-path LIST --out DIR [--resolution 1024]

Train on the result with `-o data.type=cached -o data.path=DIR`. An interrupted run continues where it stopped.
"""

import inspect
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ppflux_lightning import cli  # noqa: E402  (before paddle: sets the MKL switch)
from ppflux_lightning.config import load_config  # noqa: E402
from ppflux_lightning.engine.schema import DEFAULTS  # noqa: E402
from ppflux_lightning.utils.errors import ConfigError  # noqa: E402
from ppflux_lightning.utils.files import check_pipeline_folder  # noqa: E402

DATA_TYPES = ("laion", "folder", "jsonl")  # the image datasets (ppflux_lightning.data)
DTYPES = ("float32", "bfloat16")  # ppflux_lightning.data.cached.DTYPES


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("-c", "--config", help="training config (reads model.pretrained, data.*, train.seed)")
    cli.add_overrides(p, "key.path=value (-o a=1 b=2 or -o a=1 -o b=2)")
    p.add_argument("--model", help="diffusers-layout FLUX folder (overrides model.pretrained)")
    p.add_argument("--data-type", choices=DATA_TYPES)
    p.add_argument("--data-path", help="LAION file list, image folder or .jsonl file")
    p.add_argument("--resolution", type=int, help="square side, a multiple of 16 (default 1024)")
    p.add_argument("--caption-key", help="caption key in LAION caption JSON (default blip_caption_en)")
    p.add_argument("--max-sequence-length", type=int, help="T5 tokens (default 512)")
    p.add_argument("--with-latents", action="store_true", help="also cache VAE latents of the cropped images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--shard-size", type=int, default=64, help="samples per shard")
    p.add_argument("--batch-size", type=int, default=4, help="samples per encoder call")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="stored dtype (bfloat16 halves the disk)")
    p.add_argument("--model-dtype", default="float32", choices=("auto", "float32", "bfloat16"),
                   help="dtype of the encoders")
    return p.parse_args(argv)


def resolve(args):
    """-> (model dir, data section, max sequence length, seed) from the config and the flags (flags win)."""
    if args.config:
        cfg = load_config(args.config, args.override, schema=DEFAULTS)
        model, data = cfg.model.pretrained, dict(cfg.data)
        max_len, seed = cfg.model.max_sequence_length, cfg.train.seed
    else:
        if args.override:
            raise ConfigError("-o overrides need a config (-c)")
        model, data, max_len, seed = None, dict(DEFAULTS["data"]), 512, 0
    flags = {"type": args.data_type, "path": args.data_path, "resolution": args.resolution,
             "caption_key": args.caption_key}
    data.update({k: v for k, v in flags.items() if v is not None})
    model = args.model or model
    max_len = max_len if args.max_sequence_length is None else args.max_sequence_length
    if not model:
        raise ConfigError("no model folder: pass --model or set model.pretrained in the config")
    check_pipeline_folder(model, "--model" if args.model else "model.pretrained")
    if data["type"] == "cached":
        raise ConfigError("data.type 'cached' is already an embedding cache; give the image dataset instead")
    if not data.get("path"):
        raise ConfigError("no data: pass --data-path or set data.path in the config")
    if not os.path.exists(data["path"]):
        raise FileNotFoundError(f"data.path not found: {data['path']!r}")
    data["path"] = os.path.abspath(data["path"])
    cli.multiple_of("--resolution", data["resolution"], 16)
    cli.number("--max-sequence-length", max_len, min=1, max=512)
    cli.number("--shard-size", args.shard_size, min=1)
    cli.number("--batch-size", args.batch_size, min=1)
    cli.seed("train.seed", seed)
    from ppflux_lightning.data.cached import is_cache_folder
    from ppflux_lightning.utils.atomic import check_output_dir

    check_output_dir(args.out, True, is_cache_folder, protect=[model, data["path"]], option="--out")
    return os.path.abspath(model), data, max_len, seed


def _main(argv):
    args = parse_args(argv)
    model, data, max_len, seed = resolve(args)
    from ppflux_lightning.data import build_dataset
    from ppflux_lightning.data.cached import pipeline_encoder, write_cache
    from ppflux_lightning.pipelines import FluxPipeline
    from ppflux_lightning.utils.device import resolve_dtype

    dataset = build_dataset(data, seed=seed)
    kwargs = {"dtype": resolve_dtype(args.model_dtype, "--model-dtype")}
    if "load_transformer" in inspect.signature(FluxPipeline.from_pretrained).parameters:
        kwargs["load_transformer"] = False  # the cache needs only the text encoders and the VAE
    pipe = FluxPipeline.from_pretrained(model, **kwargs)
    source = {**data, "seed": seed}
    index = write_cache(pipeline_encoder(pipe, max_len), dataset, args.out, source, shard_size=args.shard_size,
                        batch_size=args.batch_size, dtype=args.dtype, with_latents=args.with_latents,
                        extra={"model": model, "max_sequence_length": max_len})
    print(f"cached {index['num_samples']} samples in {len(index['shards'])} shards to {args.out} "
          f"(skipped {index['skipped']} bad records)")


def main(argv=None):
    """Exit code 0, or 2 with one line on stderr for a user's mistake (see ppflux_lightning.cli)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Precompute T5/CLIP prompt embeddings (and optionally VAE latents) of a dataset into safetensors shards.

    python tools/cache_embeddings.py -c configs/x.yaml [-o data.path=...] --out DIR [--with-latents]
    python tools/cache_embeddings.py --model FLUX_DIR --data-type laion --data-path LIST --out DIR [--resolution 1024]

Train on the result with `-o data.type=cached -o data.path=DIR`. An interrupted run continues where it stopped.
"""

import argparse
import inspect
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ppflux_lightning  # noqa: E402,F401  (before paddle: sets the MKL switch)
from ppflux_lightning.config import load_config  # noqa: E402
from ppflux_lightning.data import DATA_DEFAULTS, DATASETS, build_dataset  # noqa: E402
from ppflux_lightning.data.cached import DTYPES, pipeline_encoder, write_cache  # noqa: E402
from ppflux_lightning.utils.errors import CheckpointError, ConfigError  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", help="training config (reads model.pretrained, data.*, train.seed)")
    p.add_argument("-o", "--override", action="append", default=[], help="key.path=value, repeatable")
    p.add_argument("--model", help="diffusers-layout FLUX folder (overrides model.pretrained)")
    p.add_argument("--data-type", choices=[n for n in DATASETS.names() if n != "cached"])
    p.add_argument("--data-path", help="LAION file list, image folder or .jsonl file")
    p.add_argument("--resolution", type=int, help="square side, a multiple of 16 (default 1024)")
    p.add_argument("--caption-key", help="caption key in LAION caption JSON (default blip_caption_en)")
    p.add_argument("--max-sequence-length", type=int, help="T5 tokens (default 512)")
    p.add_argument("--with-latents", action="store_true", help="also cache VAE latents of the cropped images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--shard-size", type=int, default=64, help="samples per shard")
    p.add_argument("--batch-size", type=int, default=4, help="samples per encoder call")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="stored dtype (bfloat16 halves the disk)")
    p.add_argument("--model-dtype", default="float32", help="dtype of the encoders (float32 | bfloat16)")
    return p.parse_args(argv)


def resolve(args):
    """-> (model dir, data section, max sequence length, seed) from the config and the flags (flags win)."""
    if args.config:
        from ppflux_lightning.engine.schema import DEFAULTS

        cfg = load_config(args.config, args.override, schema=DEFAULTS)
        model, data = cfg.model.pretrained, {k: cfg.data[k] for k in DATA_DEFAULTS if k in cfg.data}
        max_len, seed = cfg.model.max_sequence_length, cfg.train.seed
    else:
        if args.override:
            raise ConfigError("-o overrides need a config (-c)")
        model, data, max_len, seed = None, dict(DATA_DEFAULTS), 512, 0
    flags = {"type": args.data_type, "path": args.data_path, "resolution": args.resolution,
             "caption_key": args.caption_key}
    data.update({k: v for k, v in flags.items() if v is not None})
    model = args.model or model
    max_len = args.max_sequence_length or max_len
    if not model:
        raise ConfigError("no model folder: pass --model or set model.pretrained in the config")
    if not os.path.isdir(model):
        raise FileNotFoundError(f"model folder not found: {model!r}")
    if data["type"] == "cached":
        raise ConfigError("data.type 'cached' is already an embedding cache; give the image dataset instead")
    if data.get("path"):
        data["path"] = os.path.abspath(data["path"])
    return os.path.abspath(model), data, max_len, seed


def main(argv=None):
    args = parse_args(argv)
    model, data, max_len, seed = resolve(args)
    dataset = build_dataset(data, seed=seed)
    from ppflux_lightning.pipelines import FluxPipeline

    kwargs = {"dtype": args.model_dtype}
    if "load_transformer" in inspect.signature(FluxPipeline.from_pretrained).parameters:
        kwargs["load_transformer"] = False  # the cache needs only the text encoders and the VAE
    pipe = FluxPipeline.from_pretrained(model, **kwargs)
    source = {**data, "seed": seed}
    index = write_cache(pipeline_encoder(pipe, max_len), dataset, args.out, source, shard_size=args.shard_size,
                        batch_size=args.batch_size, dtype=args.dtype, with_latents=args.with_latents,
                        extra={"model": model, "max_sequence_length": max_len})
    print(f"cached {index['num_samples']} samples in {len(index['shards'])} shards to {args.out} "
          f"(skipped {index['skipped']} bad records)")


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")

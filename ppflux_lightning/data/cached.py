"""Precomputed text embeddings (and optionally VAE latents), so training need not hold T5-XXL in memory.

Layout of a cache folder (written by `tools/cache_embeddings.py`):
- `shard-00000.safetensors`, ...: for the j-th sample of a shard the tensors `{j}.prompt_embeds` `[L, D]` (T5),
  `{j}.pooled_prompt_embeds` `[P]` (CLIP) and, with latents, `{j}.latents` `[C, h, w]` (VAE posterior mode, already
  shifted and scaled); the metadata holds `captions` and source `indices` as JSON lists and the run `fingerprint`.
- `index.json`: the shards and their sample counts, the source dataset settings, the dtype, whether latents exist.
Shard k covers source records `[k*shard_size, (k+1)*shard_size)`; bad source records are left out and counted.
"""

import json
import os
import shutil

import numpy as np
from tqdm import tqdm

from ..utils.atomic import atomic_file, check_output_dir, has_marker, write_marker
from ..utils.errors import ConfigError, DataError
from ..utils.files import read_json_object
from ..utils.safetensors_io import SafetensorsFile, save_file
from .base import SkippingDataset
from .registry import DATASETS
from .transforms import BadRecord

INDEX_FILE = "index.json"
FORMAT = "ppflux_lightning.embedding_cache"
VERSION = 1
DTYPES = ("float32", "bfloat16")
MARKER_KIND = "embedding_cache"


def is_cache_folder(path):
    """A (possibly unfinished) embedding cache folder that `write_cache` may continue."""
    return has_marker(path, MARKER_KIND) or os.path.isfile(os.path.join(path, INDEX_FILE))


def shard_name(k):
    return f"shard-{k:05d}.safetensors"


def read_index(folder):
    """The parsed `index.json` of a cache folder; a missing or foreign folder raises one line naming it."""
    path = os.path.join(folder, INDEX_FILE)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"embedding cache folder not found: {folder!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder!r} has no {INDEX_FILE}: not a finished embedding cache")
    index = read_json_object(path, "embedding cache index")
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ConfigError(f"{path!r} is not a version-{VERSION} embedding cache index")
    return index


def write_cache(encode, dataset, out_dir, source, shard_size=64, batch_size=4, dtype="float32", with_latents=False,
                extra=None):
    """Encode every good record of `dataset` into shards under `out_dir` and write `index.json` last.

    `encode(captions, pixel_values or None) -> dict` returns numpy batches `prompt_embeds`, `pooled_prompt_embeds`
    and (when `with_latents`) `latents`. `source` is the dataset's config (stored so the images can be reloaded).
    A shard already on disk with the same fingerprint is kept, so an interrupted run continues where it stopped.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"cache dtype must be one of {DTYPES}, got {dtype!r}")
    if shard_size <= 0 or batch_size <= 0:
        raise ConfigError(f"shard_size and batch_size must be positive, got {shard_size!r}, {batch_size!r}")
    check_output_dir(out_dir, True, is_cache_folder, option="embedding cache folder")
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    write_marker(out_dir, MARKER_KIND)
    n = len(dataset)
    fingerprint = json.dumps({"source": source, "records": n, "dtype": dtype, "latents": with_latents,
                              "shard_size": shard_size, "extra": extra or {}}, sort_keys=True)
    shards, skipped = [], 0
    with tqdm(total=n, desc="caching embeddings", unit="sample") as bar:
        for k, begin in enumerate(range(0, n, shard_size)):
            indices = range(begin, min(begin + shard_size, n))
            path = os.path.join(out_dir, shard_name(k))
            done = _finished_shard(path, fingerprint)
            if done is None:
                done = _write_shard(encode, dataset, indices, path, fingerprint, batch_size, dtype, with_latents, bar)
            else:
                bar.update(len(indices))
            shards.append({"file": shard_name(k), "count": done["count"]})
            skipped += done["skipped"]
    if not sum(s["count"] for s in shards):
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise DataError(f"all {n} records of the source dataset are bad (see the warnings above): nothing cached "
                        f"in {out_dir!r}")
    index = {"format": FORMAT, "version": VERSION, "num_samples": sum(s["count"] for s in shards), "skipped": skipped,
             "shard_size": shard_size, "dtype": dtype, "has_latents": with_latents, "source": source,
             "shards": shards, **(extra or {})}
    with atomic_file(os.path.join(out_dir, INDEX_FILE)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1)
    return index


def _finished_shard(path, fingerprint):
    if not os.path.isfile(path):
        return None
    meta = SafetensorsFile(path).metadata
    if meta.get("fingerprint") != fingerprint:
        return None
    return {"count": len(json.loads(meta["indices"])), "skipped": int(meta["skipped"])}


def _write_shard(encode, dataset, indices, path, fingerprint, batch_size, dtype, with_latents, bar):
    samples = []
    for i in indices:
        sample = dataset.load_or_none(i)
        if sample is not None:
            samples.append(sample)
        bar.update(1)
    tensors = {}
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        pixels = np.stack([s["pixel_values"] for s in batch]) if with_latents else None
        out = encode([s["caption"] for s in batch], pixels)
        names = ["prompt_embeds", "pooled_prompt_embeds"] + (["latents"] if with_latents else [])
        for name in names:
            values = np.asarray(out[name], dtype=np.float32)
            if len(values) != len(batch):
                raise ValueError(f"encoder returned {len(values)} {name} rows for a batch of {len(batch)}")
            for j, row in enumerate(values):
                tensors[f"{start + j}.{name}"] = row
    metadata = {"captions": json.dumps([s["caption"] for s in samples]),
                "indices": json.dumps([int(s["index"]) for s in samples]),
                "skipped": str(len(indices) - len(samples)), "fingerprint": fingerprint}
    save_file(tensors, path, metadata=metadata, bf16_keys=set(tensors) if dtype == "bfloat16" else ())
    return {"count": len(samples), "skipped": len(indices) - len(samples)}


@DATASETS.register(name="cached")
class CachedDataset(SkippingDataset):
    """`path` is a cache folder. Samples: `{prompt_embeds, pooled_prompt_embeds, latents | pixel_values, caption,
    index, source_index, skipped}`. Without cached latents the images are reloaded from the recorded source dataset
    with the current resolution/crop/flip settings; with latents `resolution` must equal the cached one.
    """

    def __init__(self, path, resolution, center_crop=True, random_flip=False, caption_key=None, seed=0):
        super().__init__()
        self.root = path
        self.index = read_index(path)
        self.has_latents = self.index["has_latents"]
        source = dict(self.index["source"])
        if self.has_latents and resolution != source["resolution"]:
            raise ConfigError(f"data.resolution {resolution!r} differs from the cached latents' resolution "
                              f"{source['resolution']!r} in {path!r}")
        self.source = None
        if not self.has_latents:
            source.update(resolution=resolution, center_crop=center_crop, random_flip=random_flip, seed=seed)
            self.source = DATASETS.build(source)
        counts = [s["count"] for s in self.index["shards"]]
        if not sum(counts):
            raise DataError(f"embedding cache {path!r} holds no samples")
        self.shard_of = np.repeat(np.arange(len(counts)), counts)
        self.first = np.concatenate([[0], np.cumsum(counts)])[:-1]
        self._open = {}

    def __len__(self):
        return len(self.shard_of)

    def _shard(self, k):
        if k not in self._open:
            reader = SafetensorsFile(os.path.join(self.root, self.index["shards"][k]["file"]))
            self._open[k] = (reader, json.loads(reader.metadata["captions"]), json.loads(reader.metadata["indices"]))
        return self._open[k]

    def load(self, index):
        k = int(self.shard_of[index])
        j = index - int(self.first[k])
        reader, captions, sources = self._shard(k)
        sample = {"prompt_embeds": reader.get(f"{j}.prompt_embeds"),
                  "pooled_prompt_embeds": reader.get(f"{j}.pooled_prompt_embeds"),
                  "caption": captions[j], "source_index": sources[j]}
        if self.has_latents:
            sample["latents"] = reader.get(f"{j}.latents")
        else:
            image = self.source.load_or_none(sources[j])
            if image is None:
                raise BadRecord(f"source record {sources[j]} is no longer readable")
            sample["pixel_values"] = image["pixel_values"]
        return sample

    def __getstate__(self):  # open memory maps stay in the process that opened them
        state = dict(self.__dict__)
        state["_open"] = {}
        return state


def pipeline_encoder(pipe, max_sequence_length=512):
    """An `encode` callable for `write_cache` from a `FluxPipeline`: `encode_prompt`, and for pixels the VAE's
    posterior mean, normalised as the transformer sees it (`models.vae.encode`)."""
    import paddle

    from ..models import vae as vae_io

    @paddle.no_grad()
    def encode(captions, pixels):
        prompt_embeds, pooled = pipe.encode_prompt(list(captions), max_sequence_length=max_sequence_length)[:2]
        out = {"prompt_embeds": prompt_embeds.astype("float32").numpy(),
               "pooled_prompt_embeds": pooled.astype("float32").numpy()}
        if pixels is not None:
            out["latents"] = vae_io.encode(pipe.vae, paddle.to_tensor(pixels)).astype("float32").numpy()
        return out

    return encode

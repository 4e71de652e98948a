"""Datasets on tiny generated data, bad-record skipping, the distributed sampler and the embedding cache."""

import base64
import io
import json
import os

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image
from script_loader import load_script

from ppflux_lightning.data import (
    DATASETS,
    CachedDataset,
    FolderDataset,
    GlobalBatchSampler,
    ImageTransform,
    JsonlDataset,
    LaionDataset,
    build_dataset,
)
from ppflux_lightning.data.cached import read_index, write_cache
from ppflux_lightning.data.laion import cached_line_offsets, line_offsets
from ppflux_lightning.utils.errors import ConfigError

RES = 16


@pytest.fixture(autouse=True)
def offsets_cache(tmp_path, monkeypatch):
    """Keep LAION line indexes out of the home folder."""
    monkeypatch.setenv("PPFLUX_CACHE", str(tmp_path / "ppflux_cache"))
    return tmp_path / "ppflux_cache" / "laion_offsets"


def random_image(seed, w=24, h=20):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def expected_pixels(image, res=RES):
    """Hand-computed reference: Lanczos resize of the shorter side, centre crop, x/127.5 - 1, HWC -> CHW."""
    w, h = image.size
    s = res / min(w, h)
    nw, nh = max(res, round(w * s)), max(res, round(h * s))
    arr = np.asarray(image.resize((nw, nh), Image.LANCZOS), dtype=np.float32)
    top, left = (nh - res) // 2, (nw - res) // 2
    return (arr[top:top + res, left:left + res] / 127.5 - 1.0).transpose(2, 0, 1)


def png_bytes(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- transforms


def test_transform_center_crop_exact_without_resize():
    image = random_image(0, w=48, h=32)
    out = ImageTransform(32)(image)
    ref = np.asarray(image, dtype=np.float32)[:, 8:40] / 127.5 - 1.0
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    np.testing.assert_array_equal(out, ref.transpose(2, 0, 1))
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_transform_resize_and_random_crop_are_seeded():
    image = random_image(1, w=40, h=25)
    np.testing.assert_allclose(ImageTransform(RES)(image), expected_pixels(image), atol=1e-6)
    crop = ImageTransform(RES, center_crop=False, seed=3)
    a, b = crop(image, index=5), crop(image, index=5)
    np.testing.assert_array_equal(a, b)
    crops = {crop(image, index=i).tobytes() for i in range(12)}
    assert len(crops) > 1  # offsets vary with the sample index
    flipped = ImageTransform(RES, random_flip=True, seed=0)
    outs = [flipped(image, index=i) for i in range(16)]
    plain = ImageTransform(RES)(image)
    assert any(np.array_equal(o, plain[:, :, ::-1]) for o in outs) and any(np.array_equal(o, plain) for o in outs)


@pytest.mark.parametrize("bad", [0, 24, 1000, -16, 32.0, "64", True])
def test_resolution_must_be_positive_multiple_of_16(bad):
    with pytest.raises(ConfigError, match=f"multiple of 16, got {bad!r}"):
        ImageTransform(bad)


# ----------------------------------------------------------------------------------------------- folder


def make_folder(root):
    """5 images: 0, 2, 4 good; 1 has no caption file; 3 is a corrupt PNG."""
    os.makedirs(os.path.join(root, "sub"), exist_ok=True)
    images = {}
    for i in range(5):
        name = f"sub/img{i}.png" if i == 4 else f"img{i}.png"
        path = os.path.join(root, name)
        if i == 3:
            with open(path, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\nthis is not a png")
        else:
            images[i] = random_image(10 + i)
            images[i].save(path)
        if i != 1:
            with open(os.path.splitext(path)[0] + ".txt", "w") as f:
                f.write(f" caption {i}\n")
    return images


def test_folder_dataset_samples_and_bad_records(tmp_path):
    images = make_folder(str(tmp_path))
    ds = FolderDataset(str(tmp_path), RES)
    assert len(ds) == 5 and ds.images[-1] == os.path.join("sub", "img4.png")
    s0 = ds[0]
    assert s0["caption"] == "caption 0" and s0["index"] == 0 and s0["skipped"] == 0
    np.testing.assert_allclose(s0["pixel_values"], expected_pixels(images[0]), atol=1e-6)
    s1 = ds[1]  # no caption -> the next good record, 2
    assert s1["index"] == 2 and s1["skipped"] == 1 and s1["caption"] == "caption 2"
    s3 = ds[3]  # corrupt image -> 4
    assert s3["index"] == 4 and s3["caption"] == "caption 4"
    assert ds.bad_indices == {1, 3} and ds.num_skipped == 2
    ds[1]  # a known bad record is not counted twice
    assert ds.num_skipped == 2


def test_all_bad_records_raise_instead_of_looping(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")  # no caption
    with pytest.raises(RuntimeError, match="all 1 records of the .* are bad"):
        FolderDataset(str(tmp_path), RES)[0]


# ----------------------------------------------------------------------------------------------- jsonl


def test_jsonl_dataset(tmp_path):
    (tmp_path / "imgs").mkdir()
    images = [random_image(20 + i) for i in range(2)]
    for i, im in enumerate(images):
        im.save(tmp_path / "imgs" / f"{i}.png")
    lines = [json.dumps({"image": "imgs/0.png", "caption": "zero"}),
             "{not json",
             json.dumps({"image": "imgs/missing.png", "caption": "gone"}),
             "",
             json.dumps({"image": "imgs/1.png"}),
             json.dumps({"image": str(tmp_path / "imgs" / "1.png"), "caption": "one"})]
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    ds = JsonlDataset(str(tmp_path / "data.jsonl"), RES)
    assert len(ds) == 5
    got = [ds[i] for i in range(len(ds))]
    assert [g["index"] for g in got] == [0, 4, 4, 4, 4]
    assert got[1]["caption"] == "one" and ds.num_skipped == 3
    np.testing.assert_allclose(got[0]["pixel_values"], expected_pixels(images[0]), atol=1e-6)
    np.testing.assert_allclose(got[4]["pixel_values"], expected_pixels(images[1]), atol=1e-6)


# ----------------------------------------------------------------------------------------------- LAION


def laion_line(caption_json, image_field, fields=7):
    parts = ["id", "url", caption_json, "1", "meta", image_field, "extra"]
    return "\t".join(parts[:fields])


def make_laion(root):
    """A file list with two part files (one relative, one absolute path); 4 good records and 5 bad ones."""
    os.makedirs(os.path.join(root, "parts"), exist_ok=True)
    images = [random_image(30 + i, w=20 + 4 * i, h=18) for i in range(4)]
    b64 = [base64.b64encode(png_bytes(im)).decode() for im in images]
    part_a = [laion_line(json.dumps({"blip_caption_en": "a cat", "caption_en": "x"}), b64[0]),
              laion_line(json.dumps({"caption_en": "no blip"}), b64[1]),  # missing key
              laion_line(json.dumps({"blip_caption_en": "a dog"}), "!!!not base64!!!"),
              laion_line("{'blip_caption_en': 'python literal'}", b64[1]),
              laion_line(json.dumps({"blip_caption_en": "short"}), b64[2], fields=5)]  # too few fields
    part_b = [laion_line(json.dumps({"blip_caption_en": "corrupt"}), base64.b64encode(b"\x89PNG junk").decode()),
              laion_line(json.dumps({"blip_caption_en": "a bird"}), b64[2]),
              laion_line("not json at all", b64[3]),
              laion_line(json.dumps({"blip_caption_en": "a fish"}), b64[3])]
    with open(os.path.join(root, "parts", "a.txt"), "w") as f:
        f.write("\n".join(part_a) + "\n\n")
    with open(os.path.join(root, "parts", "b.txt"), "w") as f:
        f.write("\n".join(part_b))  # no trailing newline
    with open(os.path.join(root, "filelist.txt"), "w") as f:
        f.write("parts/a.txt\n\n# a comment\n" + os.path.join(root, "parts", "b.txt") + "\n")
    return images


def test_laion_dataset_fields_and_skips(tmp_path):
    images = make_laion(str(tmp_path))
    ds = LaionDataset(str(tmp_path / "filelist.txt"), RES)
    assert len(ds) == 9
    got = [ds[i] for i in range(9)]
    assert [g["index"] for g in got] == [0, 3, 3, 3, 6, 6, 6, 8, 8]
    assert [got[i]["caption"] for i in (0, 1, 4, 7)] == ["a cat", "python literal", "a bird", "a fish"]
    assert ds.bad_indices == {1, 2, 4, 5, 7}
    assert sum(g["skipped"] for g in got) == 5
    for i, im in zip((0, 1, 4, 7), (images[0], images[1], images[2], images[3])):
        np.testing.assert_allclose(got[i]["pixel_values"], expected_pixels(im), atol=1e-6)


def test_line_offsets_across_chunks_and_cached(tmp_path, offsets_cache):
    text = b"ab\n\ncdef\nghijklmnop\n\n\nq"
    path = tmp_path / "f.txt"
    path.write_bytes(text)
    starts, pos = [], 0
    for line in text.split(b"\n"):  # reference: offsets of the non-empty lines
        if line:
            starts.append(pos)
        pos += len(line) + 1
    for chunk in (1, 2, 3, 7, 100):
        assert line_offsets(str(path), chunk=chunk) == starts
    assert cached_line_offsets(str(path)).tolist() == starts
    assert len(os.listdir(offsets_cache)) == 1
    path.write_bytes(text + b"\nxyz\n")  # a changed file is indexed again
    assert cached_line_offsets(str(path)).tolist() == starts + [len(text) + 1]
    assert len(os.listdir(offsets_cache)) == 2


def test_laion_other_caption_key(tmp_path):
    make_laion(str(tmp_path))
    ds = LaionDataset(str(tmp_path / "filelist.txt"), RES, caption_key="caption_en")
    assert ds[0]["caption"] == "x" and ds[1]["caption"] == "no blip"


def test_missing_paths_raise_one_line_naming_them(tmp_path):
    gone = str(tmp_path / "nowhere")
    for kind in ("laion", "folder", "jsonl", "cached"):
        with pytest.raises(FileNotFoundError, match="nowhere") as info:
            build_dataset({"type": kind, "path": gone, "resolution": RES})
        assert "\n" not in str(info.value)
    (tmp_path / "list.txt").write_text("parts/missing.txt\n")
    with pytest.raises(FileNotFoundError, match="parts/missing.txt"):
        LaionDataset(str(tmp_path / "list.txt"), RES)
    with pytest.raises(FileNotFoundError, match="data.path"):
        build_dataset({"type": "folder", "path": None, "resolution": RES})


def test_build_dataset_from_config(tmp_path):
    make_folder(str(tmp_path))
    cfg = {"type": "folder", "path": str(tmp_path), "resolution": RES, "center_crop": False, "random_flip": True,
           "caption_key": "blip_caption_en"}
    ds = build_dataset(cfg, seed=4)
    assert isinstance(ds, FolderDataset) and ds.transform.seed == 4 and not ds.transform.center_crop
    assert DATASETS.names() == ["cached", "folder", "jsonl", "laion"]
    with pytest.raises(ConfigError, match="'folderr'.*did you mean 'folder'"):
        build_dataset({**cfg, "type": "folderr"})
    with pytest.raises(ConfigError, match="multiple of 16, got 20"):
        build_dataset({**cfg, "resolution": 20})


# ----------------------------------------------------------------------------------------------- sampler


def test_sampler_ranks_disjoint_and_world_size_invariant():
    n, b, world = 37, 3, 4
    single = list(GlobalBatchSampler(n, b * world, seed=5))
    ranks = [list(GlobalBatchSampler(n, b, world_size=world, rank=r, seed=5)) for r in range(world)]
    assert len(single) == n // (b * world) == len(ranks[0])
    for step, global_batch in enumerate(single):
        parts = [ranks[r][step] for r in range(world)]
        assert sum(parts, []) == global_batch  # rank r holds positions [r*b, (r+1)*b) of the global batch
        assert len(set(sum(parts, []))) == b * world  # disjoint
    seen = sum(single, [])
    assert len(set(seen)) == len(seen) and set(seen) <= set(range(n))


def test_sampler_deterministic_from_seed_and_epoch():
    s = GlobalBatchSampler(50, 5, seed=1)
    e0 = list(s)
    assert list(GlobalBatchSampler(50, 5, seed=1)) == e0
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0 and sorted(sum(e1, [])) == list(range(50))
    s.set_epoch(1, start_step=7)
    assert list(s) == e1[7:] and len(s) == 3
    assert list(GlobalBatchSampler(50, 5, seed=2)) != e0
    assert list(GlobalBatchSampler(6, 2, shuffle=False)) == [[0, 1], [2, 3], [4, 5]]


def test_sampler_padding_and_errors():
    s = GlobalBatchSampler(7, 2, world_size=2, rank=1, shuffle=False, drop_last=False)
    assert list(s) == [[2, 3], [6, 0]]  # the last global batch [4, 5, 6] is padded with 0 from the start
    with pytest.raises(ConfigError, match="rank 2"):
        GlobalBatchSampler(10, 1, world_size=2, rank=2)
    with pytest.raises(ConfigError, match="cannot fill one global batch"):
        GlobalBatchSampler(3, 2, world_size=2)
    with pytest.raises(ConfigError, match="empty"):
        GlobalBatchSampler(0, 1)


def test_sampler_drives_paddle_dataloader(tmp_path):
    make_folder(str(tmp_path))
    ds = FolderDataset(str(tmp_path), RES)
    sampler = GlobalBatchSampler(len(ds), 2, seed=0)
    batches = list(paddle.io.DataLoader(ds, batch_sampler=sampler, num_workers=0))
    assert len(batches) == 2
    assert batches[0]["pixel_values"].shape == [2, 3, RES, RES] and len(batches[0]["caption"]) == 2
    order = sum(list(sampler), [])
    assert [int(i) for b in batches for i in b["index"].numpy()] == [i if i in (0, 2, 4) else i + 1 for i in order]


# ----------------------------------------------------------------------------------------------- embedding cache


class FakeEncoder:
    """A hand-checkable stand-in for the text encoders and VAE: values are functions of the caption and pixels."""

    def __init__(self):
        self.calls = 0

    def __call__(self, captions, pixels):
        self.calls += 1
        lens = np.array([len(c) for c in captions], dtype=np.float32)
        out = {"prompt_embeds": lens[:, None, None] + np.arange(6, dtype=np.float32).reshape(1, 3, 2) / 7,
               "pooled_prompt_embeds": -lens[:, None] * np.ones((1, 4), np.float32)}
        if pixels is not None:
            out["latents"] = pixels[:, :, ::8, ::8] * 0.5
        return out


def test_cache_round_trip_with_latents_and_resume(tmp_path):
    images = make_folder(str(tmp_path / "imgs"))
    source = {"type": "folder", "path": str(tmp_path / "imgs"), "resolution": RES, "center_crop": True,
              "random_flip": False, "caption_key": "blip_caption_en", "seed": 0}
    out = str(tmp_path / "cache")
    enc = FakeEncoder()
    index = write_cache(enc, DATASETS.build(source), out, source, shard_size=2, batch_size=2, with_latents=True)
    assert index["num_samples"] == 3 and index["skipped"] == 2 and len(index["shards"]) == 3
    assert read_index(out) == index
    ds = CachedDataset(out, RES)
    assert len(ds) == 3
    for i, (src, im) in enumerate(zip((0, 2, 4), (images[0], images[2], images[4]))):
        s = ds[i]
        caption = f"caption {src}"
        assert s["caption"] == caption and s["source_index"] == src and s["index"] == i
        ref = np.float32(len(caption)) + np.arange(6, dtype=np.float32).reshape(3, 2) / 7
        np.testing.assert_array_equal(s["prompt_embeds"], ref)
        np.testing.assert_array_equal(s["pooled_prompt_embeds"], -len(caption) * np.ones(4, np.float32))
        np.testing.assert_allclose(s["latents"], expected_pixels(im)[:, ::8, ::8] * 0.5, atol=1e-6)
    with pytest.raises(ConfigError, match="differs from the cached latents' resolution 16"):
        CachedDataset(out, 32)
    # a rerun keeps finished shards: the encoder is not called again
    calls = enc.calls
    os.remove(os.path.join(out, "index.json"))
    again = write_cache(enc, DATASETS.build(source), out, source, shard_size=2, batch_size=2, with_latents=True)
    assert enc.calls == calls and again == index


def test_cache_without_latents_reloads_images_and_bf16(tmp_path):
    images = make_folder(str(tmp_path / "imgs"))
    source = {"type": "folder", "path": str(tmp_path / "imgs"), "resolution": RES, "center_crop": True,
              "random_flip": False, "caption_key": "blip_caption_en", "seed": 0}
    out = str(tmp_path / "cache")
    write_cache(FakeEncoder(), DATASETS.build(source), out, source, shard_size=8, dtype="bfloat16")
    ds = build_dataset({"type": "cached", "path": out, "resolution": 32})
    s = ds[1]
    assert "latents" not in s and s["pixel_values"].shape == (3, 32, 32)
    np.testing.assert_allclose(s["pixel_values"], expected_pixels(images[2], 32), atol=1e-6)
    ref = len("caption 2") + np.arange(6).reshape(3, 2) / 7
    np.testing.assert_allclose(s["prompt_embeds"], ref, rtol=2 ** -8)  # bf16 keeps 8 significant bits
    assert not np.array_equal(s["prompt_embeds"], ref.astype(np.float32))
    with pytest.raises(ConfigError, match="cache dtype"):
        write_cache(FakeEncoder(), DATASETS.build(source), out, source, dtype="float16")


def load_tool():
    return load_script("tools/cache_embeddings.py")


def test_cache_embeddings_tool_round_trip_on_tiny_pipeline(tmp_path):
    from ppflux_lightning.models import vae as vae_io
    from ppflux_lightning.pipelines import FluxPipeline, build_tiny_pipeline

    tool = load_tool()
    model = build_tiny_pipeline(str(tmp_path / "pipe"), seed=0)
    images = make_folder(str(tmp_path / "imgs"))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"pretrained": model, "max_sequence_length": 8},
                                   "data": {"type": "folder", "path": "unset", "resolution": RES}}))
    out = str(tmp_path / "cache")
    tool.main(["-c", str(cfg), "-o", f"data.path={tmp_path / 'imgs'}", "--out", out, "--with-latents",
               "--shard-size", "2", "--batch-size", "2"])
    ds = build_dataset({"type": "cached", "path": out, "resolution": RES})
    assert len(ds) == 3 and ds.index["skipped"] == 2 and ds.index["max_sequence_length"] == 8

    pipe = FluxPipeline.from_pretrained(model)
    captions = [f"caption {i}" for i in (0, 2, 4)]
    embeds, pooled, _ = pipe.encode_prompt(captions, max_sequence_length=8)
    pixels = np.stack([expected_pixels(images[i]) for i in (0, 2, 4)])
    latents = vae_io.encode(pipe.vae, paddle.to_tensor(pixels)).numpy()
    for j in range(3):
        s = ds[j]
        assert s["caption"] == captions[j]
        np.testing.assert_allclose(s["prompt_embeds"], embeds[j].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s["pooled_prompt_embeds"], pooled[j].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s["latents"], latents[j], rtol=1e-4, atol=1e-5)
    assert ds[0]["latents"].shape == (4, RES // 2, RES // 2)  # tiny VAE: 4 channels, scale factor 2

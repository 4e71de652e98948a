"""The Paddle FluxPipeline against diffusers 0.31's FluxPipeline on identical tiny random weights."""

import json
import os
import shutil

import numpy as np
import paddle
import pytest
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL
from diffusers import FluxPipeline as TorchFluxPipeline
from PIL import Image
from script_loader import load_script
from tiny_reference import cached_reference

from ppflux_lightning.models import vae as vae_io
from ppflux_lightning.pipelines import (
    FluxPipeline,
    build_tiny_pipeline,
    latent_image_ids,
    make_latents,
    pack_latents,
    unpack_latents,
)
from ppflux_lightning.utils.errors import ConfigError

# name -> (height, width, prompts, images per prompt): non-square sizes, batch 2 and batch 4
CASES = {
    "dev": (32, 48, ["a red cat on a wooden chair"], 2),
    "schnell": (64, 32, ["an astronaut riding a horse", "a bee"], 2),
}
MAX_LEN = 24


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    folder, ref = cached_reference(tmp_path_factory, request.param)
    pipe = FluxPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return request.param, folder, ref, pipe


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def case_latents(name, pipe, seed=3):
    height, width, prompts, n = CASES[name]
    channels = pipe.transformer.config.in_channels // 4
    vsf = pipe.vae_scale_factor
    return make_latents(seed, len(prompts) * n, channels, height // vsf, width // vsf)


def test_encode_prompt_matches_diffusers(case):
    name, _, ref, pipe = case
    prompts = CASES[name][2]
    embeds, pooled, text_ids = pipe.encode_prompt(prompts, max_sequence_length=MAX_LEN)
    with torch.no_grad():
        ref_embeds, ref_pooled, ref_ids = ref.encode_prompt(prompts, prompt_2=None, max_sequence_length=MAX_LEN)
    assert rel(embeds.numpy(), ref_embeds.numpy()) < 1e-4
    assert rel(pooled.numpy(), ref_pooled.numpy()) < 1e-4
    np.testing.assert_array_equal(text_ids.numpy(), ref_ids.numpy())


def test_four_step_image_matches_diffusers(case):
    name, _, ref, pipe = case
    height, width, prompts, n = CASES[name]
    latents = case_latents(name, pipe)
    kwargs = dict(height=height, width=width, num_images_per_prompt=n, max_sequence_length=MAX_LEN,
                  output_type="np", num_inference_steps=4, guidance_scale=3.5)
    images = pipe(prompts, latents=latents, **kwargs).images
    with torch.no_grad():
        ref_images = ref(prompts, latents=torch.from_numpy(latents), **kwargs).images
    assert images.shape == (len(prompts) * n, height, width, 3) and images.dtype == np.float32
    assert images.std() > 0.01  # not a constant image
    np.testing.assert_allclose(images, ref_images, rtol=0, atol=2e-3)


def test_vae_matches_diffusers(case):
    _, folder, ref, pipe = case
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (2, 3, 16, 24)).astype(np.float32)
    latents = vae_io.encode(pipe.vae, paddle.to_tensor(image))
    cfg = ref.vae.config
    with torch.no_grad():
        mean = ref.vae.encode(torch.from_numpy(image)).latent_dist.mode()
        ref_latents = (mean - cfg.shift_factor) * cfg.scaling_factor
        ref_decoded = ref.vae.decode(ref_latents / cfg.scaling_factor + cfg.shift_factor).sample
    assert rel(latents.numpy(), ref_latents.numpy()) < 1e-4
    decoded = vae_io.decode(pipe.vae, paddle.to_tensor(ref_latents.numpy()))
    assert rel(decoded.numpy(), ref_decoded.numpy()) < 1e-4
    assert pipe.vae_scale_factor == 2 ** (len(cfg.block_out_channels) - 1)


def test_vae_save_loads_in_diffusers(case, tmp_path):
    _, _, ref, pipe = case
    vae_io.save_vae(pipe.vae, str(tmp_path / "vae"))
    reloaded = TorchAutoencoderKL.from_pretrained(str(tmp_path / "vae")).eval()
    z = torch.from_numpy(np.random.default_rng(1).standard_normal((1, ref.vae.config.latent_channels, 4, 6),
                                                                  dtype=np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(reloaded.decode(z).sample.numpy(), ref.vae.decode(z).sample.numpy(), atol=1e-5)


def test_packing_and_ids_match_diffusers():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 6, 8)).astype(np.float32)
    packed = TorchFluxPipeline._pack_latents(torch.from_numpy(x), 2, 4, 6, 8)
    np.testing.assert_array_equal(pack_latents(paddle.to_tensor(x)).numpy(), packed.numpy())
    # diffusers 0.31's vae_scale_factor counts the 2x2 packing: a 6x8 latent grid is a 24x32 image at its factor 8
    unpacked = TorchFluxPipeline._unpack_latents(packed, 24, 32, 8)
    np.testing.assert_array_equal(unpack_latents(paddle.to_tensor(packed.numpy()), 6, 8).numpy(), unpacked.numpy())
    ids = TorchFluxPipeline._prepare_latent_image_ids(2, 6, 8, "cpu", torch.float32)
    np.testing.assert_array_equal(latent_image_ids(6, 8).numpy(), ids.numpy())


def test_make_latents_is_seeded_packed_noise():
    a = make_latents(7, 2, 4, 6, 8)
    assert a.shape == (2, 12, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, make_latents(7, 2, 4, 6, 8))
    noise = np.random.default_rng(7).standard_normal((2, 4, 6, 8), dtype=np.float32)
    # token (r, c) holds channel-major 2x2 patches: [ch0 (0,0), ch0 (0,1), ch0 (1,0), ch0 (1,1), ch1 (0,0), ...]
    np.testing.assert_array_equal(a[1, 1 * 4 + 2, :4], noise[1, 0, 2:4, 4:6].reshape(-1))
    assert not np.array_equal(a, make_latents(8, 2, 4, 6, 8))


def test_output_types_seed_and_embeds(case):
    name, _, _, pipe = case
    height, width, prompts, _ = CASES[name]
    kwargs = dict(height=height, width=width, max_sequence_length=MAX_LEN, num_inference_steps=2)
    images = pipe(prompts, seed=5, output_type="np", **kwargs).images
    np.testing.assert_array_equal(images, pipe(prompts, seed=5, output_type="np", **kwargs).images)
    embeds, pooled, _ = pipe.encode_prompt(prompts, max_sequence_length=MAX_LEN)
    from_embeds = pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, seed=5, output_type="np", **kwargs).images
    np.testing.assert_allclose(from_embeds, images, atol=1e-6)
    pil = pipe(prompts, seed=5, **kwargs).images
    assert isinstance(pil[0], Image.Image) and pil[0].size == (width, height)
    np.testing.assert_array_equal(np.asarray(pil[0]), (images[0] * 255).round().astype(np.uint8))
    latents = pipe(prompts, seed=5, output_type="latent", **kwargs).images
    assert list(latents.shape) == [len(prompts), *case_latents(name, pipe).shape[1:]]


class RecordingPolicy:
    """A cache policy that runs every block and records the hooks the pipeline calls."""

    def __init__(self):
        self.calls = []

    def begin(self, num_steps):
        self.calls.append(("begin", num_steps))

    def set_step(self, i):
        self.calls.append(("step", i))

    def run(self, model, hidden, context, temb, rope):
        self.calls.append(("run",))
        return model.run_blocks(hidden, context, temb, rope)


def test_cache_policy_hooks(case):
    name, _, _, pipe = case
    height, width, prompts, _ = CASES[name]
    kwargs = dict(height=height, width=width, max_sequence_length=MAX_LEN, num_inference_steps=3, seed=1,
                  output_type="np")
    plain = pipe(prompts, **kwargs).images
    policy = RecordingPolicy()
    pipe.transformer.cache_policy = policy
    try:
        cached = pipe(prompts, **kwargs).images
    finally:
        pipe.transformer.cache_policy = None
    assert policy.calls == [("begin", 3)] + [c for i in range(3) for c in (("step", i), ("run",))]
    np.testing.assert_array_equal(cached, plain)


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    folder, ref = cached_reference(tmp_path_factory, "dev")
    pipe = FluxPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return "dev", folder, ref, pipe


def test_save_pretrained_loads_in_diffusers(dev, tmp_path):
    name, _, _, pipe = dev
    height, width, prompts, n = CASES[name]
    out = str(tmp_path / "saved")
    pipe.save_pretrained(out, max_shard_bytes=250_000)  # few shards: accelerate runs gc.collect() per shard
    assert os.path.isfile(os.path.join(out, "transformer", "diffusion_pytorch_model.safetensors.index.json"))
    latents = case_latents(name, pipe)
    kwargs = dict(height=height, width=width, num_images_per_prompt=n, max_sequence_length=MAX_LEN,
                  output_type="np", num_inference_steps=4)
    images = pipe(prompts, latents=latents, **kwargs).images
    theirs = TorchFluxPipeline.from_pretrained(out)
    theirs.set_progress_bar_config(disable=True)
    with torch.no_grad():
        ref_images = theirs(prompts, latents=torch.from_numpy(latents), **kwargs).images
    np.testing.assert_allclose(images, ref_images, rtol=0, atol=2e-3)
    again = FluxPipeline.from_pretrained(out)
    again.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(again(prompts, latents=latents, **kwargs).images, images, atol=1e-6)


def test_tiny_pipeline_loads_here_and_in_diffusers(tmp_path):
    out = build_tiny_pipeline(str(tmp_path / "tiny"), seed=0)
    pipe = FluxPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.transformer.config.guidance_embeds
    latents = make_latents(0, 1, pipe.transformer.config.in_channels // 4, 32 // pipe.vae_scale_factor,
                           16 // pipe.vae_scale_factor)
    kwargs = dict(height=32, width=16, max_sequence_length=16, output_type="np")
    images = pipe("a red cat", latents=latents, **kwargs).images
    theirs = TorchFluxPipeline.from_pretrained(out)
    theirs.set_progress_bar_config(disable=True)
    with torch.no_grad():
        ref_images = theirs("a red cat", latents=torch.from_numpy(latents), num_inference_steps=4, **kwargs).images
    np.testing.assert_allclose(images, ref_images, rtol=0, atol=2e-3)
    schnell = build_tiny_pipeline(str(tmp_path / "tiny-schnell"), seed=0, guidance_embeds=False)
    with open(os.path.join(schnell, "transformer", "config.json")) as f:
        assert json.load(f)["guidance_embeds"] is False
    again = build_tiny_pipeline(str(tmp_path / "tiny-again"), seed=0)
    other = build_tiny_pipeline(str(tmp_path / "tiny-seed1"), seed=1)
    for sub in ("transformer/diffusion_pytorch_model.safetensors", "text_encoder_2/model.safetensors",
                "vae/diffusion_pytorch_model.safetensors"):
        def read(folder, sub=sub):
            with open(os.path.join(folder, sub), "rb") as f:
                return f.read()

        assert read(again) == read(out) != read(other), sub  # same seed, same weights


def test_infer_tool_writes_a_grid(tmp_path):

    model = build_tiny_pipeline(str(tmp_path / "tiny"), seed=1)
    infer = load_script("tools/infer.py")
    out = str(tmp_path / "grid.png")
    infer.main(["--model", model, "--prompt", "a cat", "--height", "16", "--width", "24", "--num_images", "3",
                "--steps", "2", "--max_sequence_length", "8", "--out", out])
    assert Image.open(out).size == (2 * 24, 2 * 16)


def test_bad_input(case, tmp_path):
    name, folder, _, pipe = case
    height, width, prompts, n = CASES[name]
    multiple = 2 * pipe.vae_scale_factor
    with pytest.raises(ValueError, match=f"height must be a positive multiple of {multiple}.*got {height + 2}"):
        pipe(prompts, height=height + 2, width=width)
    with pytest.raises(ValueError, match=f"width must be a positive multiple of {multiple}.*got 0"):
        pipe(prompts, height=height, width=0)
    latents = case_latents(name, pipe)
    with pytest.raises(ValueError, match=f"latents batch {latents.shape[0]} does not match.* = {len(prompts)}"):
        pipe(prompts, height=height, width=width, latents=latents, max_sequence_length=MAX_LEN)
    with pytest.raises(ValueError, match="latents must be packed"):
        pipe(prompts, height=height, width=width, latents=latents[:, :-1], num_images_per_prompt=n,
             max_sequence_length=MAX_LEN)
    with pytest.raises(ValueError, match="max_sequence_length must be in"):
        pipe.encode_prompt(prompts, max_sequence_length=513)
    with pytest.raises(ValueError, match="prompt must be"):
        pipe.encode_prompt(None)
    with pytest.raises(ValueError, match="output_type"):
        pipe(prompts, height=height, width=width, output_type="jpg")
    with pytest.raises(ConfigError, match="float64"):
        FluxPipeline.from_pretrained(folder, dtype="float64")
    if paddle.get_device() == "cpu":  # CI: Paddle's CPU build; bf16 loads but cannot run there
        half = FluxPipeline.from_pretrained(folder, dtype="bfloat16")
        assert half.transformer.dtype == paddle.bfloat16 and half.vae.dtype == paddle.bfloat16
        with pytest.raises(ValueError, match="dtype bfloat16 needs a GPU"):
            half(prompts, height=height, width=width)
    with pytest.raises(FileNotFoundError, match="not found"):
        FluxPipeline.from_pretrained(str(tmp_path / "nope"))
    broken = str(tmp_path / "broken")
    shutil.copytree(folder, broken)
    shutil.rmtree(os.path.join(broken, "vae"))
    with pytest.raises(FileNotFoundError, match="no vae/ subfolder"):
        FluxPipeline.from_pretrained(broken)
    os.remove(os.path.join(broken, "model_index.json"))
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        FluxPipeline.from_pretrained(broken)


def test_loading_leaves_the_folder_untouched(dev):
    _, folder, _, _ = dev

    def snapshot():
        return {os.path.join(root, f): os.path.getmtime(os.path.join(root, f))
                for root, _, files in os.walk(folder) for f in files}

    before = snapshot()
    FluxPipeline.from_pretrained(folder)
    assert snapshot() == before

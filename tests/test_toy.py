"""The toy world: task semantics checked by hand-computed geometry, and the builder run end to end (quick mode)."""

import json
import os

import numpy as np
import pytest

from ppflux_lightning.toy import task

BUILT = os.path.join(os.path.dirname(__file__), os.pardir, "assets", "toy", "flux-toy")


def test_caption_round_trip_and_format():
    scenes = task.all_scenes()
    assert len(scenes) == 162 + 162 * 144  # singles + ordered pairs in different cells
    for scene in scenes[::37]:
        assert task.parse_caption(task.caption(scene)) == scene
    two = task.Scene((task.Obj("circle", "red", "top left"), task.Obj("square", "blue", "bottom")))
    assert task.caption(two) == "a red circle at the top left and a blue square at the bottom"


@pytest.mark.parametrize("text", ["a red circle", "a purple circle at the top", "a red circle at the top and "
                                  "a blue square at the top", "two red circles at the top left", ""])
def test_parse_caption_rejects_bad_text(text):
    with pytest.raises(ValueError, match="caption"):
        task.parse_caption(text)


def test_bad_objects_name_the_value():
    with pytest.raises(ValueError, match="hexagon"):
        task.Obj("hexagon", "red", "top")
    with pytest.raises(ValueError, match="middle"):
        task.Obj("circle", "red", "middle")


def test_render_geometry_matches_hand_computation():
    size = 48
    cell = size / 3
    image = task.render(task.Scene((task.Obj("square", "green", "bottom right"),)), size)  # no jitter
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    green = np.all(image == task.COLORS["green"], axis=-1)
    half = 0.85 * task.RADIUS * cell
    cy = cx = 2.5 * cell
    ys, xs = np.nonzero(green)
    # fully covered pixels lie inside the square, and the square's interior is fully covered
    assert (np.abs(xs + 0.5 - cx) <= half).all() and (np.abs(ys + 0.5 - cy) <= half).all()
    assert green.sum() >= (2 * half - 2) ** 2
    assert np.all(image[0, 0] == task.BACKGROUND)
    circle = task.render(task.Scene((task.Obj("circle", "red", "top left"),)), size)
    covered = (circle.astype(float) - task.BACKGROUND)[..., 0] / (task.COLORS["red"][0] - task.BACKGROUND[0])
    area = np.pi * (task.RADIUS * cell) ** 2
    assert abs(covered.sum() - area) / area < 0.03  # anti-aliased coverage integrates to the disc's area


def test_render_is_seeded_and_objects_stay_in_their_cells():
    scene = task.Scene((task.Obj("triangle", "cyan", "left"), task.Obj("circle", "magenta", "right")))
    a = task.render(scene, 48, np.random.default_rng(3))
    b = task.render(scene, 48, np.random.default_rng(3))
    c = task.render(scene, 48, np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for p in task.layout(scene, 48, np.random.default_rng(3)):
        row, col = task.POSITIONS[p.obj.position]
        assert col * 16 <= p.cx - p.radius and p.cx + p.radius <= (col + 1) * 16
        assert row * 16 <= p.cy - p.radius * 1.01 and p.cy + p.radius <= (row + 1) * 16


def test_split_holds_out_fixed_triples():
    held = [o for o in task.all_objects() if task.is_held_out(o)]
    assert 15 <= len(held) <= 35
    # every colour, shape and position still appears in training, only some combinations do not
    train_objects = {o for sc in task.train_scenes() for o in sc.objects}
    assert {o.color for o in train_objects} == set(task.COLORS)
    assert {o.shape for o in train_objects} == set(task.SHAPES)
    assert {o.position for o in train_objects} == set(task.POSITIONS)
    assert not train_objects & set(held)
    evals = task.eval_scenes()
    assert all(any(task.is_held_out(o) for o in sc.objects) for sc in evals)
    assert not set(task.train_prompts()) & set(task.eval_prompts())
    assert task.eval_prompts() == task.eval_prompts()  # fixed, no hidden randomness


def test_sample_dataset_is_reproducible_and_respects_the_split():
    images, captions = task.sample_dataset(12, 32, seed=5)
    again, captions2 = task.sample_dataset(12, 32, seed=5)
    assert images.shape == (12, 32, 32, 3) and np.array_equal(images, again) and captions == captions2
    for text in captions:
        assert not any(task.is_held_out(o) for o in task.parse_caption(text).objects)
    with pytest.raises(ValueError, match="validation"):
        task.sample_dataset(2, split="validation")


def test_vocabulary_covers_every_caption_word():
    words = set(task.vocabulary())
    for scene in task.all_scenes()[::101]:
        assert set(task.caption(scene).split()) <= words


def test_vae_training_is_seeded():
    import paddle

    from ppflux_lightning.toy.train_vae import build_vae, train_vae

    images, _ = task.sample_dataset(8, 16, seed=0)
    weights = []
    for _ in range(2):
        paddle.seed(0)
        vae = build_vae((8, 8), sample_size=16)
        train_vae(vae, images, steps=2, batch_size=2, seed=1)
        weights.append(vae.decoder.conv_out.weight.numpy())
    np.testing.assert_array_equal(weights[0], weights[1])


def test_quick_build_end_to_end(tmp_path):
    from ppflux_lightning.pipelines.flux_pipeline import FluxPipeline
    from ppflux_lightning.toy.build import BuildSettings, build_toy, load_toy_config, sample_toy

    out = str(tmp_path / "flux-toy")
    report = build_toy(out, BuildSettings.quick(), samples_path=str(tmp_path / "grid.png"))
    for name in ("model_index.json", "toy_world.json", "transformer", "vae", "text_encoder", "text_encoder_2",
                 "tokenizer", "tokenizer_2", "scheduler"):
        assert os.path.exists(os.path.join(out, name)), name
    assert os.path.isfile(tmp_path / "grid.png")
    assert not [name for name in os.listdir(tmp_path) if ".staging" in name]
    toy = load_toy_config(out)
    pipe = FluxPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.transformer.config.guidance_embeds
    assert report["image_tokens"] == (toy["image_size"] // pipe.vae_scale_factor // 2) ** 2
    assert report["min_pooled_distance"] > 1e-3  # distinct captions -> distinct pooled CLIP embeddings
    with open(os.path.join(out, "vae", "config.json")) as f:
        vae_config = json.load(f)
    assert vae_config["latent_channels"] == 16
    assert vae_config["scaling_factor"] == pytest.approx(report["latent_scaling_factor"])
    images = sample_toy(pipe, ["a red circle at the top left", "a blue square at the center"], 0, toy, steps=2)
    assert images.shape == (2, toy["image_size"], toy["image_size"], 3)
    assert np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0


def test_two_process_build_equals_one_process(tmp_path):
    """`tools/build_toy.py --nproc 2` splits every VAE and teacher batch over two gloo processes: same model."""
    import glob
    import subprocess
    import sys

    from safetensors.numpy import load_file

    from ppflux_lightning.toy.build import BuildSettings, build_toy

    one = build_toy(str(tmp_path / "one"), BuildSettings.quick())
    tool = os.path.join(os.path.dirname(__file__), os.pardir, "tools", "build_toy.py")
    run = subprocess.run([sys.executable, tool, "--quick", "--nproc", "2", "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    with open(tmp_path / "two-report.json") as f:
        two = json.load(f)
    assert two["processes"] == 2 and one["processes"] == 1
    # biases right before a GroupNorm get ~zero gradients, which Adam turns into summation-order noise; the latents
    # the VAE produces (and so its shift/scale factors) and the whole teacher agree
    for key in ("latent_shift_factor", "latent_scaling_factor", "teacher_final_loss"):
        assert two[key] == pytest.approx(one[key], rel=1e-4), key
    ours, theirs = (load_file(glob.glob(str(tmp_path / name / "transformer" / "*.safetensors"))[0])
                    for name in ("two", "one"))
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=1e-5, err_msg=key)
    assert not [name for name in os.listdir(tmp_path) if ".staging" in name]


@pytest.mark.skipif(not os.path.isdir(BUILT), reason="the toy model has not been built into assets/toy/")
def test_committed_toy_model_is_small_and_complete():
    from ppflux_lightning.toy.build import folder_bytes, load_toy_config

    assert folder_bytes(BUILT) <= 20 * 2**20
    toy = load_toy_config(BUILT)
    assert toy["image_size"] == task.IMAGE_SIZE and toy["max_sequence_length"] >= 8

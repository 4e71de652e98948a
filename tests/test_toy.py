"""The toy world: task semantics checked by hand-computed geometry, and the builder run end to end (quick mode)."""

import dataclasses
import json
import os

import numpy as np
import pytest

from ppflux_lightning.toy import task

BUILT = os.path.join(os.path.dirname(__file__), os.pardir, "assets", "toy", "flux-toy")


def test_caption_round_trip_and_open_attributes():
    specs = task.all_specs()
    assert len(specs) == 5 * 4 * 5  # each attribute named or open
    for spec in specs:
        assert task.parse_caption(task.caption((spec,))) == (spec,)
    assert task.caption((task.Spec(None, "red", "top left"),)) == "a red shape at the top left"
    assert task.caption((task.Spec("circle"),)) == "a circle"
    assert task.parse_caption("a shape") == (task.Spec(),)
    assert task.parse_caption("a shape").__getitem__(0).level == 0
    two = "a red circle at the top left and a bar"
    assert task.parse_caption(two) == (task.Spec("circle", "red", "top left"), task.Spec("bar"))
    scene = task.Scene((task.Obj("circle", "red", "top left"), task.Obj("bar", "blue", "bottom right")))
    assert task.caption(scene) == "a red circle at the top left and a blue bar at the bottom right"


@pytest.mark.parametrize("text", ["a purple circle", "a circle at the center", "a red circle at the top left and "
                                  "a blue bar at the top left", "two red circles", "a circle red", "",
                                  "a shape and a shape and a shape"])
def test_parse_caption_rejects_bad_text(text):
    with pytest.raises(ValueError, match="caption"):
        task.parse_caption(text)


def test_bad_objects_name_the_value():
    with pytest.raises(ValueError, match="hexagon"):
        task.Obj("hexagon", "red", "top left")
    with pytest.raises(ValueError, match="middle"):
        task.Spec("circle", "red", "middle")
    with pytest.raises(ValueError, match="None"):
        task.Obj("circle", None, "top left")  # a drawn object has every attribute


def test_render_geometry_matches_hand_computation():
    size = 48
    cell = size / task.GRID
    radius = sum(task.RADIUS_RANGE) / 2 * cell  # the canonical (rng=None) size
    image = task.render(task.Scene((task.Obj("bar", "green", "bottom right"),)), size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    green = np.all(image == task.COLORS["green"], axis=-1)
    half_w, half_h = radius, 0.5 * radius  # the bar: as wide as the circle, half as tall
    cy = cx = 1.5 * cell
    ys, xs = np.nonzero(green)
    # fully covered pixels lie inside the bar, and the bar's interior is fully covered
    assert (np.abs(xs + 0.5 - cx) <= half_w).all() and (np.abs(ys + 0.5 - cy) <= half_h).all()
    assert green.sum() >= (2 * half_w - 2) * (2 * half_h - 2)
    assert np.all(image[0, 0] == task.CANONICAL_BACKGROUND)
    circle = task.render(task.Scene((task.Obj("circle", "red", "top left"),)), size)
    covered = (circle.astype(float) - task.CANONICAL_BACKGROUND)[..., 0] / (
        task.COLORS["red"][0] - task.CANONICAL_BACKGROUND[0])
    area = np.pi * radius ** 2
    assert abs(covered.sum() - area) / area < 0.03  # anti-aliased coverage integrates to the disc's area
    for shape in task.SHAPES:  # SHAPE_AREA and SHAPE_CENTROID_DY against the rasterised shapes
        u = (np.arange(400) + 0.5) / 100 - 2.0
        mask = task.shape_mask(shape, u[None, :], u[:, None], 1.0)
        assert mask.sum() / 100 ** 2 == pytest.approx(task.SHAPE_AREA[shape], rel=0.01)
        assert np.nonzero(mask)[0].mean() / 100 - 2.0 + 0.005 == pytest.approx(task.SHAPE_CENTROID_DY[shape],
                                                                             abs=0.01)


def test_render_is_seeded_objects_stay_in_their_cells_and_backgrounds_stay_grey():
    scene = task.Scene((task.Obj("triangle", "yellow", "top left"), task.Obj("circle", "blue", "bottom right")))
    a = task.render(scene, 48, np.random.default_rng(3))
    b = task.render(scene, 48, np.random.default_rng(3))
    c = task.render(scene, 48, np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    cell = 48 / task.GRID
    slack = (task.CENTER_JITTER + 1.05 * task.RADIUS_RANGE[1] - 0.5) * cell  # the widest triangle: 0.02 cell over
    for seed in range(20):
        for p in task.layout(scene, 48, np.random.default_rng(seed)):
            row, col = task.POSITIONS[p.obj.position]
            assert col * cell - slack <= p.cx - 1.05 * p.radius and p.cx + 1.05 * p.radius <= (col + 1) * cell + slack
            assert row * cell <= p.cy - p.radius and p.cy + p.radius <= (row + 1) * cell
        bg = task.background(48, np.random.default_rng(seed))
        assert (bg.max(-1) - bg.min(-1)).max() <= 2 * task.BACKGROUND_TINT + 1e-9 and bg.max() < 120
    sizes = [p.radius for s in range(200) for p in task.layout(scene, 48, np.random.default_rng(s))]
    assert min(sizes) < 1.05 * task.RADIUS_RANGE[0] * cell and max(sizes) > 0.95 * task.RADIUS_RANGE[1] * cell


def test_open_attributes_are_drawn_uniformly():
    rng = np.random.default_rng(0)
    scenes = [task.draw_scene(task.parse_caption("a shape at the top left and a red shape"), rng) for _ in range(4000)]
    first, second = [s.objects[0] for s in scenes], [s.objects[1] for s in scenes]
    assert {o.position for o in first} == {"top left"} and {o.color for o in second} == {"red"}
    assert "top left" not in {o.position for o in second}
    for values, support in (([o.color for o in first], task.COLORS), ([o.shape for o in second], task.SHAPES),
                            ([o.position for o in second], ["top right", "bottom left", "bottom right"])):
        counts = np.array([values.count(v) for v in support]) / len(values)
        # an array, not a scalar, as the expected value: ppdiffusers' load_utils sets `np.bool = bool` on import,
        # which breaks numpy.testing's scalar path once any earlier test has loaded a VAE
        np.testing.assert_allclose(counts, np.full(len(support), 1 / len(support)), atol=0.03)


def test_split_holds_out_fixed_triples_named_in_full():
    held = [o for o in task.all_objects() if task.is_held_out(o)]
    assert len(held) == 8
    # every colour, shape and position appears among the held-out triples' neighbours in training
    rng = np.random.default_rng(0)
    train = [task.random_train_specs(rng) for _ in range(3000)]
    named = {s for specs in train for s in specs if s.level == 3}
    assert not any(task.is_held_out(s) for s in named)
    assert {s.color for s in named} == set(task.COLORS) and {s.shape for s in named} == set(task.SHAPES)
    assert {s.position for s in named} == set(task.POSITIONS)
    levels = np.bincount([s.level for specs in train for s in specs], minlength=4)
    assert (levels > 0).all()  # every level of specification is trained
    evals = task.eval_prompts(200)
    assert evals == task.eval_prompts(200) and len(evals) == 200  # fixed, no hidden randomness
    specs = [task.parse_caption(p) for p in evals]
    for spec in specs:  # a fully named single object is a held-out triple, and so is the first of a pair
        assert task.names_held_out(spec[0]) if len(spec) == 2 else spec[0].level < 3 or task.is_held_out(spec[0])
    assert {s[0].level for s in specs if len(s) == 1} == {0, 1, 2, 3}
    assert 0.2 <= np.mean([len(s) == 2 for s in specs]) <= 0.3


def test_caption_variants_draw_the_training_captions_given_the_scene():
    """Re-captioning a drawn scene gives the same joint (caption, scene) distribution as the training data."""
    rng, again = np.random.default_rng(3), np.random.default_rng(4)
    drawn, variants = [], []
    for _ in range(4000):
        specs = task.random_train_specs(rng)
        scene = task.draw_scene(specs, rng)
        drawn.append(specs)
        (text,) = task.caption_variants(scene, 1, again)
        redrawn = task.parse_caption(text)
        assert len(redrawn) == len(scene.objects) and not any(task.names_held_out(s) for s in redrawn)
        assert all(s.matches(o) for s, o in zip(redrawn, scene.objects))  # names only what the scene shows
        variants.append(redrawn)
    for pick in (lambda specs: specs[0].level, len, lambda specs: specs[0].color is None):
        a = np.bincount([int(pick(s)) for s in drawn], minlength=4) / len(drawn)
        b = np.bincount([int(pick(s)) for s in variants], minlength=4) / len(variants)
        np.testing.assert_allclose(b, a, atol=0.03)
    # held-out triples are never named in full, yet the scenes holding them are still captioned
    held = task.Scene((next(o for o in task.all_objects() if task.is_held_out(o)),))
    texts = task.caption_variants(held, 200, rng)
    assert {task.parse_caption(t)[0].level for t in texts} == {0, 1, 2}
    with pytest.raises(ValueError, match="count"):
        task.caption_variants(held, 0, rng)


def test_level_balanced_prompts_weigh_every_level_alike():
    prompts = task.level_balanced_prompts(30)
    assert prompts == task.level_balanced_prompts(30) and len(prompts) == 120
    specs = [task.parse_caption(p) for p in prompts]
    assert all(len(s) == 1 for s in specs)
    assert [s[0].level for s in specs] == [0] * 30 + [1] * 30 + [2] * 30 + [3] * 30
    assert set(prompts[:30]) == {"a shape"}
    assert all(task.is_held_out(s[0]) for s in specs[90:])  # fully named: the held-out triples, all 8 of them
    assert len(set(prompts[90:])) == 8 and len(set(prompts[30:60])) == 11  # 4 colours + 3 shapes + 4 cells
    with pytest.raises(ValueError, match="per_level"):
        task.level_balanced_prompts(0)


def test_sample_dataset_is_reproducible_and_respects_the_split():
    images, captions = task.sample_dataset(12, 32, seed=5)
    again, captions2 = task.sample_dataset(12, 32, seed=5)
    assert images.shape == (12, 32, 32, 3) and np.array_equal(images, again) and captions == captions2
    for text in captions:
        assert not any(task.names_held_out(s) for s in task.parse_caption(text))
    _, evals, scenes = task.sample_dataset(6, 32, seed=5, split="eval", return_scenes=True)
    assert evals == task.eval_prompts(6)
    for text, scene in zip(evals, scenes):
        specs = task.parse_caption(text)
        assert len(specs) == len(scene.objects) and all(s.matches(o) for s, o in zip(specs, scene.objects))
    with pytest.raises(ValueError, match="validation"):
        task.sample_dataset(2, split="validation")


def test_vocabulary_covers_every_caption_word():
    words = set(task.vocabulary())
    for text in task.eval_prompts(100) + task.sample_dataset(50, 16, split="all")[1]:
        assert set(text.split()) <= words


# ---------------------------------------------------------------- the detector and the exact metrics
def _blur(images, sigma):
    from PIL import Image, ImageFilter

    return np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(sigma))) for im in images])


def test_detector_reads_ground_truth_renders_exactly():
    from ppflux_lightning.toy import detector

    for size in (task.IMAGE_SIZE, 64):
        images, captions, scenes = task.sample_dataset(300, size=size, seed=11, split="all", return_scenes=True)
        readings = [detector.read(im) for im in images]
        valid = np.mean([r.valid(len(s.objects)) for r, s in zip(readings, scenes)])
        assert valid >= 0.99, (size, valid)
        for r, scene in zip(readings, scenes):
            got = sorted((d.position, d.color, d.shape) for d in r.objects)
            assert got == sorted((o.position, o.color, o.shape) for o in scene.objects)


def test_detector_rejects_blends_and_blurs_and_tolerates_noise():
    from ppflux_lightning.toy import detector

    images, _, scenes = task.sample_dataset(200, seed=12, split="all", return_scenes=True)
    blends = np.round((images.astype(float) + np.roll(images, 1, axis=0)) / 2).astype(np.uint8)
    assert np.mean([detector.read(im).valid() for im in blends]) < 0.05
    blurred = _blur(images, 1.5)
    assert np.mean([detector.read(im).valid(len(s.objects)) for im, s in zip(blurred, scenes)]) < 0.05
    noisy = np.clip(images + np.random.default_rng(0).normal(0, 8, images.shape), 0, 255).astype(np.uint8)
    assert np.mean([detector.read(im).valid(len(s.objects)) for im, s in zip(noisy, scenes)]) >= 0.95


def test_detector_names_why_a_scene_is_not_clean():
    from ppflux_lightning.toy import detector

    two = task.render(task.Scene((task.Obj("circle", "red", "top left"), task.Obj("bar", "blue", "bottom right"))))
    assert detector.read(two).failures() == () and detector.read(two).failures(2) == ()
    assert detector.read(two).failures(1) == ("count",)
    red, green = (task.render(task.Scene((task.Obj("circle", c, "top left"),))) for c in ("red", "green"))
    reading = detector.read(np.round((red.astype(float) + green) / 2).astype(np.uint8))  # a red-green blend
    assert reading.failures() == ("count",) and not reading.objects  # no palette colour left
    circle = task.render(task.Scene((task.Obj("circle", "red", "top left"),)))
    shifted = np.roll(circle, 6, axis=1)
    union = np.where((circle != task.CANONICAL_BACKGROUND).any(-1, keepdims=True), circle, shifted)  # a wide oval
    assert "shape" in detector.read(union).failures(1)
    for image in (two, union):
        reading = detector.read(image)
        assert reading.valid() == (reading.failures() == ())


def test_adherence_checks_only_the_named_attributes():
    from ppflux_lightning.toy import detector

    scene = task.Scene((task.Obj("circle", "red", "top left"), task.Obj("triangle", "blue", "bottom right")))
    image = task.render(scene, rng=np.random.default_rng(0))
    assert detector.adheres(image, task.caption(scene)) and detector.is_valid(image, task.caption(scene))
    assert detector.adheres(image, "a red shape and a triangle")
    assert detector.adheres(image, "a shape at the bottom right")
    assert not detector.adheres(image, "a green circle at the top left")  # colour
    assert not detector.adheres(image, "a red bar")  # shape
    assert not detector.adheres(image, "a red circle at the top right")  # position
    assert not detector.adheres(image, "a red shape and a red shape")  # each object its own detection
    assert detector.adheres(image, "a red circle at the top left")  # an extra object does not break adherence ...
    assert not detector.is_valid(image, "a red circle at the top left")  # ... but the count makes it invalid


def test_task_scores_by_hand():
    from ppflux_lightning.toy import metrics

    rng = np.random.default_rng(0)
    prompts = ["a shape"] * 8 + ["a red circle at the top left", "a red circle at the top left and a bar"]
    shapes = ["circle"] * 4 + ["bar"] * 4  # colours and cells drawn, shapes only two of three: TV 1/3
    scenes = [task.Scene((task.Obj(s, "green", "top right"),)) for s in shapes]
    scenes += [task.Scene((task.Obj("circle", "blue", "top left"),)),  # wrong colour
               task.Scene((task.Obj("circle", "red", "top left"),))]  # one object missing
    images = np.stack([task.render(sc, rng=rng) for sc in scenes])
    scores = metrics.task_scores(images, prompts)
    assert scores["validity"] == 90.0 and scores["validity_single"] == 100.0
    assert scores["adherence"] == 80.0 and scores["adherence_single"] == pytest.approx(100 * 8 / 9)
    assert scores["adherence_level0"] == 100.0 and scores["adherence_level3"] == 0.0
    assert scores["adherence_level1"] is None
    assert scores["validity_level0"] == 100.0 and scores["validity_level3"] == 100.0  # wrong colour, clean scene
    assert scores["coverage_tv_shape"] == pytest.approx(1 / 3)
    assert scores["coverage_tv_color"] == pytest.approx(0.75) and scores["coverage_tv_position"] == 0.75
    assert scores["coverage_tv"] == pytest.approx(0.75) and scores["coverage_n_shape"] == 8
    assert metrics.total_variation([], task.SHAPES) is None
    assert metrics.coverage_floor(64, 4) == pytest.approx(0.35 * np.sqrt(4 / 64), rel=0.25)


def test_task_features_train_save_load_and_separate_distributions(tmp_path):
    from ppflux_lightning.eval import fid
    from ppflux_lightning.toy import features

    accuracy = features.train_task_features(str(tmp_path), steps=15, batch_size=16, seed=0, eval_images=32)
    assert 0.0 <= accuracy <= 1.0
    net = features.TaskFeatures(str(tmp_path))
    real_a, _ = task.sample_dataset(64, seed=21, split="all")
    real_b, _ = task.sample_dataset(64, seed=22, split="all")
    noise = np.random.default_rng(0).integers(0, 256, size=real_a.shape, dtype=np.uint8)
    assert net(real_a).shape == (64, net.config["feature_dim"])
    np.testing.assert_allclose(net(real_a[:4]), net(real_a)[:4], rtol=1e-5, atol=1e-6)
    assert fid.compute_fid(real_a, real_b, net) < fid.compute_fid(real_a, noise, net)
    with pytest.raises(FileNotFoundError, match="task_features"):
        features.TaskFeatures(str(tmp_path / "missing"))
    assert isinstance(features.load_feature_spec(f"task:{tmp_path}"), features.TaskFeatures)
    with pytest.raises(ValueError, match="inception:FILE"):
        features.load_feature_spec("clip:x")


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


def test_teacher_inputs_take_one_or_several_captions_per_image(tmp_path):
    from ppflux_lightning.pipelines.flux_pipeline import FluxPipeline
    from ppflux_lightning.pipelines.tiny import build_tiny_pipeline
    from ppflux_lightning.toy.build import teacher_inputs

    build_tiny_pipeline(str(tmp_path / "pipe"))
    pipe = FluxPipeline.from_pretrained(str(tmp_path / "pipe"))
    raw = np.random.default_rng(0).standard_normal((3, pipe.vae.config.latent_channels, 8, 8)).astype("float32")
    flat = teacher_inputs(pipe, raw, ["a shape", "a circle", "a shape"], 16)["caption_index"]
    ones = teacher_inputs(pipe, raw, [["a shape"], ["a circle"], ["a shape"]], 16)["caption_index"]
    assert flat.tolist() == ones.tolist() == [1, 0, 1]  # K = 1 is one caption per image (no per-sample draw)
    two = teacher_inputs(pipe, raw, [["a shape", "a bar"], ["a circle", "a bar"], ["a shape", "a shape"]], 16)
    assert two["caption_index"].tolist() == [[2, 0], [1, 0], [2, 2]] and len(two["prompt_embeds"]) == 3


def test_quick_build_end_to_end(tmp_path):
    from ppflux_lightning.pipelines.flux_pipeline import FluxPipeline
    from ppflux_lightning.toy.build import BuildSettings, build_toy, load_toy_config, sample_toy

    out = str(tmp_path / "flux-toy")
    settings = dataclasses.replace(BuildSettings.quick(), captions_per_image=2)  # two captions per training image
    report = build_toy(out, settings, samples_path=str(tmp_path / "grid.png"))
    for name in ("model_index.json", "toy_world.json", "transformer", "vae", "text_encoder", "text_encoder_2",
                 "tokenizer", "tokenizer_2", "scheduler"):
        assert os.path.exists(os.path.join(out, name)), name
    assert os.path.isfile(tmp_path / "grid.png")
    assert not [name for name in os.listdir(tmp_path) if ".staging" in name]
    assert list(report["curve"]) == ["teacher@1", "teacher@2"] and report["eval_prompts"] == 8
    assert 0.0 <= report["curve"]["teacher@1"]["validity"] <= 100.0 and 0.0 <= report["vae_valid_eval"] <= 100.0
    assert os.path.isfile(tmp_path / "grid-steps.png")
    assert report["per_level"] == 2 and list(report["levels_curve"]) == ["teacher@1", "teacher@2"]
    assert all(report["levels_curve"]["teacher@2"][f"validity_level{k}"] is not None for k in range(4))
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
    images = sample_toy(pipe, ["a red circle at the top left", "a blue shape"], 0, toy, steps=2)
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

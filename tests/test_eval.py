"""Evaluation metrics against closed forms, hand-computed cases and independent references."""

import numpy as np
import paddle
import pytest
import torch
from script_loader import load_script

from ppflux_lightning.eval import clip_score, features, fid, image_metrics
from ppflux_lightning.toy import task


# ---------------------------------------------------------------- FID
def test_fid_of_identical_sets_is_zero():
    x = np.random.default_rng(0).normal(size=(200, 8))
    assert fid.fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)
    assert fid.compute_fid(x, x.copy(), lambda b: b, batch_size=33) == pytest.approx(0.0, abs=1e-8)


def _random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_matches_closed_form_with_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = _random_spd(rng, 5), _random_spd(rng, 5)  # do not commute
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fid_of_sampled_gaussians_matches_closed_form():
    # diagonal covariances: (S1 S2)^1/2 = diag(sqrt(a_i b_i)), hand-computable
    rng = np.random.default_rng(2)
    var1, var2 = np.array([1.0, 2.0, 0.5, 3.0]), np.array([2.0, 0.5, 1.0, 1.0])
    mu1, mu2 = np.zeros(4), np.array([1.0, -1.0, 0.5, 0.0])
    closed = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    a = mu1 + rng.normal(size=(40000, 4)) * np.sqrt(var1)
    b = mu2 + rng.normal(size=(40000, 4)) * np.sqrt(var2)
    assert fid.compute_fid(a, b, feature_fn=lambda batch: batch, batch_size=4096) == pytest.approx(closed, rel=0.03)


def test_fid_is_finite_for_singular_covariances():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(10, 64)), rng.normal(size=(10, 64)) + 1.0
    value = fid.fid_from_features(a, b)
    assert np.isfinite(value) and value > 64 * 0.5  # the mean shift alone contributes 64


def test_fid_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        fid.feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="mismatched"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# ---------------------------------------------------------------- PSNR / SSIM
def test_psnr_hand_computed():
    a, b = np.full((8, 8, 3), 0.5), np.full((8, 8, 3), 0.6)
    assert image_metrics.psnr(a, b)[0] == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert image_metrics.psnr(a, a)[0] == np.inf


def test_ssim_constant_images_hand_computed():
    # no variance: SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    a, b = np.full((16, 16, 3), 0.3), np.full((16, 16, 3), 0.7)
    c1 = 0.01 ** 2
    expected = (2 * 0.3 * 0.7 + c1) / (0.3 ** 2 + 0.7 ** 2 + c1)
    assert image_metrics.ssim(a, b)[0] == pytest.approx(expected, rel=1e-9)
    assert image_metrics.ssim(a, a)[0] == pytest.approx(1.0)


def _torch_ssim(a, b):
    """Independent reference: 11x11 Gaussian window (sigma 1.5) as a 2-D conv, valid region, channel mean."""
    x = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-x ** 2 / 4.5)
    window = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None].repeat(3, 1, 1, 1)
    ta = torch.from_numpy(a).permute(0, 3, 1, 2)
    tb = torch.from_numpy(b).permute(0, 3, 1, 2)
    conv = lambda t: torch.nn.functional.conv2d(t, window, groups=3)
    mu_a, mu_b = conv(ta), conv(tb)
    var_a, var_b, cov = conv(ta * ta) - mu_a ** 2, conv(tb * tb) - mu_b ** 2, conv(ta * tb) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=(1, 2, 3)).numpy()


def test_ssim_matches_torch_reference():
    rng = np.random.default_rng(4)
    a = rng.uniform(size=(2, 24, 20, 3))
    b = np.clip(a + rng.normal(scale=0.1, size=a.shape), 0, 1)
    ours = image_metrics.ssim(a, b)
    np.testing.assert_allclose(ours, _torch_ssim(a, b), rtol=1e-10)
    assert 0.2 < ours.min() < 0.99


def test_ssim_matches_skimage_when_installed():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(5)
    a = rng.uniform(size=(24, 24, 3))
    b = np.clip(a + rng.normal(scale=0.1, size=a.shape), 0, 1)
    expected = skm.structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=1.0)
    assert image_metrics.ssim(a, b)[0] == pytest.approx(expected, rel=1e-6)


def test_image_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        image_metrics.psnr(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))
    with pytest.raises(ValueError, match="smaller than"):
        image_metrics.ssim(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))


# ---------------------------------------------------------------- feature networks (the toy world's: tests/test_toy.py)
def test_inception_features_load_local_weights(tmp_path):
    from paddle.vision.models import InceptionV3

    with pytest.raises(FileNotFoundError, match="nowhere.pdparams"):
        features.InceptionFeatures(str(tmp_path / "nowhere.pdparams"))
    paddle.seed(0)
    reference = InceptionV3(num_classes=10)  # the fc head is dropped on load
    reference.eval()
    path = str(tmp_path / "inception.pdparams")
    paddle.save(reference.state_dict(), path)
    net = features.InceptionFeatures(path, resize=75)
    images = np.random.default_rng(0).uniform(size=(2, 80, 80, 3)).astype(np.float32)
    x = paddle.nn.functional.interpolate(paddle.to_tensor(images.transpose(0, 3, 1, 2)), size=[75, 75],
                                         mode="bilinear")
    mean = paddle.to_tensor(features.IMAGENET_MEAN).reshape([1, 3, 1, 1])
    std = paddle.to_tensor(features.IMAGENET_STD).reshape([1, 3, 1, 1])
    with paddle.no_grad():
        pooled = reference.avg_pool(_inception_trunk(reference, (x - mean) / std)).reshape([2, -1]).numpy()
    np.testing.assert_allclose(net(images), pooled, rtol=1e-4, atol=1e-5)
    assert net(images).shape == (2, 2048)


def _inception_trunk(model, x):
    x = model.inception_stem(x)
    for block in model.inception_block_list:
        x = block(x)
    return x


# ---------------------------------------------------------------- CLIP score
def _tiny_clip():
    from paddlenlp.transformers import CLIPConfig, CLIPModel

    paddle.seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=12),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    return CLIPModel(config)


def _word_ids(prompts, length=12):
    """A stand-in tokenizer: hashed word ids, end token 63 (the largest id, which CLIP pools at), zero padding."""
    out = np.zeros((len(prompts), length), np.int64)
    for i, prompt in enumerate(prompts):
        ids = [sum(map(ord, w)) % 60 + 1 for w in prompt.split()][: length - 1] + [63]
        out[i, : len(ids)] = ids
    return out


def test_clip_score_matches_model_logits_and_hand_formula():
    model = _tiny_clip()
    scorer = clip_score.CLIPScorer(model, _word_ids, batch_size=3)
    images, prompts = task.sample_dataset(5, seed=31, split="all")
    scores = scorer.scores(images, prompts)
    # independent path 1: the model's own forward computes logit_scale.exp() * cosine between every pair
    with paddle.no_grad():
        out = model(input_ids=paddle.to_tensor(_word_ids(prompts)),
                    pixel_values=clip_score.clip_preprocess(images, 32), return_dict=True)
    cosine = np.diag(out.logits_per_image.numpy()) / np.exp(model.logit_scale.numpy()[0])
    np.testing.assert_allclose(scores, 100 * cosine, rtol=1e-4, atol=1e-4)
    # independent path 2: hand formula on the embeddings
    image_emb, text_emb = scorer.embeddings(images, prompts)
    hand = [100 * u @ v / np.sqrt((u @ u) * (v @ v)) for u, v in zip(image_emb, text_emb)]
    np.testing.assert_allclose(scores, hand, rtol=1e-6)
    assert scorer(images, prompts) == pytest.approx(max(float(np.mean(hand)), 0.0), rel=1e-6, abs=1e-9)


def test_clip_scorer_from_pretrained_reads_a_local_folder(tmp_path):
    from paddlenlp.transformers import CLIPConfig, CLIPModel

    from ppflux_lightning.models.tokenizers import make_clip_tokenizer

    with pytest.raises(FileNotFoundError, match="no-clip"):
        clip_score.CLIPScorer.from_pretrained(str(tmp_path / "no-clip"))
    folder = str(tmp_path / "clip")
    vocab = make_clip_tokenizer(folder, task.eval_prompts(200), vocab_size=560)
    paddle.seed(1)
    model = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=20, eos_token_id=vocab - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16))
    model.save_pretrained(folder)
    scorer = clip_score.CLIPScorer.from_pretrained(folder)
    images, prompts = task.sample_dataset(3, seed=32, split="all")
    ids = scorer.tokenize(prompts)
    assert ids.shape == (3, 20) and (ids == vocab - 1).any(axis=1).all()  # padded to the context, end token kept
    direct = clip_score.CLIPScorer(model, scorer.tokenize)
    np.testing.assert_allclose(scorer.scores(images, prompts), direct.scores(images, prompts), rtol=1e-5, atol=1e-5)


def test_clip_score_clips_the_mean_at_zero_not_each_pair():
    scores = clip_score.cosine_scores([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]], [[-1.0, 0.0], [2.0, 2.0], [1.0, 1.0]])
    assert scores.tolist() == pytest.approx([-100.0, 100.0, 100 / np.sqrt(2)])
    assert clip_score.clip_score_of(scores) == pytest.approx(100 / np.sqrt(2) / 3)
    assert clip_score.clip_score_of(scores[:1]) == 0.0


def test_clip_score_matches_torchmetrics_on_the_same_clip(tmp_path):
    """One tiny random CLIP in both formats: transformers (PyTorch) scored by torchmetrics' CLIPScore, and its
    paddlenlp conversion (`from_pretrained(..., convert_from_torch=True)`, the documented path) scored by ours."""
    import torch
    from paddlenlp.transformers import CLIPModel as PaddleCLIP
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from ppflux_lightning.models.tokenizers import make_clip_tokenizer

    hf_dir, paddle_dir = str(tmp_path / "hf"), str(tmp_path / "paddle")
    vocab = make_clip_tokenizer(hf_dir, [task.caption((s,)) for s in task.all_specs()], vocab_size=560)
    torch.manual_seed(2)
    model = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=24, eos_token_id=vocab - 1,
                         bos_token_id=vocab - 2, pad_token_id=vocab - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)).eval()
    with torch.no_grad():  # larger random weights: per-pair scores of both signs, so the clip at 0 is exercised
        for name, param in model.named_parameters():
            if "norm" not in name and name != "logit_scale":
                param.normal_(0, 0.5)
    model.save_pretrained(hf_dir)
    processor = CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                              CLIPTokenizer.from_pretrained(hf_dir))
    converted = PaddleCLIP.from_pretrained(hf_dir, convert_from_torch=True)
    converted.save_pretrained(paddle_dir)
    processor.tokenizer.save_pretrained(paddle_dir)
    ours = clip_score.CLIPScorer.from_pretrained(paddle_dir, batch_size=4)

    def reference(images, prompts):
        metric = CLIPScore(model_name_or_path=lambda: (model, processor))
        with torch.no_grad():
            metric.update(list(torch.from_numpy(images.transpose(0, 3, 1, 2))), list(prompts))
        return float(metric.compute())

    rng = np.random.default_rng(5)  # with these weights and captions: the guard at the end holds
    prompts = [task.caption((s,)) for s in task.all_specs()][-6:]  # fully named captions
    per_pair, means = [], []
    for shape in ((48, 80), (96, 40)):  # wide and tall, both resized (PIL bicubic) and centre-cropped
        images = rng.integers(0, 256, (len(prompts), *shape, 3), dtype=np.uint8)
        per_pair.append(ours.scores(images, prompts))
        means.append(reference(images, prompts))
        assert ours(images, prompts) == pytest.approx(means[-1], abs=1e-4)
        for i in range(len(prompts)):  # single pairs: max(100 cos, 0) each, negative ones included
            assert max(per_pair[-1][i], 0.0) == pytest.approx(reference(images[i:i + 1], prompts[i:i + 1]), abs=1e-4)
    per_pair = np.concatenate(per_pair)
    assert (per_pair < -1).any() and (per_pair > 1).any() and max(means) > 1  # not a comparison of zeros


def test_clip_preprocess_crops_the_centre_of_wide_images():
    image = np.zeros((1, 32, 64, 3), np.float32)
    image[:, :, 16:48] = 1.0  # the centre square is white, the sides black
    x = clip_score.clip_preprocess(image, 16).numpy()
    white = (1.0 - np.asarray(clip_score.CLIP_MEAN)) / np.asarray(clip_score.CLIP_STD)
    np.testing.assert_allclose(x[0, :, 4:12, 4:12].mean(axis=(1, 2)), white, rtol=1e-3)


# ---------------------------------------------------------------- tools/eval.py and the evaluation driver
def _eval_tool():
    return load_script("tools/eval.py")


def test_eval_tool_scores_image_folders(tmp_path):
    import json

    from ppflux_lightning.eval.image_io import save_images, write_prompts

    images, prompts = task.sample_dataset(6, seed=41, split="eval")
    save_images(images, str(tmp_path / "teacher"))
    blurred = ((images.astype(np.int32) + np.roll(images, 1, axis=2)) // 2).astype(np.uint8)
    save_images(blurred, str(tmp_path / "student"))
    write_prompts(prompts, str(tmp_path / "prompts.txt"))
    _eval_tool().main(["score", "--images", str(tmp_path / "student"), "--reference", str(tmp_path / "teacher"),
                       "--prompts", str(tmp_path / "prompts.txt"), "--adherence", "--out", str(tmp_path / "eval")])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    a, b = blurred / 255.0, images / 255.0
    assert metrics["psnr"] == pytest.approx(float(np.mean(10 * np.log10(1 / ((a - b) ** 2).mean(axis=(1, 2, 3))))))
    assert metrics["ssim"] == pytest.approx(float(np.mean(image_metrics.ssim(a, b))))
    assert metrics["images"] == 6 and metrics["adherence"] == 100.0 and 0.0 <= metrics["validity"] <= 100.0
    assert "| psnr |" in (tmp_path / "eval" / "metrics.md").read_text()


class _FakePipe:
    """Stands in for FluxPipeline: the image's brightness encodes the seed, and calls are counted."""

    def __init__(self):
        self.calls = []

    def set_progress_bar_config(self, disable=False):
        pass

    def __call__(self, prompt, height, width, num_inference_steps, guidance_scale, seed, max_sequence_length,
                 output_type):
        self.calls.append((prompt, seed, num_inference_steps))

        class Out:
            images = np.full((1, height, width, 3), seed / 255.0, np.float32)

        return Out()


def test_generate_images_pairs_seeds_resumes_and_refuses_other_settings(tmp_path):
    from ppflux_lightning.eval import evaluate

    pipe = _FakePipe()
    out = str(tmp_path / "student")
    images = evaluate.generate_images(pipe, ["a", "b", "c"], out, steps=4, seed=10, height=8, width=8)
    assert [c[1] for c in pipe.calls] == [10, 11, 12] and images[:, 0, 0, 0].tolist() == [10, 11, 12]
    import os

    os.remove(os.path.join(out, "00001.png"))
    again = evaluate.generate_images(pipe, ["a", "b", "c"], out, steps=4, seed=10, height=8, width=8)
    assert pipe.calls[3:] == [("b", 11, 4)]  # only the missing image is sampled again
    np.testing.assert_array_equal(again, images)
    with pytest.raises(ValueError, match="steps"):
        evaluate.generate_images(pipe, ["a", "b", "c"], out, steps=8, seed=10, height=8, width=8)


def test_read_prompts_from_coco_captions(tmp_path):
    import json

    from ppflux_lightning.eval.image_io import read_prompts

    coco = {"annotations": [{"image_id": 7, "id": 2, "caption": "A dog  on a\nbeach."},
                            {"image_id": 3, "id": 5, "caption": "A red bus."},
                            {"image_id": 7, "id": 1, "caption": "A dog running."}]}
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps(coco))
    assert read_prompts(str(path)) == ["A red bus.", "A dog running."]
    assert read_prompts(str(path), limit=1) == ["A red bus."]
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_prompts(str(tmp_path / "nope.txt"))

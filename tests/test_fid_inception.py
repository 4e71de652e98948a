"""The FID Inception network and Frechet distance against pytorch-fid on identical (random) weights.

pytorch-fid builds `InceptionV3([3])` from torchvision's Inception3 and loads `pt_inception-2015-12-05-6726825d.pth`
through torch hub's cache: the test writes random weights under that name into a temporary TORCH_HOME, so the
reference loads them as it would the real file (nothing is downloaded), and our converter reads the same file.
"""

import os

import numpy as np
import paddle
import pytest
import torch
from pytorch_fid import fid_score
from pytorch_fid import inception as pt_inception
from script_loader import load_script

from ppflux_lightning.eval import fid, fid_inception

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_NAMES = {"_mean": "running_mean", "_variance": "running_var"}


def random_torch_state(seed=0):
    """A state dict with the ported file's names and shapes (classifier included), He-scaled random weights and
    non-trivial batch-norm statistics, so activations keep their scale through the 94 convolutions."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in fid_inception.parameter_shapes().items():
        prefix, _, leaf = name.rpartition(".")
        if leaf == "weight" and len(shape) == 4:
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        elif leaf == "weight":
            value = rng.uniform(0.8, 1.2, shape)
        elif leaf in ("bias", "_mean"):
            value = rng.normal(0, 0.1, shape)
        else:
            value = rng.uniform(0.5, 1.5, shape)
        state[f"{prefix}.{TORCH_NAMES.get(leaf, leaf)}"] = torch.tensor(value, dtype=torch.float32)
        if leaf == "_variance":
            state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)
    state["fc.weight"] = torch.tensor(rng.normal(0, 0.01, (1008, 2048)), dtype=torch.float32)
    state["fc.bias"] = torch.zeros(1008)
    return state


@pytest.fixture(scope="module")
def ported_file(tmp_path_factory, monkeypatch_module):
    """Random weights saved where pytorch-fid's `load_state_dict_from_url` finds its cached file."""
    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    path = checkpoints / os.path.basename(pt_inception.FID_WEIGHTS_URL)
    torch.save(random_torch_state(), str(path))
    monkeypatch_module.setenv("TORCH_HOME", str(home))
    return str(path)


@pytest.fixture(scope="module")
def converted_file(ported_file, tmp_path_factory):
    """The random weights converted by tools/convert_fid_inception.py to .safetensors."""
    out = str(tmp_path_factory.mktemp("converted") / "fid_inception.safetensors")
    converter().convert(ported_file, out)
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def converter():
    """tools/convert_fid_inception.py as a module."""
    return load_script("tools/convert_fid_inception.py")


@pytest.mark.parametrize("fmt", ["safetensors", "pdparams"])
def test_converter_writes_loadable_weights(ported_file, tmp_path, fmt):
    out = str(tmp_path / f"fid_inception.{fmt}")
    converter().main([ported_file, out])
    state = fid_inception.load_state(out)
    reference = torch.load(ported_file, weights_only=True)
    np.testing.assert_array_equal(state["Mixed_7c.branch_pool.bn._variance"],
                                  reference["Mixed_7c.branch_pool.bn.running_var"].numpy())
    assert "fc.weight" not in state and len(state) == len(fid_inception.parameter_shapes()) == 470


def test_features_match_pytorch_fid(ported_file, converted_file):
    ours = fid_inception.FIDInceptionFeatures(converted_file)
    reference = pt_inception.InceptionV3([3]).eval()  # use_fid_inception=True; loads the cached random file
    rng = np.random.default_rng(1)
    for size in (64, 341):  # upsampled and downsampled to 299
        images = rng.integers(0, 256, (2, size, size + 8, 3), dtype=np.uint8)
        with torch.no_grad():
            x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
            expected = reference(x)[0].reshape(2, -1).numpy()
        got = ours(images)
        assert got.shape == (2, 2048) and expected.std() > 1e-3
        err = np.abs(got - expected).max() / np.abs(expected).max()
        assert err < 1e-4, (size, err)


def test_feature_spec_selects_the_fid_inception(converted_file, tmp_path, capsys):
    """`--features fid-inception:FILE` (tools/eval.py passes the spec to `load_feature_fn`); a missing file is an
    error naming it. (A full `score` run is not repeated here: the tool's FID path is tested with the toy features.)"""
    from ppflux_lightning.eval.evaluate import load_feature_fn
    from ppflux_lightning.eval.image_io import save_images

    net = load_feature_fn(f"fid-inception:{converted_file}")
    assert isinstance(net, fid_inception.FIDInceptionFeatures)
    with pytest.raises(ValueError, match="fid-inception:FILE"):
        load_feature_fn("fid_inception:x")
    tool = load_script("tools/eval.py")
    save_images(np.zeros((1, 8, 8, 3), np.uint8), str(tmp_path / "a"))
    (tmp_path / "prompts.txt").write_text("x\n")
    missing = str(tmp_path / "missing.safetensors")
    code = tool.main(["score", "--images", str(tmp_path / "a"), "--reference", str(tmp_path / "a"), "--prompts",
                      str(tmp_path / "prompts.txt"), "--features", f"fid-inception:{missing}", "--out",
                      str(tmp_path / "eval")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "missing.safetensors" in err and "Traceback" not in err


def test_frechet_distance_matches_pytorch_fid():
    rng = np.random.default_rng(0)
    dim = 64
    a = rng.normal(size=(400, dim)) @ rng.normal(size=(dim, dim)) / 8
    b = rng.normal(size=(300, dim)) @ rng.normal(size=(dim, dim)) / 8 + rng.normal(0, 0.3, dim)
    mu1, s1 = fid.feature_statistics(a)
    mu2, s2 = fid.feature_statistics(b)
    expected = fid_score.calculate_frechet_distance(mu1, s1, mu2, s2)
    assert abs(fid.frechet_distance(mu1, s1, mu2, s2) - expected) <= 1e-6 * expected
    # pytorch-fid's own statistics (np.mean, np.cov rowvar=False) are the ones we compute
    np.testing.assert_allclose(s1, np.cov(a, rowvar=False), rtol=1e-12)


def test_loading_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        fid_inception.FIDInceptionFeatures(str(tmp_path / "nowhere.safetensors"))
    foreign = str(tmp_path / "other.pdparams")
    paddle.save({"conv.weight": paddle.zeros([2, 2])}, foreign)
    with pytest.raises(ValueError, match="not the FID Inception network"):
        fid_inception.FIDInceptionFeatures(foreign)


def test_converter_reports_bad_input(tmp_path, capsys):
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"not a pickle")
    for args, needle in ([str(tmp_path / "missing.pth"), "x.safetensors"], "missing.pth"), \
                        ([str(bad), str(tmp_path / "x.safetensors")], "junk.pth"), \
                        ([str(bad), str(tmp_path / "x.bin")], "x.bin"):
        code = converter().main(args)
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error:") and needle in err and "Traceback" not in err, err
    assert not os.path.exists(tmp_path / "x.safetensors")

"""paddlenlp CLIP / T5 encoders loaded from HF folders (PyTorch layout, T5 sharded) against transformers."""

import json
import os
import shutil

import numpy as np
import paddle
import pytest
import torch
from tiny_reference import cached_reference
from transformers import CLIPTextModel, T5EncoderModel

from ppflux_lightning.models.text_encoders import load_clip_text_model, load_t5_encoder, save_text_encoder
from ppflux_lightning.utils.errors import CheckpointError, ConfigError
from ppflux_lightning.utils.safetensors_io import load_file, save_file


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return cached_reference(tmp_path_factory, "dev")


def token_ids(vocab, seed=0):
    ids = np.random.default_rng(seed).integers(0, vocab - 2, size=(2, 12))
    ids[:, -1] = vocab - 1  # CLIP pools at its end-of-text id (the largest id)
    return ids


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def clip_outputs(model, ids):
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            out = model(torch.from_numpy(ids))
        return out.last_hidden_state.numpy(), out.pooler_output.numpy()
    out = model(paddle.to_tensor(ids), return_dict=True)
    return out.last_hidden_state.astype("float32").numpy(), out.pooler_output.astype("float32").numpy()


def t5_output(model, ids):
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model(torch.from_numpy(ids)).last_hidden_state.numpy()
    return model(paddle.to_tensor(ids), return_dict=True).last_hidden_state.astype("float32").numpy()


def snapshot(folder):
    return {name: os.path.getmtime(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}


def test_clip_matches_transformers(reference):
    folder, ref = reference
    sub = os.path.join(folder, "text_encoder")
    before = snapshot(sub)
    ours = load_clip_text_model(sub)
    assert snapshot(sub) == before  # nothing converted or written next to the user's weights
    ids = token_ids(ref.text_encoder.config.vocab_size)
    (hidden, pooled), (ref_hidden, ref_pooled) = clip_outputs(ours, ids), clip_outputs(ref.text_encoder, ids)
    assert rel(hidden, ref_hidden) < 1e-4 and rel(pooled, ref_pooled) < 1e-4


def test_sharded_t5_matches_transformers_with_tied_embedding(reference):
    folder, ref = reference
    sub = os.path.join(folder, "text_encoder_2")
    assert os.path.isfile(os.path.join(sub, "model.safetensors.index.json"))
    before = snapshot(sub)
    ours = load_t5_encoder(sub)
    assert snapshot(sub) == before
    np.testing.assert_array_equal(ours.shared.weight.numpy(), ref.text_encoder_2.shared.weight.detach().numpy())
    ids = token_ids(ref.text_encoder_2.config.vocab_size, seed=1)
    assert rel(t5_output(ours, ids), t5_output(ref.text_encoder_2, ids)) < 1e-4


def test_saved_folders_load_in_transformers_and_back(reference, tmp_path):
    folder, ref = reference
    clip = load_clip_text_model(os.path.join(folder, "text_encoder"))
    t5 = load_t5_encoder(os.path.join(folder, "text_encoder_2"))
    save_text_encoder(clip, str(tmp_path / "clip"))
    save_text_encoder(t5, str(tmp_path / "t5"), max_shard_bytes=20_000)
    assert os.path.isfile(tmp_path / "t5" / "model.safetensors.index.json")
    ids = token_ids(ref.text_encoder.config.vocab_size)
    hf_clip = CLIPTextModel.from_pretrained(str(tmp_path / "clip")).eval()
    assert rel(clip_outputs(hf_clip, ids)[1], clip_outputs(ref.text_encoder, ids)[1]) < 1e-5
    hf_t5 = T5EncoderModel.from_pretrained(str(tmp_path / "t5")).eval()
    t5_ids = token_ids(ref.text_encoder_2.config.vocab_size, seed=2)
    assert rel(t5_output(hf_t5, t5_ids), t5_output(ref.text_encoder_2, t5_ids)) < 1e-5
    again = load_t5_encoder(str(tmp_path / "t5"))
    assert rel(t5_output(again, t5_ids), t5_output(t5, t5_ids)) < 1e-6


def test_bfloat16_load(reference):
    # Loading only: paddle 3.3.1's CPU build has no bf16 `add` kernel, so bf16 forward runs need a GPU.
    folder, ref = reference
    clip = load_clip_text_model(os.path.join(folder, "text_encoder"), dtype="bfloat16")
    t5 = load_t5_encoder(os.path.join(folder, "text_encoder_2"), dtype="bfloat16")
    for model in (clip, t5):
        assert all(p.dtype == paddle.bfloat16 for p in model.parameters())
    pairs = [
        (clip.text_model.transformer.layers[0].linear1.weight,
         ref.text_encoder.text_model.encoder.layers[0].mlp.fc1.weight.T),
        (t5.shared.weight, ref.text_encoder_2.shared.weight),
    ]
    for ours, theirs in pairs:
        expected = theirs.detach().to(torch.bfloat16).float().numpy()
        np.testing.assert_allclose(ours.astype("float32").numpy(), expected, rtol=1e-2, atol=1e-6)


def copy_folder(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def test_bad_folders(reference, tmp_path):
    folder, _ = reference
    clip_dir = copy_folder(os.path.join(folder, "text_encoder"), tmp_path / "clip")
    weights = os.path.join(clip_dir, "model.safetensors")
    tensors = load_file(weights)
    key = "text_model.final_layer_norm.weight"
    save_file({k: v for k, v in tensors.items() if k != key}, weights)
    with pytest.raises(CheckpointError, match="missing keys.*final_layer_norm"):
        load_clip_text_model(clip_dir)
    save_file({**tensors, "text_model.extra.weight": np.zeros(3, np.float32)}, weights)
    with pytest.raises(CheckpointError, match="unexpected keys.*text_model.extra.weight"):
        load_clip_text_model(clip_dir)
    os.remove(weights)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_clip_text_model(clip_dir)
    os.remove(os.path.join(clip_dir, "config.json"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_clip_text_model(clip_dir)
    with pytest.raises(ConfigError, match="float64"):
        load_clip_text_model(os.path.join(folder, "text_encoder"), dtype="float64")

    t5_dir = copy_folder(os.path.join(folder, "text_encoder_2"), tmp_path / "t5")
    with open(os.path.join(t5_dir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(t5_dir, "config.json"), "w") as f:
        json.dump({**config, "model_type": "bert"}, f)
    with pytest.raises(ConfigError, match="'bert'"):
        load_t5_encoder(t5_dir)
    with open(os.path.join(t5_dir, "config.json"), "w") as f:
        json.dump({**config, "relative_attention_max_distance": 64}, f)
    with pytest.raises(ConfigError, match="relative_attention_max_distance 64"):
        load_t5_encoder(t5_dir)
    with open(os.path.join(t5_dir, "config.json"), "w") as f:
        json.dump(config, f)
    shard = sorted(n for n in os.listdir(t5_dir) if n.startswith("model-"))[0]
    os.remove(os.path.join(t5_dir, shard))
    with pytest.raises(CheckpointError, match=shard):
        load_t5_encoder(t5_dir)

"""The training engine: resume equality, gradient accumulation, checkpoints, NaN stop, lr schedules, clipping,
config and data errors, and the tiny-pipeline run through tools/train.py."""

import json
import math
import os

import numpy as np
import paddle
import pytest
import yaml
from script_loader import load_script
from train_fixtures import build_cached_dataset, build_image_folder, build_pretrained, tiny_train_config

from ppflux_lightning.config import load_config
from ppflux_lightning.engine import checkpoint as ckpt
from ppflux_lightning.engine.optim import clip_grad_norm, lr_factor
from ppflux_lightning.engine.schema import DEFAULTS
from ppflux_lightning.engine.trainer import FINAL_LORA, Trainer, TrainingDiverged
from ppflux_lightning.lora import lora_state_dict
from ppflux_lightning.utils.errors import ConfigError
from ppflux_lightning.utils.safetensors_io import SafetensorsFile


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return str(build_pretrained(str(root / "pretrained"))), build_cached_dataset(str(root / "data"), count=8)


def load_tool(name):
    """Import tools/<name>.py by path (tools/ is not an installed package)."""
    return load_script(f"tools/{name}.py")


def lora_numpy(trainer):
    return {k: v.numpy().copy() for k, v in lora_state_dict(trainer.model).items()}


def test_resume_continues_the_exact_run(assets, tmp_path):
    pre, data = assets
    full = Trainer(tiny_train_config(pre, data, str(tmp_path / "a"), **{"train.max_steps": 6}))
    history = full.train()
    first = Trainer(tiny_train_config(pre, data, str(tmp_path / "b"), **{"train.max_steps": 4}))
    history_b = first.train()
    resumed = Trainer(tiny_train_config(pre, data, str(tmp_path / "b"), **{"train.max_steps": 6}), resume="latest")
    assert resumed.step == 4
    history_b += resumed.train()
    assert len(history) == len(history_b) == 6
    for a, b in zip(history, history_b):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], abs=1e-6), k
    la, lb = lora_numpy(full), lora_numpy(resumed)
    for k in la:
        np.testing.assert_allclose(lb[k], la[k], atol=1e-6, rtol=0)
    heads_a, heads_b = full.recipe.state_dict(), resumed.recipe.state_dict()
    for k in heads_a:
        np.testing.assert_allclose(heads_b[k].numpy(), heads_a[k].numpy(), atol=1e-6)
    # keep_last=2 with checkpoint_every=2: only the two newest remain; the final LoRA is in diffusers format.
    assert [s for s, _ in ckpt.list_checkpoints(str(tmp_path / "b"))] == [4, 6]
    lora_file = SafetensorsFile(os.path.join(str(tmp_path / "b"), FINAL_LORA))
    keys = lora_file.keys()
    assert keys and all(k.startswith("transformer.") and (".lora_A." in k or ".lora_B." in k) for k in keys)
    assert any(k.endswith("attn.to_q.lora_A.weight") for k in keys)


def test_gradient_accumulation_equals_a_larger_batch(assets, tmp_path):
    pre, data = assets
    big = Trainer(tiny_train_config(pre, data, str(tmp_path / "big"), **{"train.max_steps": 2}))
    big.train()
    acc = Trainer(tiny_train_config(pre, data, str(tmp_path / "acc"), **{
        "train.max_steps": 2, "train.batch_size": 1, "train.grad_accum_steps": 2}))
    acc.train()
    a, b = lora_numpy(big), lora_numpy(acc)
    for k in a:  # summation order differs; Adam amplifies it where a gradient is near its epsilon
        np.testing.assert_allclose(b[k], a[k], atol=1e-5, rtol=0)


def test_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(assets, tmp_path):
    pre, data = assets
    out = str(tmp_path / "nan")
    trainer = Trainer(tiny_train_config(pre, data, out, **{"train.max_steps": 6}))
    real = trainer.recipe.losses

    def poisoned(*args):
        losses = real(*args)
        if trainer.step == 3:
            losses["consistency"] = losses["consistency"] * float("nan")
        return losses

    trainer.recipe.losses = poisoned
    before = None
    with pytest.raises(TrainingDiverged, match="loss became nan at step 3"):
        trainer.train()
    assert trainer.step == 3
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [2]
    before = ckpt.load_checkpoint(ckpt.checkpoint_path(out, 2))[1]["lora"]
    assert all(np.isfinite(v).all() for v in before.values())
    assert not os.path.exists(os.path.join(out, FINAL_LORA))


def test_lr_schedules_by_hand():
    assert lr_factor(5, "constant") == 1.0
    assert [lr_factor(s, "warmup", warmup_steps=4) for s in (0, 1, 3, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert lr_factor(2, "cosine", warmup_steps=2, max_steps=12) == pytest.approx(1.0)
    assert lr_factor(7, "cosine", warmup_steps=2, max_steps=12) == pytest.approx(0.5)
    assert lr_factor(12, "cosine", warmup_steps=2, max_steps=12, min_ratio=0.1) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="'linear'"):
        lr_factor(0, "linear")


def test_clip_grad_norm_by_hand():
    a = paddle.create_parameter([2], "float32")
    b = paddle.create_parameter([1], "float32")
    (a * paddle.to_tensor([3.0, 0.0])).sum().backward()
    (b * paddle.to_tensor([4.0])).sum().backward()
    norm = clip_grad_norm([a, b], max_norm=1.0)
    assert float(norm) == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad.numpy(), [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), [0.8], rtol=1e-5)


def test_bad_config_key_and_missing_paths_are_named(assets, tmp_path):
    pre, data = assets
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"max_step": 3}}))
    with pytest.raises(ConfigError, match="did you mean 'train.max_steps'"):
        load_config(str(path), schema=DEFAULTS)
    with pytest.raises(FileNotFoundError, match="data.path not found: '/no/such/data'"):
        Trainer(tiny_train_config(pre, "/no/such/data", str(tmp_path / "o")))
    with pytest.raises(ConfigError, match="'model.pretrained' must be set"):
        Trainer(tiny_train_config(None, data, str(tmp_path / "o")))
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        Trainer(tiny_train_config(pre, data, str(tmp_path / "o")), resume=str(tmp_path))


def test_tiny_pipeline_run_skips_a_bad_record(tmp_path):
    """tools/train.py on the tiny pipeline with an image folder holding one unreadable image."""
    from ppflux_lightning.pipelines.tiny import build_tiny_pipeline

    main = load_tool("train").main
    pipe = build_tiny_pipeline(str(tmp_path / "pipeline"))
    images = build_image_folder(str(tmp_path / "images"), count=4, size=32, corrupt=(1,))
    out = str(tmp_path / "out")
    code = main(["-c", os.path.join(os.path.dirname(__file__), "..", "configs", "flux_lightning_tiny.yaml"),
                 "-o", f"model.pretrained={pipe}", "-o", f"data.path={images}", "-o", f"train.output_dir={out}",
                 "-o", "train.max_steps=2", "-o", "train.validate_every=2", "-o", "train.checkpoint_every=2"])
    assert code == 0
    state, tensors = ckpt.load_checkpoint(ckpt.checkpoint_path(out, 2))
    assert state["skipped_records"] >= 1 and math.isfinite(sum(float(v.sum()) for v in tensors["lora"].values()))
    assert os.path.isfile(os.path.join(out, FINAL_LORA)) and os.path.isfile(os.path.join(out, "config.yaml"))
    assert os.listdir(os.path.join(out, "logs"))  # VisualDL scalars and the validation grid
    assert main(["-c", os.path.join(os.path.dirname(__file__), "..", "configs", "flux_lightning_tiny.yaml"),
                 "-o", "train.max_step=1"]) == 2


# ---------------------------------------------------------------------- resuming across recipe/adapter changes
def _one_line_error(capsys, argv):
    capsys.readouterr()
    assert load_tool("train").main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot resume") and "\n" not in err and "Traceback" not in err
    return err


def _config_file(tmp_path, pre, data, out, **extra):
    cfg = tiny_train_config(pre, data, out, **{"train.max_steps": 2, **extra}).to_dict()
    path = tmp_path / f"cfg{len(list(tmp_path.glob('cfg*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_resuming_a_checkpoint_with_other_adapters_or_objectives_names_the_difference(assets, tmp_path, capsys):
    from ppflux_lightning.lora.adapters import DOUBLE_BLOCK_TARGETS

    pre, data = assets
    out = str(tmp_path / "run")
    old = _config_file(tmp_path, pre, data, out, **{"lora.target_modules": DOUBLE_BLOCK_TARGETS})
    assert load_tool("train").main(["-c", old]) == 0
    ckpt_dir = os.path.join(out, "checkpoint-2")
    # default (suffix) targets now also adapt the single block's attn.to_q/k/v
    err = _one_line_error(capsys, ["-c", _config_file(tmp_path, pre, data, out), "-r", ckpt_dir])
    assert "adapts 12 modules, this config 15" in err and "single_transformer_blocks.0.attn.to_k" in err
    # the same targets but the adversarial objective switched off
    err = _one_line_error(capsys, ["-c", _config_file(tmp_path, pre, data, out, **{
        "lora.target_modules": DOUBLE_BLOCK_TARGETS, "objectives.adversarial.enabled": False}), "-r", ckpt_dir])
    assert "only in the checkpoint: adversarial_d, adversarial_g" in err
    # a checkpoint written before the reference semantics (no recipe version in its state)
    state_file = os.path.join(ckpt_dir, ckpt.STATE_FILE)
    with open(state_file) as f:
        state = json.load(f)
    for key in ("recipe_version", "objectives"):
        state.pop(key)
    with open(state_file, "w") as f:
        json.dump(state, f)
    err = _one_line_error(capsys, ["-c", old, "-r", ckpt_dir])
    assert "recipe version 1" in err and "sigmas_prev[start]" in err
    assert "LoRA" not in err


def test_old_double_block_lora_files_keep_loading(tmp_path):
    """A LoRA file trained with the pre-suffix targets (double blocks only) loads and gives its own output."""
    from train_fixtures import tiny_config

    from ppflux_lightning.lora import add_lora, lora_layers
    from ppflux_lightning.lora.adapters import DOUBLE_BLOCK_TARGETS
    from ppflux_lightning.lora.formats import load_lora_weights, save_lora_weights
    from ppflux_lightning.models.flux_transformer import FluxTransformer2DModel

    paddle.seed(0)
    trained = FluxTransformer2DModel(tiny_config())
    base = {k: v.numpy() for k, v in trained.state_dict().items()}
    add_lora(trained, 4, 4, target_modules=DOUBLE_BLOCK_TARGETS)
    for layer in lora_layers(trained).values():
        layer.lora_B.set_value(paddle.randn(layer.lora_B.shape) * 0.1)
    path = str(tmp_path / "old_lora.safetensors")
    save_lora_weights(trained, path, format="diffusers")
    fresh = FluxTransformer2DModel(tiny_config())
    fresh.set_state_dict({k: paddle.to_tensor(v) for k, v in base.items()})
    load_lora_weights(fresh, path)
    assert sorted(lora_layers(fresh)) == sorted(lora_layers(trained))
    from train_fixtures import LATENT_CHANNELS, POOLED_DIM, TEXT_DIM

    x = paddle.randn([1, 16, 4 * LATENT_CHANNELS])
    ids = paddle.zeros([16, 3])
    kw = dict(encoder_hidden_states=paddle.randn([1, 3, TEXT_DIM]), pooled_projections=paddle.randn([1, POOLED_DIM]),
              timestep=paddle.to_tensor([0.5]), img_ids=ids, txt_ids=paddle.zeros([3, 3]),
              guidance=paddle.to_tensor([3.5]))
    with paddle.no_grad():
        np.testing.assert_allclose(fresh(x, **kw).numpy(), trained(x, **kw).numpy(), rtol=1e-5, atol=1e-6)


def test_optimizer_master_weights_round_trip_by_position():
    """bf16 parameters train with fp32 master weights (GPU only: no bf16 AdamW kernel on CPU); the checkpoint stores
    them by parameter position next to the moments, and loads them back under the new parameters' names."""
    from types import SimpleNamespace

    params = [SimpleNamespace(name="linear_7.w_0"), SimpleNamespace(name="linear_70.w_0")]
    m0, m1 = paddle.to_tensor([1.0, 2.0]), paddle.to_tensor([3.0])
    state = {"linear_7.w_0_moment1_0": paddle.to_tensor([0.5, 0.5]), "LR_Scheduler": {"last_epoch": 3},
             "master_weights": {"linear_7.w_0": m0, "linear_70.w_0": m1}}
    saved = ckpt.optimizer_state(SimpleNamespace(state_dict=lambda: state), params)
    assert sorted(saved) == ["p0/master_weight", "p0/moment1_0", "p1/master_weight"]
    loaded = {}
    fresh = [SimpleNamespace(name="linear_1.w_0"), SimpleNamespace(name="linear_2.w_0")]
    ckpt.load_optimizer_state(SimpleNamespace(set_state_dict=loaded.update), fresh, saved)
    assert sorted(loaded) == ["linear_1.w_0_moment1_0", "master_weights"]
    np.testing.assert_array_equal(loaded["master_weights"]["linear_2.w_0"].numpy(), [3.0])

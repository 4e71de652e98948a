"""A 2-process CPU (gloo) run through paddle.distributed.launch equals a 1-process run with the same global batch."""

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from train_fixtures import build_cached_dataset, build_pretrained, tiny_train_config

from ppflux_lightning.engine import checkpoint as ckpt
from ppflux_lightning.engine.trainer import Trainer
from ppflux_lightning.lora import lora_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_processes_equal_one(tmp_path):
    pre = build_pretrained(str(tmp_path / "pretrained"))
    data = build_cached_dataset(str(tmp_path / "data"), count=8)
    steps = 2  # one D step and one G step
    single = Trainer(tiny_train_config(pre, data, str(tmp_path / "one"), **{"train.max_steps": steps}))
    single.train()

    out = str(tmp_path / "two")
    cfg = tiny_train_config(pre, data, out, **{"train.max_steps": steps, "train.batch_size": 1})
    cfg_path = tmp_path / "two.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.to_dict()))
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
           str(tmp_path / "launch_logs"), os.path.join(ROOT, "tools", "train.py"), "-c", str(cfg_path)]
    result = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    log_dir = tmp_path / "launch_logs"
    logs = "".join((log_dir / f).read_text()[-2000:] for f in sorted(os.listdir(log_dir)))
    assert result.returncode == 0, result.stderr[-2000:] + logs

    state, tensors = ckpt.load_checkpoint(ckpt.checkpoint_path(out, steps))
    assert state["world_size"] == 2 and state["step"] == steps
    expect = {k: v.numpy() for k, v in lora_state_dict(single.model).items()}
    assert set(tensors["lora"]) == set(expect)
    for k, v in expect.items():
        np.testing.assert_allclose(tensors["lora"][k], v, atol=1e-5, rtol=0, err_msg=k)
    heads = {k: v.numpy() for k, v in single.recipe.state_dict().items()}
    for k, v in heads.items():
        np.testing.assert_allclose(tensors["objectives"][k], v, atol=1e-5, rtol=0, err_msg=k)
    assert np.abs(np.concatenate([v.ravel() for v in expect.values()])).max() > 0  # the runs did train


def test_batch_share_splits_a_global_batch_and_names_an_uneven_one(monkeypatch):
    from ppflux_lightning.engine import distributed

    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "3")
    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    assert distributed.batch_share(6) == slice(2, 4)
    with pytest.raises(ValueError, match="teacher batch_size 64 must divide evenly over 3 processes"):
        distributed.batch_share(64, "teacher batch_size")

"""Training checkpoints `output_dir/checkpoint-<step>/`: LoRA, objective state (D heads), one AdamW state per
group, the trainer state (step, RNG) and the resolved config, written atomically; keep-last-K pruning.

Optimizer states are stored by parameter position, not by Paddle's generated tensor names, so a checkpoint loads
into a freshly built trainer whatever names its parameters got.
"""

import json
import os
import pickle
import shutil

import numpy as np
import paddle

from ..utils.atomic import atomic_dir
from ..utils.errors import CheckpointError, abbreviate
from ..utils.files import read_json_object, read_pickle
from ..utils.safetensors_io import load_file, save_file
from .output_dir import (  # noqa: F401  (public here: the checkpoint API)
    STATE_FILE,
    checkpoint_path,
    is_training_output,
    list_checkpoints,
    prepare_output_dir,
    resolve_resume,
)

RNG_FILE = "rng_state.pkl"


def _numpy(state):
    return {k: np.ascontiguousarray(v.numpy() if isinstance(v, paddle.Tensor) else np.asarray(v))
            for k, v in state.items()}


def optimizer_state(optimizer, parameters):
    """Optimizer accumulators keyed `p<position>/<accumulator>` (Paddle keys them `<param name>_<accumulator>`), and
    the fp32 master weights of low-precision parameters as `p<position>/master_weight`."""
    names = sorted(((p.name, k) for k, p in enumerate(parameters)), key=lambda t: -len(t[0]))
    out = {}
    for key, value in optimizer.state_dict().items():
        if key == "master_weights":  # fp32 copies of bf16/fp16 parameters (multi_precision), keyed by param name
            by_name = dict(names)
            for name, tensor in value.items():
                if name not in by_name:
                    raise CheckpointError(f"master weight {name!r} belongs to no trained parameter")
                out[f"p{by_name[name]}/master_weight"] = tensor
            continue
        if not isinstance(value, paddle.Tensor):
            continue
        owner = next(((n, k) for n, k in names if key.startswith(n + "_")), None)
        if owner is None:
            raise CheckpointError(f"optimizer state {key!r} belongs to no trained parameter")
        out[f"p{owner[1]}/{key[len(owner[0]) + 1:]}"] = value
    return _numpy(out)


def load_optimizer_state(optimizer, parameters, state):
    named = {}
    for key, value in state.items():
        pos, acc = key.split("/", 1)
        k = int(pos[1:])
        if k >= len(parameters):
            raise CheckpointError(f"optimizer state for parameter {k}, but only {len(parameters)} are trained")
        if acc == "master_weight":
            named.setdefault("master_weights", {})[parameters[k].name] = paddle.to_tensor(value)
        else:
            named[f"{parameters[k].name}_{acc}"] = paddle.to_tensor(value)
    optimizer.set_state_dict(named)


def check_resumable(path, state, tensors, lora_shapes, objectives, version, changes):
    """Raise a one-line CheckpointError naming what differs when checkpoint `path` was trained with other adapters
    (`lora_shapes`: {key: shape} of this run's LoRA) or other objectives (`objectives`: names of this run's enabled
    objectives; `version`: this code's recipe version, `changes`: {older version: what changed since})."""
    problems = []
    saved = {k: tuple(v.shape) for k, v in tensors.get("lora", {}).items()}
    modules = lambda keys: sorted({k.rsplit(".", 1)[0] for k in keys})
    new, gone = modules(set(lora_shapes) - set(saved)), modules(set(saved) - set(lora_shapes))
    if new or gone:
        problems.append(
            f"its LoRA adapts {len(modules(saved))} modules, this config {len(modules(lora_shapes))} ("
            + "; ".join(p for p in (new and f"only here: {', '.join(abbreviate(new, 3))}",
                                    gone and f"only in the checkpoint: {', '.join(abbreviate(gone, 3))}") if p)
            + "): set lora.target_modules to the run's targets (before suffix matching the default was "
              "ppflux_lightning.lora.adapters.DOUBLE_BLOCK_TARGETS)")
    else:
        shapes = sorted(k for k in saved if saved[k] != tuple(lora_shapes[k]))
        if shapes:
            k = shapes[0]
            problems.append(f"LoRA tensor {k} has shape {list(saved[k])} in the checkpoint, {list(lora_shapes[k])} "
                            "here (lora.rank differs)")
    old = int(state.get("recipe_version", 1))
    if old != version:
        problems.append(f"its objectives are recipe version {old}, this code's are version {version} "
                        f"({changes.get(old, 'see docs/training.md')})")
    elif "objectives" in state and sorted(state["objectives"]) != sorted(objectives):
        only_ckpt = sorted(set(state["objectives"]) - set(objectives))
        only_here = sorted(set(objectives) - set(state["objectives"]))
        problems.append("its enabled objectives differ (" + "; ".join(
            p for p in (only_ckpt and f"only in the checkpoint: {', '.join(only_ckpt)}",
                        only_here and f"only here: {', '.join(only_here)}") if p) + ")")
    if problems:
        raise CheckpointError(f"cannot resume {path!r}: " + "; ".join(problems) + "; or start a new run")


def save_checkpoint(path, tensors, trainer_state, config_text=None):
    """Write `{file stem: {key: tensor}}` as safetensors files plus the JSON trainer state, atomically."""
    with atomic_dir(path, overwrite=True, ours=STATE_FILE) as tmp:
        for stem, state in tensors.items():
            save_file(_numpy(state), os.path.join(tmp, stem + ".safetensors"))
        with open(os.path.join(tmp, RNG_FILE), "wb") as f:  # GeneratorState pickles; paddle.save cannot load it
            pickle.dump({"paddle": paddle.get_rng_state(), "numpy": np.random.get_state()}, f)
        if config_text is not None:
            with open(os.path.join(tmp, "config.yaml"), "w", encoding="utf-8") as f:
                f.write(config_text)
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump(trainer_state, f, indent=2)


def load_checkpoint(path):
    """-> (trainer_state dict, {file stem: {key: numpy array}}); restores the RNG states."""
    state_path = os.path.join(path, STATE_FILE)
    if not os.path.isfile(state_path):
        raise CheckpointError(f"{path!r} is not a checkpoint (no {STATE_FILE})")
    state = read_json_object(state_path, "trainer state")
    tensors = {name[: -len(".safetensors")]: load_file(os.path.join(path, name))
               for name in sorted(os.listdir(path)) if name.endswith(".safetensors")}
    rng_path = os.path.join(path, RNG_FILE)
    if os.path.isfile(rng_path):
        rng = read_pickle(rng_path, "RNG state")
        if not isinstance(rng, dict) or not {"paddle", "numpy"} <= set(rng):
            raise CheckpointError(f"RNG state {rng_path!r} is not one this trainer wrote")
        paddle.set_rng_state(rng["paddle"])
        np.random.set_state(rng["numpy"])
    return state, tensors


def prune_checkpoints(output_dir, keep_last):
    """Remove all but the newest `keep_last` checkpoints (0 keeps everything)."""
    if keep_last <= 0:
        return
    for _, path in list_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)

"""Paddle Inference predictors for exported graphs: new IR and executor, CINN when asked for and built in, GPU
placement and precision when on a GPU, memory optimisation."""

import os

import numpy as np
import paddle
from paddle import inference

from ..utils.errors import CheckpointError
from .export import GRAPH_PREFIX, cinn_requested

PRECISIONS = {
    "float32": inference.PrecisionType.Float32,
    "float16": inference.PrecisionType.Half,
    "bfloat16": inference.PrecisionType.Bfloat16,
}


def cinn_status():
    """(use CINN?, message or None). The message is the one line to print when CINN was asked for but is absent."""
    if not cinn_requested():
        return False, None
    if not paddle.is_compiled_with_cinn():
        return False, "FLAGS_use_cinn is set but this Paddle build has no CINN (paddle.is_compiled_with_cinn() is " \
                      "False): running without it"
    return True, None


def check_device(device):
    """'cpu' or 'gpu' / 'gpu:N' -> (kind, device id). A GPU request without CUDA or without a visible GPU fails."""
    kind, _, index = str(device).partition(":")
    if kind not in ("cpu", "gpu"):
        raise ValueError(f"unknown device {device!r}; choose 'cpu', 'gpu' or 'gpu:N'")
    if kind == "cpu":
        return "cpu", 0
    if not paddle.is_compiled_with_cuda():
        raise ValueError(f"device {device!r} requested but this Paddle build has no CUDA (install paddlepaddle-gpu)")
    count = paddle.device.cuda.device_count()
    device_id = int(index or 0)
    if device_id >= count:
        raise ValueError(f"device {device!r} requested but {count} GPU(s) are visible")
    return "gpu", device_id


def make_config(folder, device="cpu", precision="float32", use_cinn=False, onednn=True, threads=None):
    """A `paddle.inference.Config` for the graph in `folder` (model.json + model.pdiparams)."""
    prefix = os.path.join(folder, GRAPH_PREFIX)
    config = inference.Config(prefix + ".json", prefix + ".pdiparams")
    config.enable_new_ir(True)
    config.enable_new_executor(True)
    config.enable_memory_optim()
    config.disable_glog_info()
    kind, device_id = check_device(device)
    if kind == "gpu":
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}")
        config.enable_use_gpu(256, device_id, PRECISIONS[precision])
    else:
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(int(threads or os.environ.get("OMP_NUM_THREADS", 0) or os.cpu_count()))
        if onednn:
            config.enable_onednn()
            # Paddle 3.3's inplace pass lets a oneDNN activation overwrite a tensor that is still read (it turned
            # concat([cos(a), sin(a)]) into sin(cos(a)) twice in the timestep embedding): run without it.
            config.delete_pass("inplace_pass")
        else:
            config.disable_onednn()
    if use_cinn:
        config.enable_cinn()
    return config


class StaticGraph:
    """One exported graph behind a predictor: `graph(name=array, ...)` -> list of numpy outputs."""

    def __init__(self, folder, **config_kwargs):
        self.folder = folder
        config = make_config(folder, **config_kwargs)
        try:
            self.predictor = inference.create_predictor(config)
        except (RuntimeError, OSError, ValueError) as e:  # Paddle reports a truncated .pdiparams as RuntimeError
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"cannot load the exported graph in {folder!r}: truncated or corrupt "
                                  f"{GRAPH_PREFIX}.json/.pdiparams ({first})") from None
        self.input_names = self.predictor.get_input_names()
        self.output_names = self.predictor.get_output_names()

    def __call__(self, **inputs):
        missing = sorted(set(self.input_names) - set(inputs))
        extra = sorted(set(inputs) - set(self.input_names))
        if missing or extra:
            raise ValueError(f"graph {self.folder!r} takes inputs {self.input_names}; missing {missing}, extra {extra}")
        for name in self.input_names:
            array = np.ascontiguousarray(inputs[name])
            handle = self.predictor.get_input_handle(name)
            handle.reshape(list(array.shape))
            handle.copy_from_cpu(array)
        self.predictor.run()
        return [self.predictor.get_output_handle(n).copy_to_cpu() for n in self.output_names]

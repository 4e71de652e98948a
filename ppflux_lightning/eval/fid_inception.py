"""The standard FID Inception network in Paddle: the TF "inception-2015-12-05" graph that pytorch-fid and clean-fid
port, so FIDs computed with it can be set beside published numbers.

It is torchvision's InceptionV3 trunk with the FID graph's differences: the average pools of the A, C and first E
blocks leave padding out of the mean, the last E block max-pools its pool branch, and the classifier has 1008 classes
(unused here: the features are the 2048-d global average pool). Inputs in [0, 1] are resized bilinearly to 299 and
scaled to [-1, 1], as pytorch-fid's `InceptionV3([3])` does. Parameter names follow torchvision's (`Mixed_5b.
branch1x1.conv.weight`, ...) with Paddle's batch-norm names, so converting the ported `pt_inception-2015-12-05-*.pth`
file is a rename (`tools/convert_fid_inception.py`).
"""

import functools
import os

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..utils.errors import CheckpointError, abbreviate
from .features import to_nchw

INPUT_SIZE = 299
FEATURE_DIM = 2048
_BN_NAMES = {"running_mean": "_mean", "running_var": "_variance"}  # torch batch-norm buffer -> Paddle name


class ConvBN(nn.Layer):
    """Convolution without bias, batch norm (eps 1e-3, as the TF graph), ReLU: torchvision's `BasicConv2d`."""

    def __init__(self, cin, cout, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, kernel_size, stride=stride, padding=padding, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout, epsilon=1e-3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_without_padding(x):
    """3x3 stride-1 average whose border windows divide by their in-image pixel count (TF's 'SAME' average pool)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, exclusive=True)


class BlockA(nn.Layer):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x):
        return paddle.concat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool_without_padding(x)),
        ], axis=1)


class BlockB(nn.Layer):
    """35 -> 17 reduction: strided 3x3, strided double 3x3, max pool."""

    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        return paddle.concat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], axis=1)


class BlockC(nn.Layer):
    """17x17 block with factorised 7x7 convolutions (1x7 and 7x1)."""

    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        dbl = x
        for i in range(1, 6):
            dbl = getattr(self, f"branch7x7dbl_{i}")(dbl)
        return paddle.concat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(_avg_pool_without_padding(x)),
        ], axis=1)


class BlockD(nn.Layer):
    """17 -> 8 reduction: 1x1 + strided 3x3, 1x1 + 1x7 + 7x1 + strided 3x3, max pool."""

    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return paddle.concat([self.branch3x3_2(self.branch3x3_1(x)), b7,
                              F.max_pool2d(x, kernel_size=3, stride=2)], axis=1)


class BlockE(nn.Layer):
    """8x8 block with split 1x3/3x1 outputs; `max_pool` selects the FID graph's max-pooled branch (last block)."""

    def __init__(self, cin, max_pool=False):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool \
            else _avg_pool_without_padding(x)
        return paddle.concat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
            self.branch_pool(pooled),
        ], axis=1)


class FIDInceptionV3(nn.Layer):
    """The FID Inception trunk: images `[N, 3, H, W]` in [0, 1] -> 2048-d pool features `[N, 2048]`."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = BlockA(192, 32)
        self.Mixed_5c = BlockA(256, 64)
        self.Mixed_5d = BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, 128)
        self.Mixed_6c = BlockC(768, 160)
        self.Mixed_6d = BlockC(768, 160)
        self.Mixed_6e = BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280)
        self.Mixed_7c = BlockE(2048, max_pool=True)

    def forward(self, x):
        x = F.interpolate(x, size=[INPUT_SIZE, INPUT_SIZE], mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(axis=[2, 3])


def from_torch_names(state):
    """The ported PyTorch state dict (name -> array) in this module's names: batch-norm buffers renamed, the
    classifier (`fc.*`) and `num_batches_tracked` counters dropped."""
    out = {}
    for name, value in state.items():
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue
        prefix, _, leaf = name.rpartition(".")
        out[f"{prefix}.{_BN_NAMES.get(leaf, leaf)}" if prefix else name] = value
    return out


@functools.lru_cache(maxsize=1)
def parameter_shapes():
    """Name -> shape of every tensor of the network (its state dict), computed once."""
    return {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items()}


def check_state(state, source):
    """Raise `CheckpointError` naming `source` unless `state` holds exactly the network's tensors, shapes matching."""
    expected = parameter_shapes()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise CheckpointError(f"{source} is not the FID Inception network: missing {abbreviate(missing, 3)}, "
                              f"unexpected {abbreviate(unexpected, 3)}")
    for name, shape in expected.items():
        if tuple(np.shape(state[name])) != shape:
            raise CheckpointError(f"{source}: {name} has shape {tuple(np.shape(state[name]))}, expected {shape}")


def load_state(path):
    """Weights from a `.pdparams` or `.safetensors` file written by `tools/convert_fid_inception.py`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FID Inception weights not found: {path} (no download is attempted; convert a local "
                                "pt_inception-2015-12-05-*.pth with tools/convert_fid_inception.py)")
    if path.endswith(".safetensors"):
        from ..utils.safetensors_io import load_file

        state = load_file(path)
    elif path.endswith(".pdparams"):
        state = {k: np.asarray(v) for k, v in paddle.load(path, return_numpy=True).items()}
    else:
        raise ValueError(f"FID Inception weights must be a .pdparams or .safetensors file, got {path}")
    check_state(state, path)
    return state


class FIDInceptionFeatures:
    """Callable FID features: images `[N, H, W, 3]` (uint8 or float in [0, 1]) -> numpy `[N, 2048]`."""

    def __init__(self, weights_path):
        state = load_state(weights_path)
        self.model = FIDInceptionV3()
        self.model.set_state_dict({k: paddle.to_tensor(np.asarray(v, np.float32)) for k, v in state.items()})
        self.model.eval()

    @paddle.no_grad()
    def __call__(self, images):
        return self.model(to_nchw(images)).numpy()

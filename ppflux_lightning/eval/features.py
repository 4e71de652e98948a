"""Feature networks for FID: InceptionV3 (paddle.vision, local ImageNet weights). The toy world's own feature network
is `toy.features`.

Every feature network is a callable: images `[N, H, W, 3]` (uint8 or float in [0, 1]) -> numpy `[N, D]`.
"""

import os

import numpy as np
import paddle
import paddle.nn.functional as F

from ..utils.errors import CheckpointError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # PaddleClas InceptionV3 eval transform (scale 1/255, then mean/std)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_nchw(images):
    """`[N, H, W, 3]` uint8 or float in [0, 1] -> float32 paddle tensor `[N, 3, H, W]` in [0, 1]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3], got shape {images.shape}")
    images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    return paddle.to_tensor(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


class InceptionFeatures:
    """2048-d pool features of paddle.vision's InceptionV3, weights read from a local `.pdparams` file.

    Note: these are PaddleClas ImageNet weights, not the TF-ported weights of pytorch-fid, so absolute FID values
    are comparable between runs of this tool, not with numbers computed by other FID implementations.
    """

    def __init__(self, weights_path, resize=299):
        from paddle.vision.models import InceptionV3

        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f"InceptionV3 weights not found: {weights_path} (no download is attempted; pass "
                                    "the path of a local paddle.vision inception_v3 .pdparams file)")
        if resize < 75:
            raise ValueError(f"InceptionV3 needs inputs of at least 75 px, got resize={resize}")
        self.resize = resize
        self.model = InceptionV3(num_classes=0, with_pool=True)
        state = {k: v for k, v in paddle.load(weights_path).items() if not k.startswith("fc.")}
        missing = sorted(set(self.model.state_dict()) - set(state))
        if missing:
            raise CheckpointError(f"{weights_path} is not an InceptionV3 state dict: {len(missing)} missing keys, "
                                  f"first {missing[0]!r}")
        self.model.set_state_dict(state)
        self.model.eval()

    @paddle.no_grad()
    def __call__(self, images):
        x = F.interpolate(to_nchw(images), size=[self.resize, self.resize], mode="bilinear", align_corners=False)
        mean = paddle.to_tensor(IMAGENET_MEAN, dtype="float32").reshape([1, 3, 1, 1])
        std = paddle.to_tensor(IMAGENET_STD, dtype="float32").reshape([1, 3, 1, 1])
        return self.model((x - mean) / std).reshape([x.shape[0], -1]).numpy()

"""Feature networks for FID: InceptionV3 (paddle.vision, local ImageNet weights) for real images, and a small
classifier trained on ground-truth toy-task images whose penultimate layer serves the toy world.

Every feature network is a callable: images `[N, H, W, 3]` (uint8 or float in [0, 1]) -> numpy `[N, D]`.
"""

import json
import os

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from tqdm import tqdm

from ..toy import task
from ..utils.atomic import atomic_file
from ..utils.errors import CheckpointError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # PaddleClas InceptionV3 eval transform (scale 1/255, then mean/std)
IMAGENET_STD = (0.229, 0.224, 0.225)

TASK_FEATURES_WEIGHTS = "task_features.pdparams"
TASK_FEATURES_CONFIG = "task_features.json"


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


class TaskClassifier(nn.Layer):
    """A small CNN reading the 3x3 grid: per cell, empty or one of colour x shape.

    The hidden vector before the per-cell heads is the feature vector used for the toy world's FID.
    """

    def __init__(self, width=16, feature_dim=128):
        super().__init__()
        self.num_classes = 1 + len(task.COLORS) * len(task.SHAPES)
        self.body = nn.Sequential(  # three stride-2 convs, then one 3x3 pool window per grid cell
            nn.Conv2D(3, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2D(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2D(2 * width, 4 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2D(3),
        )
        self.features = nn.Linear(4 * width * 9, feature_dim)
        self.heads = nn.Linear(feature_dim, 9 * self.num_classes)

    def embed(self, x):
        """Penultimate features `[N, feature_dim]` of images `[N, 3, H, W]` in [0, 1]."""
        return F.relu(self.features(self.body(x * 2 - 1).flatten(1)))

    def forward(self, x):
        return self.heads(self.embed(x)).reshape([x.shape[0], 9, self.num_classes])


def cell_labels(prompt):
    """Class per grid cell (row-major) of a task caption: 0 = empty, else 1 + colour index * 3 + shape index."""
    labels = [0] * 9
    colors = list(task.COLORS)
    for obj in task.parse_caption(prompt).objects:
        row, col = task.POSITIONS[obj.position]
        labels[3 * row + col] = 1 + colors.index(obj.color) * len(task.SHAPES) + task.SHAPES.index(obj.shape)
    return labels


def train_task_features(out_dir, image_size=task.IMAGE_SIZE, steps=500, batch_size=64, lr=3e-3, seed=0,
                        width=16, feature_dim=128, noise=0.05, eval_images=512):
    """Train the task classifier on freshly rendered ground-truth images and save it into `out_dir`.

    Light Gaussian pixel noise (sigma drawn from [0, `noise`]) keeps its features meaningful on generated images.
    Returns the cell accuracy on `eval_images` clean images drawn with a seed the training batches do not use.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    paddle.seed(seed)
    rng = np.random.default_rng(seed)
    model = TaskClassifier(width, feature_dim)
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(lr, steps)
    optimizer = paddle.optimizer.AdamW(learning_rate=schedule, parameters=model.parameters(), weight_decay=1e-4)
    model.train()
    for step in tqdm(range(steps), desc="task features"):
        images, prompts = task.sample_dataset(batch_size, size=image_size, seed=seed + 1000 + step, split="all")
        x = images.astype(np.float32) / 255.0
        x = x + rng.normal(size=x.shape).astype(np.float32) * rng.uniform(0, noise, size=(len(x), 1, 1, 1))
        logits = model(to_nchw(np.clip(x, 0, 1)))
        labels = paddle.to_tensor([cell_labels(p) for p in prompts], dtype="int64")
        loss = F.cross_entropy(logits.reshape([-1, model.num_classes]), labels.reshape([-1]))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        schedule.step()
    model.eval()
    accuracy = task_cell_accuracy(model, *task.sample_dataset(eval_images, size=image_size, seed=seed, split="all"))
    os.makedirs(out_dir, exist_ok=True)
    with atomic_file(os.path.join(out_dir, TASK_FEATURES_WEIGHTS)) as tmp:
        paddle.save(model.state_dict(), tmp)
    config = {"image_size": image_size, "width": width, "feature_dim": feature_dim, "steps": steps, "seed": seed,
              "cell_accuracy": accuracy}
    with atomic_file(os.path.join(out_dir, TASK_FEATURES_CONFIG)) as tmp, open(tmp, "w") as f:
        json.dump(config, f, indent=2)
    return accuracy


@paddle.no_grad()
def task_cell_accuracy(model, images, prompts):
    """Fraction of grid cells the classifier labels right (empty, or the right colour and shape)."""
    predicted = model(to_nchw(images)).argmax(-1).numpy()
    return float((predicted == np.asarray([cell_labels(p) for p in prompts])).mean())


class TaskFeatures:
    """Penultimate features of the trained toy-task classifier; images are resized to its training size."""

    def __init__(self, folder):
        weights, config_path = (os.path.join(folder, n) for n in (TASK_FEATURES_WEIGHTS, TASK_FEATURES_CONFIG))
        for path in (weights, config_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"toy feature network file not found: {path} (train it with "
                                        "ppflux_lightning.eval.features.train_task_features)")
        with open(config_path) as f:
            self.config = json.load(f)
        self.model = TaskClassifier(self.config["width"], self.config["feature_dim"])
        self.model.set_state_dict(paddle.load(weights))
        self.model.eval()

    @paddle.no_grad()
    def __call__(self, images):
        x = to_nchw(images)
        size = self.config["image_size"]
        if tuple(x.shape[2:]) != (size, size):
            x = F.interpolate(x, size=[size, size], mode="bilinear", align_corners=False)
        return self.model.embed(x).numpy()

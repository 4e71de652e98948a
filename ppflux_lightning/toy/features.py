"""The toy world's FID feature network: a small CNN trained on ground-truth task images to label every grid cell
(empty, or colour x shape); its penultimate layer is the feature vector of the toy world's FID-to-teacher.

A feature network is a callable: images `[N, H, W, 3]` (uint8 or float in [0, 1]) -> numpy `[N, D]`, so
`eval.fid.extract_features` takes it like the Inception network.
"""

import json
import os

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from tqdm import tqdm

from ..eval.features import to_nchw
from ..utils.atomic import atomic_file
from . import task

TASK_FEATURES_WEIGHTS = "task_features.pdparams"
TASK_FEATURES_CONFIG = "task_features.json"


class TaskClassifier(nn.Layer):
    """Per grid cell: empty or one of colour x shape. The hidden vector before the cell heads is the FID feature."""

    def __init__(self, width=16, feature_dim=128, grid=task.GRID):
        super().__init__()
        self.grid = grid
        self.num_classes = 1 + len(task.COLORS) * len(task.SHAPES)
        self.body = nn.Sequential(  # three stride-2 convs, then one pool window per grid cell
            nn.Conv2D(3, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2D(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2D(2 * width, 4 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2D(2 * grid),
        )
        self.features = nn.Linear(4 * width * (2 * grid) ** 2, feature_dim)
        self.heads = nn.Linear(feature_dim, grid * grid * self.num_classes)

    def embed(self, x):
        """Penultimate features `[N, feature_dim]` of images `[N, 3, H, W]` in [0, 1]."""
        return F.relu(self.features(self.body(x * 2 - 1).flatten(1)))

    def forward(self, x):
        return self.heads(self.embed(x)).reshape([x.shape[0], self.grid * self.grid, self.num_classes])


def cell_labels(scene):
    """Class per grid cell (row-major) of a scene: 0 = empty, else 1 + colour index * shapes + shape index."""
    labels = [0] * task.GRID ** 2
    colors = list(task.COLORS)
    for obj in scene.objects:
        row, col = task.POSITIONS[obj.position]
        labels[task.GRID * row + col] = 1 + colors.index(obj.color) * len(task.SHAPES) + task.SHAPES.index(obj.shape)
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
        images, _, scenes = task.sample_dataset(batch_size, size=image_size, seed=seed + 1000 + step, split="all",
                                                return_scenes=True)
        x = images.astype(np.float32) / 255.0
        x = x + rng.normal(size=x.shape).astype(np.float32) * rng.uniform(0, noise, size=(len(x), 1, 1, 1))
        logits = model(to_nchw(np.clip(x, 0, 1)))
        labels = paddle.to_tensor([cell_labels(s) for s in scenes], dtype="int64")
        loss = F.cross_entropy(logits.reshape([-1, model.num_classes]), labels.reshape([-1]))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        schedule.step()
    model.eval()
    images, _, scenes = task.sample_dataset(eval_images, size=image_size, seed=seed, split="all", return_scenes=True)
    accuracy = task_cell_accuracy(model, images, scenes)
    os.makedirs(out_dir, exist_ok=True)
    with atomic_file(os.path.join(out_dir, TASK_FEATURES_WEIGHTS)) as tmp:
        paddle.save(model.state_dict(), tmp)
    config = {"image_size": image_size, "width": width, "feature_dim": feature_dim, "grid": task.GRID,
              "steps": steps, "seed": seed, "cell_accuracy": accuracy}
    with atomic_file(os.path.join(out_dir, TASK_FEATURES_CONFIG)) as tmp, open(tmp, "w") as f:
        json.dump(config, f, indent=2)
    return accuracy


@paddle.no_grad()
def task_cell_accuracy(model, images, scenes):
    """Fraction of grid cells the classifier labels right (empty, or the right colour and shape)."""
    predicted = model(to_nchw(images)).argmax(-1).numpy()
    return float((predicted == np.asarray([cell_labels(s) for s in scenes])).mean())


class TaskFeatures:
    """Penultimate features of the trained toy-task classifier; images are resized to its training size."""

    def __init__(self, folder):
        weights, config_path = (os.path.join(folder, n) for n in (TASK_FEATURES_WEIGHTS, TASK_FEATURES_CONFIG))
        for path in (weights, config_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"toy feature network file not found: {path} (train it with "
                                        "ppflux_lightning.toy.features.train_task_features)")
        with open(config_path) as f:
            self.config = json.load(f)
        if self.config.get("grid", 3) != task.GRID:
            raise ValueError(f"{folder} holds a feature network for a {self.config.get('grid', 3)}x"
                             f"{self.config.get('grid', 3)} grid; this task has {task.GRID}x{task.GRID}: retrain it")
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


def load_feature_spec(spec, train_steps=500, image_size=None):
    """A FID feature network from `task:FOLDER` (this network, trained into FOLDER first when it holds none) or any
    spec `eval.evaluate.load_feature_fn` takes (`inception:FILE.pdparams`)."""
    from ..eval.evaluate import load_feature_fn

    kind, sep, path = spec.partition(":")
    if kind != "task" or not sep:
        return load_feature_fn(spec)
    if not path:
        raise ValueError(f"feature network must be task:FOLDER or inception:FILE, got {spec!r}")
    return load_task_features(path, train_steps, image_size=image_size)


def load_task_features(folder, train_steps=500, image_size=None, seed=0):
    """The toy FID feature network in `folder`, trained there first when the folder holds none."""
    if not os.path.isfile(os.path.join(folder, TASK_FEATURES_WEIGHTS)):
        print(f"training the toy feature network for FID into {folder!r}", flush=True)
        train_task_features(folder, steps=train_steps, seed=seed, **({"image_size": image_size} if image_size else {}))
    return TaskFeatures(folder)

"""Read a toy-task image back: which objects it shows, and whether it is a clean scene.

Every pixel is one of three kinds: *palette* (within `PALETTE_DISTANCE` of one of the task's colours), *background*
(grey and not bright, as every background the task draws, or dark in every channel) or *ambiguous* (anything
else: anti-aliased edges, blurred edges, half-transparent ghosts, mixed colours). Palette pixels form 8-connected
components; a component large enough to be an object is read as colour (majority), cell (centroid) and shape (best
intersection-over-union with the three shape templates fitted to its centroid and area). A clean image has only the
anti-aliased rim of each object as ambiguous pixels, one colour per object, a shape that fits one template far
better than the others, and no stray palette specks; blends of two scenes and blurred scenes fail these tests (see
`tests/test_toy.py`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from . import task

PALETTE_DISTANCE = 70.0  # RGB distance (0-255) within which a pixel counts as a palette colour (~72 % coverage)
BACKGROUND_MAX_CHROMA = 50.0  # max - min channel of a background pixel (the task draws <= 14; noise adds some)
BACKGROUND_MAX_VALUE = 135.0  # brightest channel of a background pixel (the task draws <= ~110)
# Pixels no brighter than this in every channel count as background whatever their hue: the toy VAE's dark ringing
# and colour fringes around objects (a decoder artefact any sampler in its latent space inherits), never a palette
# colour, and at most the faint outer tail of a blend or blur (their middle stays brighter).
DARK_MAX_VALUE = 90.0
MIN_OBJECT_PIXELS = 24  # smaller palette components are specks (counted as ghost pixels)
MIN_COLOR_PURITY = 0.95  # share of an object's pixels in its majority colour
MIN_SHAPE_IOU = 0.80  # best template fit of a recognisable shape
MIN_SHAPE_MARGIN = 0.04  # ... and how much better than the second-best template
MAX_RIM_RATIO = 1.1  # ambiguous pixels per boundary pixel of the objects (a sharp render: ~0.3, blur 1.5 px: ~2.3)
RIM_SLACK = 6  # ambiguous pixels allowed on top (a few noisy pixels)
SIZE_RANGE = (0.5, 1.6)  # object area relative to the task's smallest / largest shape


@dataclass(frozen=True)
class Detection:
    """One object found in an image."""

    shape: str
    color: str
    position: str
    pixels: int
    purity: float  # share of its pixels in `color`
    shape_iou: float  # IoU of the best template
    shape_margin: float  # best IoU minus the second best
    boundary: int  # pixels of the component with a non-component 4-neighbour

    @property
    def clean(self) -> bool:
        """One palette colour, a recognisable shape and a plausible size."""
        return not self.failures()

    def failures(self) -> tuple:
        """Why the object is not clean: any of "colour" (mixed), "shape" (no template fits, or two fit alike),
        "size"; empty when it is clean."""
        out = []
        if self.purity < MIN_COLOR_PURITY:
            out.append("colour")
        if self.shape_iou < MIN_SHAPE_IOU or self.shape_margin < MIN_SHAPE_MARGIN:
            out.append("shape")
        if not _size_ok(self.pixels):
            out.append("size")
        return tuple(out)


@dataclass(frozen=True)
class Reading:
    """Everything the detector reads from one image."""

    objects: tuple  # Detection per object-sized palette component
    ambiguous: int  # pixels that are neither palette nor background
    specks: int  # palette pixels in components too small to be objects
    size: int  # image side in pixels (sizes scale with its square)

    def ghost_pixels(self) -> int:
        """Ambiguous and speck pixels beyond the anti-aliased rims of the objects."""
        rim = MAX_RIM_RATIO * sum(d.boundary for d in self.objects) + RIM_SLACK * (self.size / task.IMAGE_SIZE) ** 2
        return max(0, int(round(self.ambiguous + self.specks - rim)))

    def valid(self, count: int | None = None) -> bool:
        """A clean scene: 1-2 (or `count`) clean objects in distinct cells and no ghost pixels."""
        return not self.failures(count)

    def failures(self, count: int | None = None) -> tuple:
        """Why the image is not a clean scene: "count" (not 1-2 objects, or not `count`) alone, else any of "cell"
        (two objects in one cell), the objects' `Detection.failures` and "ghost"; empty for a clean scene."""
        n = len(self.objects)
        if not (n == count if count is not None else 1 <= n <= 2):
            return ("count",)
        out = ["cell"] if len({d.position for d in self.objects}) != n else []
        for d in self.objects:
            out += [f for f in d.failures() if f not in out]
        if self.ghost_pixels() > 0:
            out.append("ghost")
        return tuple(out)


def _as_float_image(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float64)
    return np.clip(image.astype(np.float64), 0.0, 1.0) * 255.0


def classify_pixels(image):
    """(palette index [H, W] with -1 = not a palette pixel, background mask [H, W]) of an image."""
    pixels = _as_float_image(image)
    palette = np.asarray(list(task.COLORS.values()), np.float64)
    distance = np.sqrt(((pixels[..., None, :] - palette) ** 2).sum(-1))  # [H, W, K]
    index = distance.argmin(-1)
    index = np.where(np.take_along_axis(distance, index[..., None], -1)[..., 0] <= PALETTE_DISTANCE, index, -1)
    chroma = pixels.max(-1) - pixels.min(-1)
    brightest = pixels.max(-1)
    grey = (chroma <= BACKGROUND_MAX_CHROMA) & (brightest <= BACKGROUND_MAX_VALUE)
    background = (grey | (brightest <= DARK_MAX_VALUE)) & (index < 0)
    return index, background


def components(mask):
    """8-connected components of a boolean mask: a list of (ys, xs) index arrays, largest first."""
    height, width = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    found = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, ys, xs = deque([(y0, x0)]), [], []
        while queue:
            y, x = queue.popleft()
            ys.append(y)
            xs.append(x)
            for ny in (y - 1, y, y + 1):
                for nx in (x - 1, x, x + 1):
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        found.append((np.asarray(ys), np.asarray(xs)))
    return sorted(found, key=lambda c: -len(c[0]))


def fit_shapes(ys, xs, shape_hw):
    """IoU of a component with each shape template placed at its centroid with its area: {shape: iou}."""
    mask = np.zeros(shape_hw, bool)
    mask[ys, xs] = True
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
    py, px = np.mgrid[: shape_hw[0], : shape_hw[1]].astype(np.float64) + 0.5
    ious = {}
    for shape in task.SHAPES:
        r = np.sqrt(len(ys) / task.SHAPE_AREA[shape])
        template = task.shape_mask(shape, px - cx, py - (cy - task.SHAPE_CENTROID_DY[shape] * r), r)
        union = (template | mask).sum()
        ious[shape] = float((template & mask).sum() / union) if union else 0.0
    return ious


def _boundary(ys, xs, shape_hw):
    mask = np.zeros((shape_hw[0] + 2, shape_hw[1] + 2), bool)
    mask[ys + 1, xs + 1] = True
    inner = mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return int((mask[1:-1, 1:-1] & ~inner).sum())


def _size_ok(pixels, size=task.IMAGE_SIZE):
    cell = size / task.GRID
    smallest = min(task.SHAPE_AREA.values()) * (task.RADIUS_RANGE[0] * cell) ** 2
    largest = max(task.SHAPE_AREA.values()) * (task.RADIUS_RANGE[1] * cell) ** 2
    return SIZE_RANGE[0] * smallest <= pixels <= SIZE_RANGE[1] * largest


def read(image) -> Reading:
    """Detect the objects of a task image (`[H, W, 3]`, uint8 or float in [0, 1])."""
    index, background = classify_pixels(image)
    height, width = index.shape
    scale = (height * width) / task.IMAGE_SIZE ** 2
    positions = {rc: name for name, rc in task.POSITIONS.items()}
    colors = list(task.COLORS)
    objects, specks = [], 0
    for ys, xs in components(index >= 0):
        if len(ys) < MIN_OBJECT_PIXELS * scale:
            specks += len(ys)
            continue
        votes = np.bincount(index[ys, xs], minlength=len(colors))
        ious = sorted(fit_shapes(ys, xs, (height, width)).items(), key=lambda kv: -kv[1])
        cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
        cell = (min(int(cy * task.GRID // height), task.GRID - 1), min(int(cx * task.GRID // width), task.GRID - 1))
        objects.append(Detection(
            shape=ious[0][0], color=colors[int(votes.argmax())], position=positions[cell],
            pixels=int(round(len(ys) / scale)), purity=float(votes.max() / len(ys)), shape_iou=ious[0][1],
            shape_margin=ious[0][1] - ious[1][1],
            boundary=int(round(_boundary(ys, xs, (height, width)) / scale ** 0.5)),
        ))
    ambiguous = int(((index < 0) & ~background).sum())
    return Reading(tuple(objects), int(round(ambiguous / scale)), int(round(specks / scale)), task.IMAGE_SIZE)


# ---------------------------------------------------------------- per-image verdicts
def is_valid(image, prompt=None) -> bool:
    """A clean scene (with the prompt's object count when a prompt is given)."""
    count = len(task.parse_caption(prompt)) if prompt is not None else None
    return read(image).valid(count)


def adheres(image, prompt, reading: Reading | None = None) -> bool:
    """Every object the prompt asks for is shown by its own detected object, with every attribute the prompt names."""
    specs = task.parse_caption(prompt)
    found = (reading or read(image)).objects
    for chosen in _assignments(len(specs), len(found)):
        if all(spec.matches(found[j]) for spec, j in zip(specs, chosen)):
            return True
    return False


def _assignments(n_specs, n_found):
    """Every injective map of spec i -> detection index (as a tuple)."""
    from itertools import permutations

    return permutations(range(n_found), n_specs)

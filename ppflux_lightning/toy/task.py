"""The toy task: one or two coloured shapes on a dark background, placed on a 3x3 grid, with captions.

Everything is deterministic: a scene plus a seeded ``numpy.random.Generator`` fixes the image. The prompt split holds
out a fixed set of (colour, shape, position) triples: training scenes never contain them, evaluation scenes always do,
so prompt adherence on ``eval_prompts()`` measures composition, not memorisation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLORS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "magenta": (220, 50, 220),
    "cyan": (40, 220, 220),
}
BACKGROUND = (16, 16, 24)
# position name -> (row, col) on the 3x3 grid
POSITIONS = {
    "top left": (0, 0),
    "top": (0, 1),
    "top right": (0, 2),
    "left": (1, 0),
    "center": (1, 1),
    "right": (1, 2),
    "bottom left": (2, 0),
    "bottom": (2, 1),
    "bottom right": (2, 2),
}
IMAGE_SIZE = 48  # the built toy model's resolution (VAE scale 4 -> 12x12 latent -> 6x6 = 36 packed tokens)

RADIUS = 0.36  # object half-size as a fraction of a cell
RADIUS_JITTER = 0.10  # relative jitter of the half-size
CENTER_JITTER = 0.08  # centre jitter as a fraction of a cell
SUPERSAMPLE = 4  # anti-aliasing: coverage is averaged over SUPERSAMPLE^2 points per pixel


@dataclass(frozen=True)
class Obj:
    """One object: a shape in a colour at a grid position."""

    shape: str
    color: str
    position: str

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r} (expected one of {', '.join(SHAPES)})")
        if self.color not in COLORS:
            raise ValueError(f"unknown colour {self.color!r} (expected one of {', '.join(COLORS)})")
        if self.position not in POSITIONS:
            raise ValueError(f"unknown position {self.position!r} (expected one of {', '.join(POSITIONS)})")


@dataclass(frozen=True)
class Scene:
    """One or two objects in different grid cells (caption order is object order)."""

    objects: tuple

    def __post_init__(self):
        objects = tuple(self.objects)
        object.__setattr__(self, "objects", objects)
        if not 1 <= len(objects) <= 2:
            raise ValueError(f"a scene holds 1 or 2 objects, got {len(objects)}")
        if len({o.position for o in objects}) != len(objects):
            raise ValueError(f"two objects share the position {objects[0].position!r}")


def describe(obj: Obj) -> str:
    return f"a {obj.color} {obj.shape} at the {obj.position}"


def caption(scene: Scene) -> str:
    """'a red circle at the top left' or 'a red circle at the top left and a blue square at the bottom'."""
    return " and ".join(describe(o) for o in scene.objects)


_OBJECT_RE = re.compile(
    r"an? (?P<color>{}) (?P<shape>{}) at the (?P<position>{})".format(
        "|".join(COLORS), "|".join(SHAPES), "|".join(sorted(POSITIONS, key=len, reverse=True))
    )
)


def parse_caption(text: str) -> Scene:
    """Inverse of ``caption``; raises ValueError on text that is not a task caption."""
    parts = text.strip().lower().split(" and ")
    objects = []
    for part in parts:
        match = _OBJECT_RE.fullmatch(part.strip())
        if match is None:
            raise ValueError(f"not a toy-task caption: {text!r}")
        objects.append(Obj(match["shape"], match["color"], match["position"]))
    try:
        return Scene(tuple(objects))
    except ValueError as err:
        raise ValueError(f"not a valid toy-task caption: {text!r} ({err})") from None


@dataclass(frozen=True)
class Placement:
    """Where ``render`` drew an object: centre (x, y) and half-size in pixels."""

    obj: Obj
    cx: float
    cy: float
    radius: float


def layout(scene: Scene, size: int, rng: np.random.Generator) -> list:
    """The jittered pixel placement of every object (two uniform draws per object for the centre, one for the size)."""
    cell = size / 3.0
    placements = []
    for obj in scene.objects:
        row, col = POSITIONS[obj.position]
        jx, jy, js = rng.uniform(-1.0, 1.0, size=3)
        cx = (col + 0.5 + CENTER_JITTER * jx) * cell
        cy = (row + 0.5 + CENTER_JITTER * jy) * cell
        placements.append(Placement(obj, cx, cy, RADIUS * cell * (1.0 + RADIUS_JITTER * js)))
    return placements


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean inside-test of a shape centred at the origin (y grows downwards)."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        half = 0.85 * r  # same area as the circle, roughly
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    # upward triangle: apex at -r, base at +0.8 r
    top, bottom = -r, 0.8 * r
    frac = (dy - top) / (bottom - top)
    return (dy >= top) & (dy <= bottom) & (np.abs(dx) <= frac * r * 1.05)


def render(scene: Scene, size: int = IMAGE_SIZE, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw a scene: uint8 [size, size, 3]; ``rng`` drives the jitter (None = no jitter)."""
    if size < 12:
        raise ValueError(f"image size {size} is too small (need >= 12 px)")
    if rng is None:
        placements = layout(scene, size, _NoJitter())
    else:
        placements = layout(scene, size, rng)
    s = SUPERSAMPLE
    image = np.broadcast_to(np.asarray(BACKGROUND, np.float64), (size, size, 3)).copy()
    for p in placements:
        # only the pixels of the object's bounding box are tested
        x0, x1 = max(0, int(p.cx - p.radius) - 1), min(size, int(p.cx + p.radius) + 2)
        y0, y1 = max(0, int(p.cy - p.radius) - 1), min(size, int(p.cy + p.radius) + 2)
        xs = (np.arange(x0 * s, x1 * s, dtype=np.float64) + 0.5) / s
        ys = (np.arange(y0 * s, y1 * s, dtype=np.float64) + 0.5) / s
        inside = _coverage(p.obj.shape, xs[None, :] - p.cx, ys[:, None] - p.cy, p.radius).astype(np.float64)
        alpha = inside.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))[..., None]
        color = np.asarray(COLORS[p.obj.color], np.float64)
        image[y0:y1, x0:x1] = image[y0:y1, x0:x1] * (1.0 - alpha) + color * alpha
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


class _NoJitter:
    """A stand-in generator whose uniform draws are all zero (the canonical, unjittered layout)."""

    def uniform(self, low, high, size):
        return np.zeros(size)


def all_objects() -> list:
    return [Obj(s, c, p) for c in COLORS for s in SHAPES for p in POSITIONS]


def all_scenes() -> list:
    """Every scene: all single objects, then all ordered pairs in different cells."""
    objs = all_objects()
    singles = [Scene((o,)) for o in objs]
    pairs = [Scene((a, b)) for a in objs for b in objs if a.position != b.position]
    return singles + pairs


def is_held_out(obj: Obj) -> bool:
    """The fixed held-out triples: about 1 in 7 of the colour x shape x position combinations."""
    ci = list(COLORS).index(obj.color)
    si = SHAPES.index(obj.shape)
    pi = list(POSITIONS).index(obj.position)
    return (ci + 2 * si + 3 * pi) % 7 == 3


def train_scenes() -> list:
    return [sc for sc in all_scenes() if not any(is_held_out(o) for o in sc.objects)]


EVAL_PAIRS = 96  # two-object evaluation prompts, taken at a fixed stride


def eval_scenes() -> list:
    """Every held-out single object plus a fixed, evenly strided subset of pairs containing a held-out object."""
    held = [sc for sc in all_scenes() if any(is_held_out(o) for o in sc.objects)]
    singles = [sc for sc in held if len(sc.objects) == 1]
    pairs = [sc for sc in held if len(sc.objects) == 2]
    stride = max(1, len(pairs) // EVAL_PAIRS)
    return singles + pairs[::stride][:EVAL_PAIRS]


def train_prompts() -> list:
    return [caption(sc) for sc in train_scenes()]


def eval_prompts() -> list:
    return [caption(sc) for sc in eval_scenes()]


def vocabulary() -> list:
    """Every word a caption can contain, in a fixed order."""
    words = ["a", "at", "the", "and"]
    for name in list(COLORS) + list(SHAPES) + list(POSITIONS):
        for w in name.split():
            if w not in words:
                words.append(w)
    return words


def sample_dataset(n: int, size: int = IMAGE_SIZE, seed: int = 0, split: str = "train", single_fraction: float = 0.3):
    """n seeded (image, caption) samples: uint8 [n, size, size, 3] and a list of captions.

    A ``single_fraction`` of the samples show one object; the rest two. ``split`` is "train", "eval" or "all".
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    pools = {"train": train_scenes, "eval": eval_scenes, "all": all_scenes}
    if split not in pools:
        raise ValueError(f"unknown split {split!r} (expected train, eval or all)")
    scenes = pools[split]()
    singles = [sc for sc in scenes if len(sc.objects) == 1]
    pairs = [sc for sc in scenes if len(sc.objects) == 2]
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    captions = []
    for i in range(n):
        pool = singles if (rng.uniform() < single_fraction or not pairs) else pairs
        scene = pool[int(rng.integers(len(pool)))]
        images[i] = render(scene, size, rng)
        captions.append(caption(scene))
    return images, captions

"""The toy task: one or two coloured shapes on a smooth, randomly shaded background, captions that may leave any
attribute open.

A caption names, per object, any subset of colour, shape and grid cell ("a red circle at the top left", "a red shape
at the top left", "a circle", "a shape"); whatever it leaves open is drawn uniformly, and what a caption never fixes
(object size, position inside the cell, the background's gradient and soft blob) is drawn too. The conditional
distributions are therefore wide and multimodal, as a real text-to-image model's are, and a sampler that averages
modes (few-step Euler) draws blends and blurs that `toy.detector` can count. A scene plus a seeded
``numpy.random.Generator`` fixes the image.

The split holds out a fixed set of (colour, shape, cell) triples *as fully specified captions*: training never asks
for "a red triangle at the top right" by name, evaluation always does; the same objects still appear in training
under captions that leave an attribute open, so the open attributes stay uniform in the data.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
from dataclasses import dataclass

import numpy as np

# Three shapes that differ at the scale of a token (a 6x6-token model draws them from 8x8-pixel patches): a round
# blob, a wide bar and a pointed triangle (area-matched template IoU at most 0.69 between any two). Task v2 first
# had a square, whose equal-area IoU with the circle is 0.84: the built teacher drew rounded squares the detector
# could not tell apart (docs/toy_world.md).
SHAPES = ("circle", "bar", "triangle")
COLORS = {
    "red": (235, 45, 45),
    "green": (45, 205, 70),
    "blue": (60, 110, 250),
    "yellow": (240, 220, 40),
}
# position name -> (row, col) on the GRID x GRID grid
POSITIONS = {
    "top left": (0, 0),
    "top right": (0, 1),
    "bottom left": (1, 0),
    "bottom right": (1, 1),
}
GRID = 2
ATTRIBUTES = ("color", "shape", "position")
OPEN_SHAPE_WORD = "shape"  # the noun of a caption that leaves the shape open: "a red shape"
IMAGE_SIZE = 48  # the built toy model's resolution (VAE scale 4 -> 12x12 latent -> 6x6 = 36 packed tokens)

RADIUS_RANGE = (0.26, 0.40)  # object half-size as a fraction of a cell, drawn uniformly
CENTER_JITTER = 0.10  # centre offset inside the cell (fraction of a cell, uniform in +-)
SUPERSAMPLE = 4  # anti-aliasing: coverage is averaged over SUPERSAMPLE^2 points per pixel
# Background: grey level, per-channel tint, linear gradient and one soft Gaussian blob (all luminance, so the
# background stays low in chroma and can never be mistaken for a palette colour). The committed build uses a flat
# background (all ranges zero): with the shaded one, the toy VAE reached only 24 dB and 10 % valid reconstructions
# in its 1200-step budget on the shared 2-core machine (docs/toy_world.md).
BACKGROUND_LEVEL = (36.0, 36.0)
BACKGROUND_TINT = 0.0
BACKGROUND_GRADIENT = 0.0  # largest brightness change across the image
BACKGROUND_BLOB = 0.0  # largest blob amplitude (+-)
BACKGROUND_BLOB_SIGMA = (0.15, 0.35)  # blob width as a fraction of the image
CANONICAL_BACKGROUND = (36, 36, 36)  # the background of `render(..., rng=None)`


@dataclass(frozen=True)
class Obj:
    """One drawn object: a shape in a colour at a grid position (every attribute set)."""

    shape: str
    color: str
    position: str

    def __post_init__(self):
        _check(self.shape, self.color, self.position, allow_open=False)


@dataclass(frozen=True)
class Spec:
    """What a caption asks of one object; None = left open (drawn uniformly)."""

    shape: str | None = None
    color: str | None = None
    position: str | None = None

    def __post_init__(self):
        _check(self.shape, self.color, self.position, allow_open=True)

    @property
    def level(self) -> int:
        """How many attributes the caption fixes (0: "a shape" ... 3: "a red circle at the top left")."""
        return sum(getattr(self, a) is not None for a in ATTRIBUTES)

    def open_attributes(self) -> tuple:
        return tuple(a for a in ATTRIBUTES if getattr(self, a) is None)

    def matches(self, obj) -> bool:
        """True when `obj` (anything with shape / color / position) shows every attribute this spec fixes."""
        return all(getattr(self, a) is None or getattr(self, a) == getattr(obj, a) for a in ATTRIBUTES)


def _check(shape, color, position, allow_open):
    for value, names, what in ((shape, SHAPES, "shape"), (color, COLORS, "colour"), (position, POSITIONS,
                                                                                       "position")):
        if value is None and allow_open:
            continue
        if value not in names:
            raise ValueError(f"unknown {what} {value!r} (expected one of {', '.join(names)})")


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


# ---------------------------------------------------------------- captions
def describe(spec) -> str:
    """'a red circle at the top left', 'a red shape', 'a circle at the top left', 'a shape' (Spec or Obj)."""
    words = ["a"] + ([spec.color] if spec.color else []) + [spec.shape or OPEN_SHAPE_WORD]
    if spec.position:
        words += ["at", "the", spec.position]
    return " ".join(words)


def caption(specs) -> str:
    """The caption of a tuple of specs (or of a Scene: every attribute named), objects joined by ' and '."""
    if isinstance(specs, Scene):
        specs = specs.objects
    return " and ".join(describe(s) for s in specs)


_OBJECT_RE = re.compile(
    r"an? (?:(?P<color>{}) )?(?P<shape>{}|{})(?: at the (?P<position>{}))?".format(
        "|".join(COLORS), "|".join(SHAPES), OPEN_SHAPE_WORD, "|".join(sorted(POSITIONS, key=len, reverse=True))
    )
)


def parse_caption(text: str) -> tuple:
    """The specs a caption asks for (a tuple of 1 or 2 `Spec`, open attributes None); inverse of `caption`.

    Raises ValueError on text that is not a task caption, or on two objects asked for in the same cell."""
    parts = text.strip().lower().split(" and ")
    specs = []
    for part in parts:
        match = _OBJECT_RE.fullmatch(part.strip())
        if match is None:
            raise ValueError(f"not a toy-task caption: {text!r}")
        shape = None if match["shape"] == OPEN_SHAPE_WORD else match["shape"]
        specs.append(Spec(shape, match["color"], match["position"]))
    positions = [s.position for s in specs if s.position]
    if not 1 <= len(specs) <= 2 or len(set(positions)) != len(positions):
        raise ValueError(f"not a valid toy-task caption: {text!r} (1 or 2 objects in different cells)")
    return tuple(specs)


def draw_scene(specs, rng: np.random.Generator) -> Scene:
    """A scene for a caption's specs: every open attribute drawn uniformly (open cells among the free ones)."""
    taken = {s.position for s in specs if s.position}
    objects = []
    for s in specs:
        color = s.color or list(COLORS)[int(rng.integers(len(COLORS)))]
        shape = s.shape or SHAPES[int(rng.integers(len(SHAPES)))]
        position = s.position
        if position is None:
            free = [p for p in POSITIONS if p not in taken]
            position = free[int(rng.integers(len(free)))]
            taken.add(position)
        objects.append(Obj(shape, color, position))
    return Scene(tuple(objects))


# ---------------------------------------------------------------- rendering
@dataclass(frozen=True)
class Placement:
    """Where `render` drew an object: centre (x, y) and half-size in pixels."""

    obj: Obj
    cx: float
    cy: float
    radius: float


def layout(scene: Scene, size: int, rng: np.random.Generator | None = None) -> list:
    """Pixel placement of every object (three uniform draws per object: centre x, y and size); None = canonical
    (cell centre, mid-range size)."""
    cell = size / GRID
    placements = []
    for obj in scene.objects:
        row, col = POSITIONS[obj.position]
        jx, jy, js = (0.0, 0.0, 0.5) if rng is None else (*rng.uniform(-1.0, 1.0, size=2), rng.uniform())
        radius = RADIUS_RANGE[0] + (RADIUS_RANGE[1] - RADIUS_RANGE[0]) * js
        placements.append(Placement(obj, (col + 0.5 + CENTER_JITTER * jx) * cell,
                                    (row + 0.5 + CENTER_JITTER * jy) * cell, radius * cell))
    return placements


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean inside-test of a shape of half-size `r` placed at the origin (y grows downwards)."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "bar":  # horizontal, as wide as the circle, half as tall
        return (np.abs(dx) <= r) & (np.abs(dy) <= 0.5 * r)
    # upward triangle: apex at -r, base at +0.8 r, base half-width 1.05 r
    top, bottom = -r, 0.8 * r
    frac = (dy - top) / (bottom - top)
    return (dy >= top) & (dy <= bottom) & (np.abs(dx) <= frac * r * 1.05)


# area / r^2 and centroid offset / r (below the placement centre) of each shape, from the definitions above
SHAPE_AREA = {"circle": np.pi, "bar": 2.0, "triangle": 1.8 * 1.05}
SHAPE_CENTROID_DY = {"circle": 0.0, "bar": 0.0, "triangle": -1.0 + 2.0 / 3.0 * 1.8}


def background(size: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """float [size, size, 3] background: grey level + tint + linear gradient + one soft blob (None = canonical)."""
    if rng is None:
        return np.broadcast_to(np.asarray(CANONICAL_BACKGROUND, np.float64), (size, size, 3)).copy()
    level = rng.uniform(*BACKGROUND_LEVEL)
    tint = rng.uniform(-BACKGROUND_TINT, BACKGROUND_TINT, size=3)
    angle, strength = rng.uniform(0, 2 * np.pi), rng.uniform(0, BACKGROUND_GRADIENT)
    bx, by = rng.uniform(0, 1, size=2)
    amp, sigma = rng.uniform(-BACKGROUND_BLOB, BACKGROUND_BLOB), rng.uniform(*BACKGROUND_BLOB_SIGMA)
    u = (np.arange(size) + 0.5) / size
    x, y = u[None, :], u[:, None]
    shade = strength * ((x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle))
    shade = shade + amp * np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * sigma ** 2))
    return np.clip(level + shade[..., None] + tint, 0.0, 255.0)


def render(scene: Scene, size: int = IMAGE_SIZE, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw a scene: uint8 [size, size, 3]; `rng` drives size, position and background (None = canonical)."""
    if size < 16:
        raise ValueError(f"image size {size} is too small (need >= 16 px)")
    placements = layout(scene, size, rng)
    image = background(size, rng)
    s = SUPERSAMPLE
    for p in placements:
        # only the pixels of the object's bounding box are tested
        x0, x1 = max(0, int(p.cx - 1.1 * p.radius) - 1), min(size, int(p.cx + 1.1 * p.radius) + 2)
        y0, y1 = max(0, int(p.cy - p.radius) - 1), min(size, int(p.cy + p.radius) + 2)
        xs = (np.arange(x0 * s, x1 * s, dtype=np.float64) + 0.5) / s
        ys = (np.arange(y0 * s, y1 * s, dtype=np.float64) + 0.5) / s
        inside = shape_mask(p.obj.shape, xs[None, :] - p.cx, ys[:, None] - p.cy, p.radius).astype(np.float64)
        alpha = inside.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))[..., None]
        color = np.asarray(COLORS[p.obj.color], np.float64)
        image[y0:y1, x0:x1] = image[y0:y1, x0:x1] * (1.0 - alpha) + color * alpha
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- the split and the prompt sets
def all_objects() -> list:
    return [Obj(s, c, p) for c in COLORS for s in SHAPES for p in POSITIONS]


def is_held_out(obj) -> bool:
    """The fixed held-out triples (1 in 6 of colour x shape x cell); never named in full by a training caption."""
    ci, si, pi = list(COLORS).index(obj.color), SHAPES.index(obj.shape), list(POSITIONS).index(obj.position)
    return (ci + 2 * si + 3 * pi) % 6 == 1


def names_held_out(spec) -> bool:
    """True when a spec fixes all three attributes and they form a held-out triple."""
    return spec.level == 3 and is_held_out(spec)


def all_specs() -> list:
    """Every one-object spec: each attribute named or open (5 x 4 x 5 = 100, including 'a shape')."""
    return [Spec(s, c, p) for c in (None, *COLORS) for s in (None, *SHAPES) for p in (None, *POSITIONS)]


def one_object_eval_prompts() -> list:
    """The one-object evaluation prompts: every spec that leaves something open, plus the held-out full ones."""
    return [caption((s,)) for s in all_specs() if s.level < 3 or names_held_out(s)]


def level_balanced_prompts(per_level: int) -> list:
    """`per_level` one-object evaluation prompts at each level of specification 0-3 (level 0 first), each level
    cycling through its prompts of `one_object_eval_prompts()` in a fixed shuffled order: level 0 is "a shape"
    repeated, level 3 the held-out triples. `eval_prompts` draws the levels as they come (5 / 51 / 194 / 38 of 288
    at 384), too few at level 0 to measure it; this set weighs them alike."""
    if per_level < 1:
        raise ValueError(f"per_level must be >= 1, got {per_level}")
    rng = np.random.default_rng(EVAL_SEED + 2)
    singles = [(p, parse_caption(p)[0].level) for p in one_object_eval_prompts()]
    prompts = []
    for level in range(len(ATTRIBUTES) + 1):
        pool = [p for p, of in singles if of == level]
        order = [pool[i] for i in rng.permutation(len(pool))]
        prompts += list(itertools.islice(itertools.cycle(order), per_level))
    return prompts


TRAIN_SPECIFY_PROB = 0.6  # each attribute of a training caption is named with this probability
SINGLE_FRACTION = 0.6  # share of one-object training scenes


def _random_spec(rng, prob=TRAIN_SPECIFY_PROB):
    named = rng.uniform(size=3) < prob
    color = list(COLORS)[int(rng.integers(len(COLORS)))] if named[0] else None
    shape = SHAPES[int(rng.integers(len(SHAPES)))] if named[1] else None
    position = list(POSITIONS)[int(rng.integers(len(POSITIONS)))] if named[2] else None
    return Spec(shape, color, position)


def random_train_specs(rng, single_fraction=SINGLE_FRACTION) -> tuple:
    """One training caption's specs: 1 or 2 objects, each attribute named with TRAIN_SPECIFY_PROB, never a held-out
    triple named in full (redrawn), never two objects named into one cell (redrawn)."""
    count = 1 if rng.uniform() < single_fraction else 2
    while True:
        specs = tuple(_random_spec(rng) for _ in range(count))
        positions = [s.position for s in specs if s.position]
        if len(set(positions)) == len(positions) and not any(names_held_out(s) for s in specs):
            return specs


def caption_variants(scene: Scene, count: int, rng: np.random.Generator, prob=TRAIN_SPECIFY_PROB) -> list:
    """`count` captions of one drawn scene, each a fresh draw from the training captions' distribution given the
    scene: every attribute of every object named with `prob`, never a held-out triple named in full (redrawn).

    Drawing the specs and then the open attributes uniformly (`random_train_specs`, `draw_scene`) is the same joint
    distribution as drawing the scene and then which attributes its caption names, so a teacher may see each
    training image under several captions (`BuildSettings.captions_per_image`) without changing the data."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    out = []
    for _ in range(count):
        specs = []
        for obj in scene.objects:
            while True:
                named = rng.uniform(size=len(ATTRIBUTES)) < prob
                spec = Spec(**{a: getattr(obj, a) if n else None for a, n in zip(ATTRIBUTES, named)})
                if not names_held_out(spec):
                    break
            specs.append(spec)
        out.append(caption(specs))
    return out


EVAL_SEED = 12345


def eval_prompts(count: int, single_fraction: float = 0.75) -> list:
    """`count` evaluation captions, fixed for a count: one-object prompts cycle through `one_object_eval_prompts()`
    in a fixed shuffled order (all levels of specification, held-out triples for the fully named ones); the rest are
    two-object prompts whose first object is a held-out triple named in full."""
    if count < 1:
        raise ValueError(f"eval prompt count must be >= 1, got {count}")
    rng = np.random.default_rng(EVAL_SEED)
    singles = one_object_eval_prompts()
    order = [singles[i] for i in rng.permutation(len(singles))]
    held = [Spec(o.shape, o.color, o.position) for o in all_objects() if is_held_out(o)]
    n_single = max(1, int(round(count * single_fraction))) if count > 1 else 1
    prompts = list(itertools.islice(itertools.cycle(order), n_single))
    pair_rng = np.random.default_rng(EVAL_SEED + 1)
    while len(prompts) < count:
        first = held[int(pair_rng.integers(len(held)))]
        second = _random_spec(pair_rng)
        if second.position == first.position:
            continue
        prompts.append(caption((first, second)))
    # interleave so that any prefix mixes both kinds
    return [p for _, p in sorted(enumerate(prompts), key=lambda ip: (ip[0] * 7919) % len(prompts))]


def vocabulary() -> list:
    """Every word a caption can contain, in a fixed order."""
    words = ["a", "at", "the", "and", OPEN_SHAPE_WORD]
    for name in list(COLORS) + list(SHAPES) + list(POSITIONS):
        for w in name.split():
            if w not in words:
                words.append(w)
    return words


def sample_dataset(n: int, size: int = IMAGE_SIZE, seed: int = 0, split: str = "train", return_scenes=False):
    """n seeded (image, caption) samples: uint8 [n, size, size, 3] and a list of captions (and the drawn scenes).

    "train": `random_train_specs` captions; "eval": `eval_prompts(n)` in order; "all": any caption (held-out
    triples too)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if split not in ("train", "eval", "all"):
        raise ValueError(f"unknown split {split!r} (expected train, eval or all)")
    rng = np.random.default_rng(seed)
    fixed = eval_prompts(n) if split == "eval" else None
    images = np.empty((n, size, size, 3), np.uint8)
    captions, scenes = [], []
    for i in range(n):
        if fixed is not None:
            specs = parse_caption(fixed[i])
        elif split == "train":
            specs = random_train_specs(rng)
        else:
            specs = tuple(_random_spec(rng) for _ in range(1 if rng.uniform() < SINGLE_FRACTION else 2))
            if len({s.position for s in specs if s.position}) < sum(s.position is not None for s in specs):
                specs = specs[:1]
        scene = draw_scene(specs, rng)
        images[i] = render(scene, size, rng)
        captions.append(caption(specs))
        scenes.append(scene)
    return (images, captions, scenes) if return_scenes else (images, captions)


@functools.cache
def fingerprint() -> str:
    """A short digest of what defines the task's data (captions, shapes, colours, geometry, background), read from
    rendered samples: data or runs made for another version of the task never match it."""
    digest = hashlib.sha1()
    images, captions = sample_dataset(16, IMAGE_SIZE, seed=0, split="all")
    digest.update(images.tobytes())
    digest.update("\n".join(captions + eval_prompts(8)).encode())
    for obj in all_objects():
        digest.update(render(Scene((obj,))).tobytes())
    return digest.hexdigest()[:16]

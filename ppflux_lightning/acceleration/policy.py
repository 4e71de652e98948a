"""The cache-policy base: step bookkeeping, block-evaluation counters and helpers shared by every method.

A policy takes over the transformer's forward between embedding and output (`model.cache_policy`) and drives the
model's one block loop (`run_block_range`), deciding per block or per range what runs. The tokens flow as
`models.tokens.Tokens` (text and image streams, one joint sequence from the first single block on), so every block,
double or single, maps tokens to tokens and its residual is `out - in`, computed stream by stream.
Flat block index k < num_layers is double block k, otherwise single block k - num_layers.
"""

import dataclasses
import math
import numbers

import paddle
import paddle.nn.functional as F

from ..models.blocks import modulate
from ..models.tokens import Tokens


@dataclasses.dataclass
class CacheStats:
    """Counters over the current generation (reset at `begin`)."""

    steps: int = 0
    full_steps: int = 0
    blocks_run: int = 0
    blocks_skipped: int = 0

    @property
    def skipped_fraction(self):
        total = self.blocks_run + self.blocks_skipped
        return self.blocks_skipped / total if total else 0.0

    def as_dict(self):
        return {**dataclasses.asdict(self), "skipped_fraction": self.skipped_fraction}


def rel_l1(current, previous, eps=1e-8):
    """Relative L1 change mean|current - previous| / mean|previous|, reduced over the whole batch (a 0-d float32
    tensor; computed in float32 so bf16/fp16 models decide alike)."""
    current, previous = current.astype("float32"), previous.astype("float32")
    return (current - previous).abs().mean() / (previous.abs().mean() + eps)


def cosine(a, b, eps=1e-8):
    """Cosine similarity of each sample's flattened tensors (or `Tokens`), averaged over the batch (a 0-d tensor)."""
    a = (a.flat() if isinstance(a, Tokens) else a.reshape([a.shape[0], -1])).astype("float32")
    b = (b.flat() if isinstance(b, Tokens) else b.reshape([b.shape[0], -1])).astype("float32")
    return ((a * b).sum(-1) / (a.norm(axis=-1) * b.norm(axis=-1) + eps)).mean()


def host_values(scalars):
    """Bring a list of 0-d tensors to the host in one transfer (the step's single synchronisation)."""
    return paddle.stack([s.astype("float32") for s in scalars]).numpy().tolist()


def first_block_modulated_input(model, hidden, temb):
    """Block 0's AdaLN-modulated image input (TeaCache's indicator): LN(x) * (1 + scale) + shift."""
    if len(model.transformer_blocks):
        shift, scale = model.transformer_blocks[0].norm1(temb)[:2]
    else:
        shift, scale = model.single_transformer_blocks[0].norm(temb)[:2]
    return modulate(hidden, shift, scale)


def block_modulation(model, k, silu_temb):
    """Flat block k's modulation vector `linear(silu(temb))` (shift, scale and gates of its image stream)."""
    n_double = len(model.transformer_blocks)
    if k < n_double:
        return model.transformer_blocks[k].norm1.linear(silu_temb)
    return model.single_transformer_blocks[k - n_double].norm.linear(silu_temb)


class CachePolicy:
    """Base class. Subclasses set `name`, `default_threshold`, `options` (name -> default) and implement
    `forward(model, tokens, temb, rope) -> final image tokens` for the step `self.step`."""

    name = None
    default_threshold = 0.0
    options = {}
    max_threshold = math.inf

    def __init__(self, threshold=None, **options):
        if threshold is None:
            threshold = self.default_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
            raise ValueError(f"cache threshold for {self.name!r} must be a finite number, got {threshold!r}")
        if threshold < 0:
            raise ValueError(f"cache threshold for {self.name!r} must be >= 0, got {threshold}")
        if threshold > self.max_threshold:
            raise ValueError(f"cache threshold for {self.name!r} must be <= {self.max_threshold}, got {threshold}")
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for cache method {self.name!r}; valid options: {sorted(self.options)}"
            )
        self.threshold = float(threshold)
        self.config = {**self.options, **options}
        for key, value in self.config.items():
            setattr(self, key, value)
        self.validate()
        self.num_steps = None
        self.step = None
        self.stats = CacheStats()

    def validate(self):
        """Check method options; raise ValueError naming the bad value."""

    def reset(self):
        """Drop every cached tensor (called by `begin`)."""

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}(threshold={self.threshold}{', ' + opts if opts else ''})"

    # ------------------------------------------------------------------ pipeline contract
    def begin(self, num_inference_steps):
        """Start a generation of `num_inference_steps` transformer calls: resets all state and counters."""
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        self.num_steps = num_inference_steps
        self.step = None
        self._next_step = 0
        self.stats = CacheStats()
        self.reset()

    def set_step(self, index):
        """Announce the denoising step index of the next transformer call."""
        if self.num_steps is None:
            raise RuntimeError("call policy.begin(num_inference_steps) before policy.set_step")
        if not 0 <= index < self.num_steps:
            raise ValueError(f"step index {index} is outside [0, {self.num_steps})")
        self._next_step = int(index)

    def run(self, model, hidden, context, temb, rope):
        """Called by the transformer's forward instead of `run_blocks`; returns the final image tokens."""
        if self.num_steps is None:
            raise RuntimeError("call policy.begin(num_inference_steps) before running the transformer with a cache")
        if self._next_step >= self.num_steps:
            raise RuntimeError(
                f"transformer called {self._next_step + 1} times after begin({self.num_steps}): call begin again"
            )
        self.step = self._next_step
        self._next_step += 1
        self.stats.steps += 1
        return self.forward(model, Tokens.streams(context, hidden), temb, rope)

    def forward(self, model, tokens, temb, rope):
        """`tokens` (a `Tokens`) -> the final image tokens for step `self.step`."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for subclasses
    def counted(self, k, tokens, run):
        """A `visit` for the model's block loop: evaluate block k and count it."""
        self.stats.blocks_run += 1
        return run(tokens)

    def run_range(self, model, tokens, temb, rope, start=0, stop=None):
        """Run flat blocks start..stop-1 (to the end by default), counting them; returns `Tokens`."""
        return model.run_block_range(tokens, temb, rope, start=start, stop=stop, visit=self.counted)

    def skip_blocks(self, count):
        self.stats.blocks_skipped += count

    @property
    def is_last_step(self):
        return self.step == self.num_steps - 1

    @staticmethod
    def silu(temb):
        return F.silu(temb)


def check_int(policy, key, minimum=0, allow_none=False):
    """Validate integer option `key` of `policy` (>= minimum, or None when allowed)."""
    value = getattr(policy, key)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"option {key} of cache method {policy.name!r} must be an integer >= {minimum}, got {value!r}")

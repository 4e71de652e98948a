"""FirstBlock-Taylor: FBCache's decision, but a skipped step extrapolates the residual of the remaining blocks
with a Taylor series over the last full steps (step gaps honoured) instead of repeating the last one."""

from .fbcache import FirstBlockCache
from .policy import check_int
from .taylor import TaylorCache


class FirstBlockTaylor(FirstBlockCache):
    """Options: `order` (Taylor order; full steps run until order + 1 samples exist), `max_skips` (most
    consecutive extrapolated steps, None = no limit)."""

    name = "firstblock_taylor"
    default_threshold = 0.08
    options = {"order": 1, "max_skips": None}

    def validate(self):
        TaylorCache(self.order)
        check_int(self, "max_skips", minimum=0, allow_none=True)

    def reset(self):
        super().reset()
        self.taylor = TaylorCache(self.order)
        self.skips = 0

    def can_reuse(self, first_residual):
        # Never extrapolate with a silently lower order: wait for order + 1 full steps.
        if not self.taylor.ready or (self.max_skips is not None and self.skips >= self.max_skips):
            self.skips = 0
            return False
        reuse = super().can_reuse(first_residual)
        self.skips = self.skips + 1 if reuse else 0
        return reuse

    def reuse(self, after_first):
        return after_first + self.taylor.predict(self.step).astype(after_first.dtype)

    def store(self, after_first, out):
        # Differences of half-precision residuals cancel badly: the history is kept in float32.
        self.taylor.update(self.step, (out - after_first).detach().astype("float32"))

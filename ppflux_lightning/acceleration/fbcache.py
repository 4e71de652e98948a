"""First-block cache (FBCache): block 0 always runs; while its residual stays within `threshold` (relative L1)
of the one seen at the last full step, the other blocks are skipped and their cached residual is added."""

from .policy import CachePolicy, host_values, rel_l1


class FirstBlockCache(CachePolicy):
    """The decision is shared with FirstBlock-Taylor; subclasses change how a skipped step's output is formed."""

    name = "fbcache"
    default_threshold = 0.08
    options = {}

    def reset(self):
        self.first_residual = None
        self.rest_residual = None

    def can_reuse(self, first_residual):
        if self.first_residual is None or self.threshold == 0:
            return False
        return host_values([rel_l1(first_residual, self.first_residual)])[0] < self.threshold

    def reuse(self, after_first):
        return after_first + self.rest_residual

    def store(self, after_first, out):
        self.rest_residual = (out - after_first).detach()

    def forward(self, model, tokens, temb, rope):
        first = self.run_range(model, tokens, temb, rope, stop=1)
        after_first = first.image
        first_residual = after_first - tokens.image
        rest = model.num_blocks - 1
        if self.can_reuse(first_residual):
            self.skip_blocks(rest)
            return self.reuse(after_first)
        self.stats.full_steps += 1
        self.first_residual = first_residual.detach()
        out = self.run_range(model, first, temb, rope, start=1).image
        self.store(after_first, out)
        return out

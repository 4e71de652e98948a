"""SortBlock: full steps store every block's residual; between them, blocks are ranked by how well a Taylor
prediction agrees with their last residual and the best-predicted fraction is skipped (residual extrapolated).

Ranking uses the cosine similarity between the last stored residual and the Taylor-predicted one (1 = the residual
is not expected to move). Double and single blocks are ranked separately. `threshold` is the fraction of each group
skipped on a partial step (0 = never skip, 1 = skip every predictable block); recomputed blocks refresh their history.
"""

import math

from .policy import CachePolicy, check_int, cosine, host_values
from .taylor import TaylorCache


class SortBlock(CachePolicy):
    """Options: `interval` (a full step every `interval` steps), `warmup_steps` / `final_steps` (always full),
    `order` (Taylor order of the residual extrapolation)."""

    name = "sortblock"
    default_threshold = 0.5
    max_threshold = 1.0
    options = {"interval": 3, "warmup_steps": 2, "final_steps": 1, "order": 1}

    def validate(self):
        check_int(self, "interval", minimum=1)
        check_int(self, "warmup_steps", minimum=0)
        check_int(self, "final_steps", minimum=0)
        TaylorCache(self.order)

    def reset(self):
        self.history = {}

    def is_full_step(self):
        return (
            self.threshold == 0
            or self.step < self.warmup_steps
            or self.step >= self.num_steps - self.final_steps
            or self.step % self.interval == 0
        )

    def choose_skipped(self, model):
        """Flat indices of the blocks to skip this step (one host transfer for all similarities)."""
        n_double, n_blocks = len(model.transformer_blocks), model.num_blocks
        ready = [k for k in range(n_blocks) if k in self.history and self.history[k].ready]
        if not ready:
            return set()
        values = host_values([cosine(self.history[k].last, self.history[k].predict(self.step)) for k in ready])
        similarity = dict(zip(ready, values))
        skip = set()
        for group in (range(n_double), range(n_double, n_blocks)):
            candidates = sorted((k for k in group if k in similarity), key=similarity.get, reverse=True)
            count = min(math.floor(self.threshold * len(group) + 0.5), len(candidates))  # round half up
            skip.update(candidates[:count])
        return skip

    def forward(self, model, tokens, temb, rope):
        full = self.is_full_step()
        skip = set() if full else self.choose_skipped(model)
        if not skip:
            self.stats.full_steps += 1

        def visit(k, tokens, run):
            if k in skip:
                self.skip_blocks(1)
                return tokens + self.history[k].predict(self.step).astype(tokens.dtype)
            out = self.counted(k, tokens, run)
            if self.threshold > 0:
                residual = (out - tokens).detach().astype("float32")  # float32 history: see FirstBlockTaylor
                self.history.setdefault(k, TaylorCache(self.order)).update(self.step, residual)
            return out

        return model.run_block_range(tokens, temb, rope, visit=visit).image

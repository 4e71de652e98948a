"""TeaBlockCache: a TeaCache-style accumulated decision for every block from index `start` on.

Each step, block k's change is the relative L1 change of the model input (block 0's modulated image tokens) plus
that of block k's own timestep modulation, both against the previous step; it accumulates since the block last ran.
Inside the step window a block whose accumulation is below the threshold is skipped and its cached residual added.
All per-block decisions come from one host transfer per step.
"""

from .policy import CachePolicy, block_modulation, check_int, first_block_modulated_input, host_values, rel_l1


class TeaBlockCache(CachePolicy):
    """Options: `start` (first cacheable flat block index), `warmup_steps` / `final_steps` (steps at the start / end
    that always run every block: the window)."""

    name = "teablockcache"
    default_threshold = 0.3
    options = {"start": 1, "warmup_steps": 1, "final_steps": 1}

    def validate(self):
        check_int(self, "start", minimum=0)
        check_int(self, "warmup_steps", minimum=1)
        check_int(self, "final_steps", minimum=0)

    def reset(self):
        self.previous_input = None
        self.previous_modulation = {}
        self.residuals = {}
        self.accumulated = {}

    def in_window(self):
        return self.warmup_steps <= self.step < self.num_steps - self.final_steps

    def forward(self, model, tokens, temb, rope):
        cacheable = range(self.start, model.num_blocks)
        indicator = first_block_modulated_input(model, tokens.image, temb).detach()
        silu_temb = self.silu(temb)
        modulation = {k: block_modulation(model, k, silu_temb).detach() for k in cacheable}
        skip = set()
        if cacheable and self.previous_input is not None and self.in_window() and self.threshold > 0:
            input_change = rel_l1(indicator, self.previous_input)
            own = [rel_l1(modulation[k], self.previous_modulation[k]) for k in cacheable]
            changes = host_values([input_change + change for change in own])
            for k, change in zip(cacheable, changes):
                self.accumulated[k] = self.accumulated.get(k, 0.0) + change
                if k in self.residuals and self.accumulated[k] < self.threshold:
                    skip.add(k)
        self.previous_input, self.previous_modulation = indicator, modulation
        if not skip:
            self.stats.full_steps += 1

        def visit(k, tokens, run):
            if k in skip:
                self.skip_blocks(1)
                return tokens + self.residuals[k]
            out = self.counted(k, tokens, run)
            if k >= self.start:
                self.residuals[k] = (out - tokens).detach()
                self.accumulated[k] = 0.0
            return out

        return model.run_block_range(tokens, temb, rope, visit=visit).image

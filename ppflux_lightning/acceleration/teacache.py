"""TeaCache: skip the whole block stack while the accumulated, rescaled change of block 0's modulated input stays
below the threshold, adding the residual (output - input) cached at the last full step instead."""

from .policy import CachePolicy, first_block_modulated_input, host_values, rel_l1

# Polynomial (highest power first) that maps the input change to the output change, fitted on FLUX.1-dev by TeaCache.
FLUX_COEFFICIENTS = (498.651651, -283.781631, 55.8554382, -3.82021401, 0.264230861)


def polyval(coefficients, x):
    out = 0.0
    for c in coefficients:
        out = out * x + c
    return out


class TeaCache(CachePolicy):
    """Options: `coefficients` (rescaling polynomial, highest power first; None or [] = no rescaling)."""

    name = "teacache"
    default_threshold = 0.4
    options = {"coefficients": FLUX_COEFFICIENTS}

    def validate(self):
        coefficients = self.coefficients or ()
        if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in coefficients):
            raise ValueError(f"option coefficients of cache method 'teacache' must be numbers: {self.coefficients!r}")
        self.coefficients = tuple(float(c) for c in coefficients)

    def reset(self):
        self.previous_input = None
        self.residual = None
        self.accumulated = 0.0

    def forward(self, model, tokens, temb, rope):
        image = tokens.image
        indicator = first_block_modulated_input(model, image, temb).detach()
        reuse = False
        # The first and last steps always run; threshold 0 never reuses.
        if self.residual is not None and not self.is_last_step and self.threshold > 0:
            change = host_values([rel_l1(indicator, self.previous_input)])[0]
            self.accumulated += polyval(self.coefficients, change) if self.coefficients else change
            reuse = self.accumulated < self.threshold
        self.previous_input = indicator
        if reuse:
            self.skip_blocks(model.num_blocks)
            return image + self.residual
        self.accumulated = 0.0
        self.stats.full_steps += 1
        out = self.run_range(model, tokens, temb, rope).image
        self.residual = (out - image).detach()
        return out

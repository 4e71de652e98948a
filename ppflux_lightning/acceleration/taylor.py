"""Taylor-style extrapolation of a tensor signal from its last samples (Newton divided differences).

Each derivative estimate is divided by its true step gap, and the series is expanded around the newest samples
(Newton's form), so a polynomial signal of degree <= order is extrapolated exactly, whatever the gaps.
"""


class TaylorCache:
    """Holds the divided differences f[t0], f[t0,t1], ... of the newest `order + 1` samples (t0 the newest)."""

    def __init__(self, order):
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise ValueError(f"Taylor order must be an integer >= 0, got {order!r}")
        self.order = order
        self.times = []
        self.diffs = []

    @property
    def effective_order(self):
        """The order the next prediction uses: grows to `order` as samples arrive (-1 when empty)."""
        return len(self.diffs) - 1

    @property
    def ready(self):
        return len(self.diffs) == self.order + 1

    @property
    def last(self):
        return self.diffs[0]

    def update(self, t, value):
        """Add the sample `value` taken at time `t` (later than every earlier sample)."""
        t = float(t)
        if self.times and t <= self.times[0]:
            raise ValueError(f"Taylor samples must come at increasing times: got t={t} after t={self.times[0]}")
        new = [value]
        for k in range(1, min(self.order, len(self.times)) + 1):
            new.append((new[k - 1] - self.diffs[k - 1]) / (t - self.times[k - 1]))
        self.diffs = new
        self.times = [t] + self.times[: self.order]

    def predict(self, t):
        """The extrapolated value at time `t`: sum_k f[t0..tk] * prod_{j<k} (t - tj)."""
        if not self.diffs:
            raise RuntimeError("TaylorCache.predict called before any sample was stored")
        out = self.diffs[0]
        weight = 1.0
        for k in range(1, len(self.diffs)):
            weight *= float(t) - self.times[k - 1]
            out = out + self.diffs[k] * weight
        return out

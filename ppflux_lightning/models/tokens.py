"""`Tokens`: the text and image tokens between transformer blocks, as the block loop passes them on.

The double blocks keep two streams (text, image); the single blocks take one joint `cat([text, image])` tensor,
joined once before the first of them. Arithmetic applies stream by stream, so block residuals (`out - in`), cached
sums and Taylor extrapolations (what the cache policies compute) never split or re-concatenate the sequence.
"""

import paddle


class Tokens:
    """`parts` is `(text, image)` (two streams) or `(joint,)` with the first `n_txt` positions text."""

    __slots__ = ("parts", "n_txt")

    def __init__(self, parts, n_txt):
        self.parts = tuple(parts)
        self.n_txt = n_txt

    @classmethod
    def streams(cls, context, hidden):
        return cls((context, hidden), context.shape[1])

    @property
    def is_joint(self):
        return len(self.parts) == 1

    @property
    def context(self):
        return self.parts[0][:, : self.n_txt] if self.is_joint else self.parts[0]

    @property
    def image(self):
        return self.parts[0][:, self.n_txt :] if self.is_joint else self.parts[1]

    @property
    def joint(self):
        return self.parts[0] if self.is_joint else paddle.concat(self.parts, axis=1)

    def joined(self):
        """The same tokens as one joint tensor (the single blocks' input)."""
        return self if self.is_joint else Tokens((self.joint,), self.n_txt)

    @property
    def dtype(self):
        return self.parts[0].dtype

    def flat(self):
        """Each sample's tokens as one vector `[B, n]`, text first (for per-sample similarity measures)."""
        rows = [p.reshape([p.shape[0], -1]) for p in self.parts]
        return rows[0] if len(rows) == 1 else paddle.concat(rows, axis=1)

    def _zip(self, other, op):
        if isinstance(other, Tokens):
            if len(other.parts) != len(self.parts):
                raise ValueError("cannot combine two-stream and joint tokens: join both first")
            return Tokens([op(a, b) for a, b in zip(self.parts, other.parts)], self.n_txt)
        return Tokens([op(a, other) for a in self.parts], self.n_txt)

    def __add__(self, other):
        return self._zip(other, lambda a, b: a + b)

    def __sub__(self, other):
        return self._zip(other, lambda a, b: a - b)

    def __mul__(self, other):
        return self._zip(other, lambda a, b: a * b)

    def __truediv__(self, other):
        return self._zip(other, lambda a, b: a / b)

    def astype(self, dtype):
        return Tokens([p.astype(dtype) for p in self.parts], self.n_txt)

    def detach(self):
        return Tokens([p.detach() for p in self.parts], self.n_txt)

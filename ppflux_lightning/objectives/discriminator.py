"""Discriminator heads on the frozen teacher's block features: one small trainable head per block.

The reference head reshapes tokens to a fixed 64x64 grid and applies 1x1 convolutions and GroupNorm. Both act per
position (1x1 conv) or over all positions of a channel group (GroupNorm), so the grid's shape never matters: here
the head runs on the token sequence directly and works at any resolution and aspect ratio.
"""

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


def group_count(channels, max_groups=32):
    """The largest divisor of `channels` that is <= max_groups (GroupNorm(32) when channels allow it)."""
    return max(g for g in range(1, min(channels, max_groups) + 1) if channels % g == 0)


class TokenGroupNorm(nn.Layer):
    """GroupNorm over `[B, S, C]` tokens: statistics per sample and channel group, over all tokens."""

    def __init__(self, channels):
        super().__init__()
        self.norm = nn.GroupNorm(group_count(channels), channels)

    def forward(self, x):
        return self.norm(x.transpose([0, 2, 1])).transpose([0, 2, 1])


class DiscriminatorHead(nn.Layer):
    """h1 = act(norm(W1 f)), h = act(norm(W2 h1)) + h1, logit = w h per token (the reference head, resolution-free:
    the residual adds h1, not the raw feature)."""

    def __init__(self, channels, hidden=0):
        super().__init__()
        hidden = hidden or channels
        self.conv1, self.norm1 = nn.Linear(channels, hidden), TokenGroupNorm(hidden)
        self.conv2, self.norm2 = nn.Linear(hidden, hidden), TokenGroupNorm(hidden)
        self.conv_out = nn.Linear(hidden, 1)

    def forward(self, x):
        x = x.astype(self.conv1.weight.dtype)
        h1 = F.leaky_relu(self.norm1(self.conv1(x)), 0.01)
        h = F.leaky_relu(self.norm2(self.conv2(h1)), 0.01) + h1
        return self.conv_out(h).squeeze(-1)


class Discriminator(nn.Layer):
    """One head per teacher block feature; `forward(features)` -> list of `[B, S]` logits."""

    def __init__(self, channels, num_features, hidden=0):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"the discriminator needs at least one feature, got {num_features}")
        self.heads = nn.LayerList([DiscriminatorHead(channels, hidden) for _ in range(num_features)])

    def forward(self, features):
        if len(features) != len(self.heads):
            raise ValueError(f"got {len(features)} features for {len(self.heads)} discriminator heads")
        return [head(f) for head, f in zip(self.heads, features)]


LOSSES = ("hinge", "lsgan", "wgan")


def _check(kind):
    if kind not in LOSSES:
        raise ValueError(f"adversarial loss must be hinge, lsgan or wgan, got {kind!r}")


def discriminator_loss(real_logits, fake_logits, kind):
    """D loss averaged over heads (means over tokens, float32): hinge relu(1 - r) + relu(1 + f); lsgan
    (sigmoid(r) - 1)^2 + sigmoid(f)^2; wgan f - r."""
    _check(kind)
    terms = []
    for r, f in zip(real_logits, fake_logits):
        r, f = r.astype("float32"), f.astype("float32")
        if kind == "hinge":
            terms.append(F.relu(1 - r).mean() + F.relu(1 + f).mean())
        elif kind == "lsgan":
            terms.append(((F.sigmoid(r) - 1) ** 2).mean() + (F.sigmoid(f) ** 2).mean())
        else:
            terms.append(f.mean() - r.mean())
    return paddle.add_n(terms) / len(terms)


def generator_loss(fake_logits, kind):
    """G loss averaged over heads: hinge relu(1 - f) (saturating: no gradient once a logit is above 1), lsgan
    (sigmoid(f) - 1)^2, wgan -f."""
    _check(kind)
    terms = []
    for f in fake_logits:
        f = f.astype("float32")
        if kind == "hinge":
            terms.append(F.relu(1 - f).mean())
        elif kind == "lsgan":
            terms.append(((F.sigmoid(f) - 1) ** 2).mean())
        else:
            terms.append(-f.mean())
    return paddle.add_n(terms) / len(terms)

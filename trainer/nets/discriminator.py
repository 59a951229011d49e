"""C of Learning to Spot Artifacts: the shared trunk plus two heads, real-vs-damaged (one logit,
positive = real) and the per-location mask logits (positive = feature kept)."""

from __future__ import annotations

from torch import nn

from .heads import ClassifierHead, MaskHead
from .trunk import Trunk


class Discriminator(nn.Module):
    def __init__(self, trunk: Trunk, mask_size: int, hidden: int, pool: int):
        super().__init__()
        self.trunk = trunk
        # one logit with a sigmoid is the released code's 2-way softmax with the redundant
        # degree of freedom removed (softmax of [a, b] = sigmoid(a - b))
        self.real_head = ClassifierHead(trunk.out_channels, 1, hidden=hidden, pool=pool)
        self.mask_head = MaskHead(trunk.out_channels, mask_size)

    def forward(self, x):
        f = self.trunk(x)
        return self.real_head(f).squeeze(1), self.mask_head(f)

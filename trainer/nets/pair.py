"""The pair network of context prediction (Doersch, Gupta & Efros, ICCV 2015).

Two towers with tied weights (one `Trunk` applied to both patches) up to fc6, their fc6
outputs concatenated, then fc7 and fc8 -> 8 logits, one per neighbour position. The paper's
fc6/fc7 are 4096 wide on 96 px patches; `hidden` sets both per preset. conv5 is pooled
adaptively to `pool` x `pool` before fc6, so one head runs on any patch size the pipeline's
geometry gives (15 px patches at 64 px images, 54 px at 224).

The two patches run through the trunk as ONE batch [patch1; patch2]: one forward, and the
trunk's BatchNorm statistics are shared, so they cannot tell the centre patch from the
neighbour by batch-level statistics."""

from __future__ import annotations

import torch
from torch import nn

from .deterministic import avg_pool_to
from .norm import BatchNorm1d
from .trunk import Trunk


def fc(cin: int, cout: int, dropout: float = 0.5) -> nn.Sequential:
    """Linear (no bias) -> BatchNorm -> ReLU -> dropout: the fc blocks of every pretext head."""
    return nn.Sequential(nn.Linear(cin, cout, bias=False), BatchNorm1d(cout), nn.ReLU(inplace=True),
                         nn.Dropout(dropout))


class PairNet(nn.Module):
    def __init__(self, trunk: Trunk, hidden: int, pool: int, classes: int = 8, dropout: float = 0.5):
        super().__init__()
        self.trunk, self.pool = trunk, pool
        self.fc6 = fc(trunk.out_channels * pool * pool, hidden, dropout)
        self.fc7 = fc(2 * hidden, hidden, dropout)
        self.fc8 = nn.Linear(hidden, classes)

    def forward(self, patch1: torch.Tensor, patch2: torch.Tensor) -> torch.Tensor:
        b = patch1.shape[0]
        f = avg_pool_to(self.trunk(torch.cat([patch1, patch2])), self.pool).flatten(1)
        f = self.fc6(f)
        return self.fc8(self.fc7(torch.cat([f[:b], f[b:]], dim=1)))

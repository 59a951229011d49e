"""Task heads on top of the trunk's conv5 map. Each pools adaptively, so one head runs on any
trunk input size; the trunk itself never changes between tasks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class ClassifierHead(nn.Module):
    """conv5 -> adaptive average pool to pool x pool -> fc (BN, ReLU, dropout 0.5) -> `outputs`
    logits. The released Spot-Artifacts code uses one 4096-wide fc layer with BN and dropout 0.5
    before the 2-way real/fake output; `hidden` scales that per preset."""

    def __init__(self, in_channels: int, outputs: int, hidden: int, pool: int, dropout: float = 0.5):
        super().__init__()
        self.pool = pool
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * pool * pool, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, outputs),
        )

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(x, self.pool))


class MaskHead(nn.Module):
    """conv5 -> 3x3 conv -> one logit per location, resampled to the M x N mask grid.

    With the preset geometries conv5 already is M x N (S / 16) and the resampling is the
    identity; on other input sizes adaptive average pooling maps the logit map to M x N (each
    mask entry reads the conv5 cells over its image region)."""

    def __init__(self, in_channels: int, mask_size: int):
        super().__init__()
        self.mask_size = mask_size
        self.conv = nn.Conv2d(in_channels, 1, 3, padding=1)

    def forward(self, x):
        logits = self.conv(x)
        if logits.shape[-1] != self.mask_size or logits.shape[-2] != self.mask_size:
            logits = F.adaptive_avg_pool2d(logits, self.mask_size)
        return logits

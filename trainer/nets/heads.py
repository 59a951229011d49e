"""Task heads on top of the trunk's conv5 map. Each pools adaptively, so one head runs on any
trunk input size; the trunk itself never changes between tasks."""

from __future__ import annotations

from torch import nn

from .deterministic import avg_pool_to
from .norm import BatchNorm1d


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
            BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, outputs),
        )

    def forward(self, x):
        return self.fc(avg_pool_to(x, self.pool))


class MaskHead(nn.Module):
    """conv5 -> 3x3 conv -> one logit per location: the M x N mask grid (the released code's mask
    head). conv5 must be M x N; the config checks it (trainer/artifacts.py), and a mismatch here
    is an error, never a silent resampling that would blur which cell predicts which entry."""

    def __init__(self, in_channels: int, mask_size: int):
        super().__init__()
        self.mask_size = mask_size
        self.conv = nn.Conv2d(in_channels, 1, 3, padding=1)

    def forward(self, x):
        if x.shape[-1] != self.mask_size or x.shape[-2] != self.mask_size:
            raise ValueError(f"conv5 is {x.shape[-2]}x{x.shape[-1]} but the mask is {self.mask_size}x{self.mask_size}: "
                             "feed the discriminator the image size it was configured for")
        return self.conv(x)

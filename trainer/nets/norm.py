"""BatchNorm for the heads' fc layers that also takes a batch of one sample.

One sample has no batch variance, and nn.BatchNorm1d raises in training mode ("Expected more
than 1 value per channel"). A rank's last batch of an epoch holds whatever is left of its part of
the data, one sample included; on a large dataset that can come hours into a run. Such a batch is
normalised with the running statistics (as in evaluation) and leaves them unchanged (so is an
empty one: a rank's share of the end of an epoch can be nothing under torchrun). The
parameters and buffers are nn.BatchNorm1d's own: checkpoints do not change."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class BatchNorm1d(nn.BatchNorm1d):
    def forward(self, x):
        if self.training and x.shape[0] <= 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)

"""The repair network R_1 .. R_{L+1} and the damaged-path decoder it lives in.

Level i: input_i = out_{i-1} + (1 - U_{i-1} Omega) * R_i(out_{i-1}), out_i = D_i(input_i), with
out_0 = phi_hat: the repair output enters only where the (nearest-upsampled) mask says a
feature was dropped. This is the released code's form (`repair_res_layer` before every decoder
level, including the first, which the paper writes as D1(phi_hat) + (1 - Omega) R1(phi_hat)); in
both the repair of level 1 sees phi_hat and changes only dropped positions.

R_i (code, `repair_res_layer`): concat(x, mask) -> 3x3 conv, BN, leaky ReLU -> 3x3 conv; the mask as
an input channel tells the layer where it must invent content. The activation follows the code's
current revision (`tf.nn.leaky_relu`, slope 0.2); its June 2018 release built R with plain ReLU. The decoder D is shared with the autoencoder and frozen
(eval-mode BatchNorm) in phase 2; only R trains.
"""

from __future__ import annotations

import torch
from torch import nn

from ..damage import upsample_mask
from .autoencoder import Decoder


class RepairLayer(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels + 1, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, keep):
        """x (B, C, H, W); keep (B, 1, H, W), 1 = kept -> x where kept, x + R(x) where dropped."""
        keep = keep.to(x.dtype)
        r = self.conv2(self.act(self.bn(self.conv1(torch.cat([x, keep], 1)))))
        return x + (1 - keep) * r


class RepairNet(nn.Module):
    def __init__(self, decoder: Decoder):
        super().__init__()
        self.layers = nn.ModuleList(RepairLayer(c) for c in decoder.level_inputs)


class DamagedDecoder(nn.Module):
    """D with R: (phi_hat, Omega) -> the image with artifacts. Holds the shared frozen decoder."""

    def __init__(self, decoder: Decoder, repair: RepairNet):
        super().__init__()
        if len(decoder.levels) != len(repair.layers):
            raise ValueError("one repair layer per decoder level")
        self.decoder = decoder
        self.repair = repair

    def train(self, mode: bool = True):
        super().train(mode)
        self.decoder.eval()  # frozen: its BN keeps the running statistics of phase 1
        return self

    def forward(self, phi_hat, omega):
        x = phi_hat
        for level, repair in zip(self.decoder.levels, self.repair.layers):
            x = level(repair(x, upsample_mask(omega, x.shape[-2:])))
        return x

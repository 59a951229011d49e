"""The context encoder of Pathak et al. (CVPR 2016): encoder, channel-wise fully-connected
bottleneck, up-convolution decoder; and the adversarial discriminator of its joint loss.

Encoder = the shared `Trunk` (conv1..conv5 on the masked image), so the features the linear
evaluation reads are the encoder's, as in the paper's AlexNet-encoder experiments.

Bottleneck (paper section 3.1): a channel-wise fully-connected layer - every conv5 channel is
connected to all of its own n x n locations (n^2 x n^2 weights per channel, no cross-channel
weights), letting information travel across the whole image at a fraction of a full fc layer's
size - with dropout 0.5 (released code), followed by a 1x1 convolution that mixes channels.

Decoder: 4x4 stride-2 up-convolutions with BatchNorm and ReLU, halving the width each time,
from conv5's n x n up to the output side (out / n must be a power of two), then a 3x3
convolution to RGB and tanh. The output is either the whole image (side S: the random hole
shapes can be anywhere) or, for the centre hole, only the predicted central square (side S / 2:
4 -> 32 at `small`, 14 -> 112 at 224 px), as the released centre-mode code does (a 64 px output
for its 128 px input). The square is not only faithful but cheap: the last, full-resolution
up-convolution costs almost as much as the rest of the generator (at `small`, batch 32, one
thread: forward + backward + Adam 89 ms to the whole image against 49 ms to the square, 1.81x,
`tools/bench/inpainting_step.py`, docs/benchmarks.md).

Discriminator: the DCGAN discriminator the released code uses - 4x4 stride-2 convolutions,
LeakyReLU 0.2, BatchNorm from the second layer, doubling the width, down to a 4 x 4 map, then
one 4x4 convolution to a single logit."""

from __future__ import annotations

import math

import torch
from torch import nn

from .trunk import Trunk


def trunk_side(trunk: Trunk, image_size: int) -> int:
    """conv5's side for an image_size input (a dry run in eval mode, no statistics touched)."""
    was = trunk.training
    trunk.eval()
    with torch.no_grad():
        side = trunk(torch.zeros(1, 3, image_size, image_size)).shape[-1]
    trunk.train(was)
    return side


class ChannelwiseFC(nn.Module):
    """out[b, c] = in[b, c] (flattened n*n) @ W[c] + bias[c]: per-channel fully connected."""

    def __init__(self, channels: int, side: int):
        super().__init__()
        n = side * side
        self.weight = nn.Parameter(torch.randn(channels, n, n) / math.sqrt(n))
        self.bias = nn.Parameter(torch.zeros(channels, 1))

    def forward(self, x):
        b, c, h, w = x.shape
        y = torch.einsum("bcn,cnm->bcm", x.reshape(b, c, h * w), self.weight.to(x.dtype)) + self.bias.to(x.dtype)
        return y.reshape(b, c, h, w)


class ContextEncoder(nn.Module):
    """(B, 3, S, S) -> (B, 3, out, out) in [-1, 1]; out = S unless `out_size` is given."""

    def __init__(self, trunk: Trunk, image_size: int, dropout: float = 0.5, out_size: int | None = None):
        super().__init__()
        self.trunk = trunk
        out = image_size if out_size is None else out_size
        n = trunk_side(trunk, image_size)
        ups = math.log2(out / n) if out % n == 0 else -1
        if ups < 1 or ups != int(ups):
            raise ValueError(f"context encoder: output side {out} / conv5 side {n} (image {image_size}) must be a "
                             f"power of two >= 2 (pick an image size that is a multiple of "
                             f"{trunk.config.downsampling})")
        self.out_size = out
        c = trunk.out_channels
        self.bottleneck = nn.Sequential(ChannelwiseFC(c, n), nn.Dropout(dropout), nn.Conv2d(c, c, 1),
                                        nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        layers, width = [], c
        for _ in range(int(ups)):
            nxt = max(width // 2, 16)
            layers += [nn.ConvTranspose2d(width, nxt, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(nxt),
                       nn.ReLU(inplace=True)]
            width = nxt
        layers += [nn.Conv2d(width, 3, 3, padding=1), nn.Tanh()]
        self.decoder = nn.Sequential(*layers)

    def forward(self, x):
        return self.decoder(self.bottleneck(self.trunk(x)))


class PatchDiscriminator(nn.Module):
    """DCGAN discriminator: (B, 3, S, S) -> (B,) logits, positive = real."""

    def __init__(self, image_size: int, width: int = 64):
        super().__init__()
        layers, cin, side, k = [], 3, image_size, 0
        while side > 4:
            layers += [nn.Conv2d(cin, width, 4, stride=2, padding=1, bias=k == 0)]
            if k:
                layers += [nn.BatchNorm2d(width)]
            layers += [nn.LeakyReLU(0.2, inplace=True)]
            cin, width, side, k = width, width * 2, side // 2, k + 1
        layers += [nn.Conv2d(cin, 1, side)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).flatten(1).mean(1)

"""The autoencoder E, D = {D1 .. D_{L+1}} of Learning to Spot Artifacts.

Layout after the released code (models/AutoEncoder.py): E = a stride-1 3x3 stem, then L stride-2
convolutions (widths `channels`), so phi(x) is (channels[-1], S / 2^L, S / 2^L) and M = S / 2^L.
D_1 .. D_{L-1}: bilinear x2 upsampling + 3x3 conv to the encoder widths in reverse;
D_L: upsampling + conv to the stem width; D_{L+1}: 3x3 conv to RGB + tanh (images are in
[-1, 1]). With L = 4 that is the paper's D1..D5. Every conv but the last: BN + leaky ReLU 0.1
(the code's STL-10 setting). Where the code uses 2x2 stride-2 encoder convolutions we use 3x3
(overlapping windows; the spatial contract, one entry of phi per 2^L x 2^L image block, holds).
"""

from __future__ import annotations

from torch import nn

from .deterministic import bilinear_up2


def conv_bn_act(cin, cout, k=3, stride=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


class Up(nn.Module):
    """One decoder level D_i: x2 bilinear upsampling, 3x3 conv, BN, leaky ReLU."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = conv_bn_act(cin, cout)

    def forward(self, x):
        return self.conv(bilinear_up2(x))


class ToRGB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.conv = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x).tanh()


class Encoder(nn.Module):
    def __init__(self, stem: int, channels: tuple):
        super().__init__()
        layers = [conv_bn_act(3, stem)]
        cin = stem
        for c in channels:
            layers.append(conv_bn_act(cin, c, stride=2))
            cin = c
        self.layers = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x):
        return self.layers(x)


class Decoder(nn.Module):
    def __init__(self, stem: int, channels: tuple):
        super().__init__()
        widths = list(reversed(channels))[1:] + [stem]  # outputs of D_1 .. D_L
        levels, cin = [], channels[-1]
        for c in widths:
            levels.append(Up(cin, c))
            cin = c
        levels.append(ToRGB(cin))
        self.levels = nn.ModuleList(levels)  # D_1 .. D_{L+1}
        # input width of each level: where the repair layer R_i sits (R_i acts on D_i's input)
        self.level_inputs = [channels[-1]] + widths

    def forward(self, phi):
        x = phi
        for level in self.levels:
            x = level(x)
        return x


class AutoEncoder(nn.Module):
    def __init__(self, stem: int, channels: tuple):
        super().__init__()
        self.encoder = Encoder(stem, channels)
        self.decoder = Decoder(stem, channels)
        self.downsampling = 2 ** len(channels)

    def forward(self, x, return_code: bool = False):
        phi = self.encoder(x)
        out = self.decoder(phi)
        return (phi, out) if return_code else out

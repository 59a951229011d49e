"""`Trunk`: the AlexNet-style conv1..conv5 feature extractor every task trains and transfers.

One architecture for all pretext tasks (artifacts, context, jigsaw, inpainting, supervised), so a
trunk transfers between them unchanged and the linear evaluation reads the same five layers.
Heads (real/fake, mask, position, permutation, class) are separate modules in `heads.py`.

Geometry. conv1 (kernel k, stride s, padding k // 2) -> ReLU -> max-pool 3/2 -> conv2 5x5 ->
max-pool 3/2 -> conv3, conv4, conv5 3x3. Every layer pads "same", so conv5 is ceil(S / (4 s))
on a side: 14 for 224 px and 4 for 64 px at s = 4 (the paper's AlexNet: conv5 at the encoder's
M = S / 16, so the mask head needs no resampling), 4 for a 32 px input at s = 2 (`tiny`), and
1 for a 16 px jigsaw tile. No pool5: the heads pool adaptively, so any input from ~16 px up runs.

Normalisation (the brief leaves it to us; the released code of Jenni & Favaro uses BatchNorm on
conv5 and fc only, with LRN after conv1/conv2). We use BatchNorm after conv2..conv5 and none after
conv1 (the DCGAN discriminator convention: the first layer sees raw pixels, and a BN there lets
the discriminator key on per-batch colour statistics). It trains stably as a GAN discriminator
here because the artifacts task always feeds C one batch holding the real and the damaged
images together, so the batch statistics cannot tell the two apart. `norm="none"` gives the
plain AlexNet (biases instead of BN) for tasks or evaluations that want it.

No grouped convolutions: AlexNet's groups=2 was a two-GPU memory split, not a modelling choice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ...configs import coerce_dataclass

NORMS = ("batch", "none")


@dataclass(frozen=True)
class TrunkConfig:
    channels: tuple = (96, 256, 384, 384, 256)  # conv1..conv5 widths (AlexNet)
    conv1_kernel: int = 11
    conv1_stride: int = 4
    norm: str = "batch"

    def __post_init__(self):
        ch = tuple(int(c) for c in self.channels)
        if len(ch) != 5 or min(ch) < 1:
            raise ValueError(f"trunk channels must be 5 positive widths (conv1..conv5), got {self.channels!r}")
        object.__setattr__(self, "channels", ch)
        if self.conv1_kernel < 1 or self.conv1_kernel % 2 == 0:
            raise ValueError(f"trunk conv1_kernel must be odd and >= 1 (same padding), got {self.conv1_kernel}")
        if self.conv1_stride < 1:
            raise ValueError(f"trunk conv1_stride must be >= 1, got {self.conv1_stride}")
        if self.norm not in NORMS:
            raise ValueError(f"trunk norm must be one of {NORMS}, got {self.norm!r}")

    @property
    def downsampling(self) -> int:
        """Input side / conv5 side (for inputs divisible by it)."""
        return 4 * self.conv1_stride

    def side(self, image_size: int, layer: int) -> int:
        """Side of conv`layer`'s map (1..5) for a square input: every conv and pool pads "same",
        so conv1 is ceil(S / stride), each max-pool halves it rounding up (before conv2, conv3)."""
        if not 1 <= layer <= 5:
            raise ValueError(f"layer must be 1..5, got {layer}")
        s = -(-image_size // self.conv1_stride)
        for _ in range(min(layer - 1, 2)):
            s = -(-s // 2)
        return s

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d


# Trunk sizes per preset (the trainer's presets pick these by name).
TRUNK_PRESETS = {
    "tiny": TrunkConfig(channels=(16, 32, 48, 48, 32), conv1_kernel=5, conv1_stride=2),
    "small": TrunkConfig(channels=(48, 96, 144, 144, 96), conv1_kernel=7, conv1_stride=4),
    "64px": TrunkConfig(),
    "alexnet": TrunkConfig(),
}


def trunk_config(spec) -> TrunkConfig:
    """A TrunkConfig from a preset name, a dict or itself."""
    if isinstance(spec, TrunkConfig):
        return spec
    if isinstance(spec, str):
        if spec not in TRUNK_PRESETS:
            raise ValueError(f"unknown trunk preset {spec!r}; choose one of {sorted(TRUNK_PRESETS)}")
        return TRUNK_PRESETS[spec]
    if isinstance(spec, dict):
        return coerce_dataclass(TrunkConfig, spec, "trunk key")
    raise TypeError(f"trunk spec must be a preset name, dict or TrunkConfig, got {type(spec).__name__}")


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, k, stride=1, norm=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=not norm)
        self.bn = nn.BatchNorm2d(cout) if norm else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Trunk(nn.Module):
    def __init__(self, spec="alexnet"):
        super().__init__()
        self.config = cfg = trunk_config(spec)
        c1, c2, c3, c4, c5 = cfg.channels
        bn = cfg.norm == "batch"
        self.conv1 = ConvBlock(3, c1, cfg.conv1_kernel, stride=cfg.conv1_stride, norm=False)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = ConvBlock(c1, c2, 5, norm=bn)
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv3 = ConvBlock(c2, c3, 3, norm=bn)
        self.conv4 = ConvBlock(c3, c4, 3, norm=bn)
        self.conv5 = ConvBlock(c4, c5, 3, norm=bn)
        self.out_channels = c5
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def features(self, x) -> list[torch.Tensor]:
        """The five conv activations (after ReLU, before pooling), conv1 first."""
        f1 = self.conv1(x)
        f2 = self.conv2(self.pool1(f1))
        f3 = self.conv3(self.pool2(f2))
        f4 = self.conv4(f3)
        f5 = self.conv5(f4)
        return [f1, f2, f3, f4, f5]

    def forward(self, x) -> torch.Tensor:
        return self.features(x)[-1]

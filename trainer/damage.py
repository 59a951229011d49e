"""The damage of Learning to Spot Artifacts, in feature space.

phi_hat = Omega * phi + (1 - Omega) * (u conv phi): a dropped entry of the encoder's feature map is
replaced by the local average of phi around it, so the decoder sees a plausible blur rather than
zeros (zeros would be an artifact the discriminator could spot without looking at the content).

u: a k x k box filter with stride 1 and "same" size. The paper calls it "large" without a size;
the released code uses 3 x 3 average pooling (`pixel_dropout_avg`) whose window at the border
covers only the entries that exist (TensorFlow's SAME average pooling), so border entries are
averages over fewer neighbours, never over zero padding. Both are kept here
(`count_include_pad=False`). The window includes the dropped entry itself, as in the formula
and the code (u conv phi is computed on the undamaged phi).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def local_average(phi: torch.Tensor, kernel: int) -> torch.Tensor:
    """u conv phi: k x k mean over the entries inside the map (borders average fewer entries)."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"the averaging kernel must be odd and >= 1, got {kernel}")
    return F.avg_pool2d(phi, kernel, stride=1, padding=kernel // 2, count_include_pad=False)


def damage(phi: torch.Tensor, omega: torch.Tensor, kernel: int) -> torch.Tensor:
    """phi (B, C, M, N), omega (B, 1, M, N) with 1 = kept, 0 = dropped -> phi_hat."""
    if omega.shape[-2:] != phi.shape[-2:]:
        raise ValueError(f"mask {tuple(omega.shape[-2:])} does not match the encoder output "
                         f"{tuple(phi.shape[-2:])}: mask_size must be image_size / 2**len(enc_channels)")
    omega = omega.to(phi.dtype)
    return omega * phi + (1 - omega) * local_average(phi, kernel)


def upsample_mask(omega: torch.Tensor, size) -> torch.Tensor:
    """U: nearest-neighbour upsampling of the mask to a decoder level's resolution."""
    if tuple(omega.shape[-2:]) == tuple(size):
        return omega
    return F.interpolate(omega, size=tuple(size), mode="nearest")

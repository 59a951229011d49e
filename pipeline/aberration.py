"""Synthetic lateral chromatic aberration, for auditing the colour countermeasures.

A lens whose focal length differs per wavelength magnifies the colour channels differently: a
point at distance r from the optical centre lands at r (1 + s_c) in channel c, so colour fringes
grow towards the image border and point at the centre. Doersch et al. (ICCV 2015) found that
context prediction learns to locate patches from exactly this: "green is shifted relative to
red and blue", the green-magenta axis that their projection removes. Web images at 64 px carry
little of it, so `spotart audit` can plant it to show that its cheater catches it and that
colour dropping, projection, greyscale and channel jitter remove it.

`apply` scales the green channel by 1 + `cfg.aberration` about the centre of the (already
cropped) image, red and blue untouched: the lens is centred on the crop, the strongest case for
a cheater. Bilinear resampling; reads outside the image repeat the border pixel. On
`cfg.device`, between the common augmentation and the task generator (pipeline/build.py);
0 (the default) leaves the graph as it was.
"""

from __future__ import annotations

import nvidia.dali.fn as fn
import nvidia.dali.types as types

MAX_SCALE = 0.25  # |s| above this is no lens, and moves green by more than a tile at the border


def inverse_matrix(size: int, scale: float) -> list[float]:
    """2x3 affine map from an output pixel to where the green channel reads it: a scaling by
    1 / (1 + scale) about the centre (size / 2, size / 2), in DALI's (x, y) order."""
    k = 1.0 / (1.0 + scale)
    c = size / 2.0
    return [k, 0.0, c * (1.0 - k), 0.0, k, c * (1.0 - k)]


def apply(images, cfg):
    """uint8 HWC square images (cfg.image_size) -> the same with green magnified by 1 + s."""
    green = fn.warp_affine(images, matrix=inverse_matrix(cfg.image_size, cfg.aberration), inverse_map=True,
                           interp_type=types.INTERP_LINEAR, device=cfg.device)
    return fn.cat(images[:, :, 0:1], green[:, :, 1:2], images[:, :, 2:3], axis=2)

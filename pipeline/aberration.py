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
a cheater. Bilinear resampling at 4x the resolution, one antialiased resize back for all three
channels; reads outside the image repeat the border pixel. On
`cfg.device`, between the common augmentation and the task generator (pipeline/build.py);
0 (the default) leaves the graph as it was.
"""

from __future__ import annotations

import nvidia.dali.fn as fn
import nvidia.dali.types as types

MAX_SCALE = 0.25  # |s| above this is no lens, and moves green by more than a tile at the border
SUPERSAMPLE = 4   # the warp's resolution, x the image's (see `apply`)


def inverse_matrix(size: int, scale: float) -> list[float]:
    """2x3 affine map from an output pixel to where the green channel reads it: a scaling by
    1 / (1 + scale) about the centre (size / 2, size / 2), in DALI's (x, y) order."""
    k = 1.0 / (1.0 + scale)
    c = size / 2.0
    return [k, 0.0, c * (1.0 - k), 0.0, k, c * (1.0 - k)]


def apply(images, cfg):
    """uint8 HWC square images (cfg.image_size) -> the same with green magnified by 1 + s.

    The warp runs at SUPERSAMPLE x the resolution and every channel is brought back with one
    antialiased resize. Warping at the image's own resolution would blur green by a
    sub-pixel phase that cycles every 1 / s px: a position cue of its own, which per-channel
    integer jitter cannot remove (at s = 0.01 it let a jigsaw cheater place 32% of the tiles
    against all countermeasures). Supersampled, the phase blur shrinks below the resampling
    every channel shares."""
    size = cfg.image_size * SUPERSAMPLE
    big = fn.resize(images, size=[size, size], interp_type=types.INTERP_LINEAR, antialias=False, device=cfg.device)
    green = fn.warp_affine(big, matrix=inverse_matrix(size, cfg.aberration), inverse_map=True,
                           interp_type=types.INTERP_LINEAR, device=cfg.device)
    merged = fn.cat(big[:, :, 0:1], green[:, :, 1:2], big[:, :, 2:3], axis=2)
    return fn.resize(merged, size=[cfg.image_size] * 2, interp_type=types.INTERP_LINEAR, antialias=True,
                     device=cfg.device)

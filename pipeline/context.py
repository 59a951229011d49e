"""Context prediction (Doersch, Gupta & Efros, ICCV 2015): a centre patch, one of its 8
neighbours, and which neighbour it is.

The paper samples 96x96 patches with a 48 px gap and up to +-7 px jitter per patch. Here the
3x3 neighbourhood of patches must fit the image the common part hands over (cfg.image_size
square): its extent with jitter is 3P + 2G + 2J (398 px at the paper's scale, close to the
paper's ~400-650 px images), so every length is scaled by image_size / 398 and rounded,
and the patch shrinks until the extent fits (64 px images: P=15, G=8, J=1; 224: 54/27/4).
The grid's top-left corner is uniform over the leftover pixels.

Contract of `generate` (per sample, P = ContextGeometry.patch):
  "patch1"    (3, P, P) centre patch, top-left at c + j1,
  "patch2"    (3, P, P) neighbour, top-left at c + (P + G) * (dy, dx) + j2,
  "position"  int64 label 0..7: the neighbour's place among the 8 around the centre in
              row-major order with the centre skipped, (dy, dx) = NEIGHBOURS[position];
where c is the nominal centre-patch corner and j1, j2 are independent jitters in [-J, J]^2.
Values are in [-1, 1] before the countermeasures below.

Shortcut countermeasures, each switchable:
  - pixelation (`pixelate_prob` 1/3, released code): a patch is downsampled to a random side in
    [10, 95] px (scaled with the patch) and upsampled back, both linear (antialiased down), so
    the network cannot rely on fine detail only; each patch independently;
  - colour dropping (`color_drop`, on; paper): one random channel is kept, the other two are
    replaced by zero-mean Gaussian noise with std `noise_ratio` (1/100) of the kept channel's
    std, so chromatic aberration (colour fringes pointing to the lens centre) is gone; each
    patch independently. The released code's variant (uniform noise, patch scaled to RMS 50) is
    not implemented;
  - projection (`projection`, off; paper's alternative): every pixel's RGB vector is multiplied
    by B = I - a^T a / (a a^T), a = [-1, 2, -1], removing the green-magenta axis along which
    aberration shows. Applied before colour dropping when both are on.
cfg.training switches nothing off: a held-out split measures pretext accuracy on the same task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types

from .ops import HALF_RANGE, randint, to_chw

# (dy, dx) of the 8 neighbours, row-major with the centre skipped: label k -> NEIGHBOURS[k]
NEIGHBOURS = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)], np.int32)
GREEN_MAGENTA = np.array([-1.0, 2.0, -1.0])


def projection_matrix() -> np.ndarray:
    """B = I - a^T a / (a a^T), a = [-1, 2, -1]: projects RGB onto the plane orthogonal to a."""
    a = GREEN_MAGENTA
    return np.eye(3) - np.outer(a, a) / a.dot(a)


@dataclass(frozen=True)
class ContextParams:
    # Geometry at the paper's scale; all scaled to the image (module docstring).
    patch: int = 96
    gap: int = 48
    jitter: int = 7
    # Countermeasures (module docstring).
    pixelate_prob: float = 1 / 3
    pixelate_min: int = 10         # downsampled side range at 96 px patches
    pixelate_max: int = 95
    color_drop: bool = True
    noise_ratio: float = 0.01
    projection: bool = False

    def __post_init__(self):
        if self.patch < 1 or self.gap < 0 or self.jitter < 0:
            raise ValueError(f"context geometry needs patch >= 1, gap >= 0, jitter >= 0, got "
                             f"patch={self.patch}, gap={self.gap}, jitter={self.jitter}")
        if not 0.0 <= self.pixelate_prob <= 1.0:
            raise ValueError(f"context pixelate_prob must be in [0, 1], got {self.pixelate_prob}")
        if not 1 <= self.pixelate_min <= self.pixelate_max <= self.patch:
            raise ValueError(f"context pixelation sides need 1 <= pixelate_min <= pixelate_max <= patch, "
                             f"got {self.pixelate_min}..{self.pixelate_max} for patch {self.patch}")
        if self.noise_ratio < 0:
            raise ValueError(f"context noise_ratio must be >= 0, got {self.noise_ratio}")

    def geometry(self, image_size: int) -> "ContextGeometry":
        extent = 3 * self.patch + 2 * self.gap + 2 * self.jitter
        scale = image_size / extent
        gap = round(self.gap * scale)
        jitter = max(1, round(self.jitter * scale)) if self.jitter > 0 else 0
        patch = round(self.patch * scale)
        while patch > 0 and 3 * patch + 2 * gap + 2 * jitter > image_size:
            patch -= 1
        if patch < 2:
            raise ValueError(f"image_size {image_size} is too small for context patches "
                             f"(needs 3P + 2G + 2J <= image_size with P >= 2)")
        lo = max(1, round(self.pixelate_min * patch / self.patch))
        hi = max(lo, min(patch - 1, round(self.pixelate_max * patch / self.patch)))
        return ContextGeometry(size=image_size, patch=patch, gap=gap, jitter=jitter,
                               slack=image_size - (3 * patch + 2 * gap + 2 * jitter),
                               pixelate_min=lo, pixelate_max=hi)


@dataclass(frozen=True)
class ContextGeometry:
    """Pixel lengths at the pipeline's image size; `slack` = image_size - (3P + 2G + 2J)."""
    size: int
    patch: int
    gap: int
    jitter: int
    slack: int
    pixelate_min: int
    pixelate_max: int


def _on_device(node, cfg):
    return node.gpu() if cfg.device == "gpu" else node


def _patch(images, start, p: ContextParams, geo: ContextGeometry, cfg):
    """uint8 HWC image, (y, x) top-left -> one (3, P, P) patch with the countermeasures."""
    P = geo.patch
    patch = fn.slice(images, start=start, shape=[P, P], axis_names="HW", device=cfg.device)
    if p.pixelate_prob > 0:
        # non-pixelated patches go through an identity resize (P -> P), which is exact
        pix = fn.random.coin_flip(probability=p.pixelate_prob, dtype=types.INT32)
        side = randint(geo.pixelate_min, geo.pixelate_max)
        side = fn.cast(P + pix * (side - P), dtype=types.FLOAT)
        small = fn.resize(patch, size=fn.stack(side, side), device=cfg.device)
        patch = fn.resize(small, size=[P, P], device=cfg.device)
    if not (p.projection or p.color_drop):
        return to_chw(patch, cfg)

    x = fn.normalize(patch, mean=HALF_RANGE, stddev=HALF_RANGE, device=cfg.device)  # HWC, [-1, 1]
    if p.projection:
        x = fn.coord_transform(x, M=projection_matrix().astype(np.float32).ravel().tolist(),
                               device=cfg.device)
    if p.color_drop:
        keep = fn.random.choice(3)
        onehot = _on_device(types.Constant(np.eye(3, dtype=np.float32).reshape(3, 1, 1, 3), device="cpu")[keep], cfg)
        mean = fn.reductions.mean(x, axes=[0, 1], device=cfg.device)
        std = fn.reductions.std_dev(x, mean, axes=[0, 1], device=cfg.device)
        # unit noise scaled on the device: the kept channel's std never has to come back to the
        # CPU as an argument
        noise = fn.random.normal(shape=[P, P, 3], device=cfg.device) * (p.noise_ratio * std[keep])
        x = x * onehot + noise * (1.0 - onehot)
    return to_chw(x, cfg, mean=0.0, std=1.0)


def generate(images, cfg) -> dict:
    p: ContextParams = cfg.params
    geo = p.geometry(cfg.image_size)
    step = geo.patch + geo.gap

    label = fn.random.choice(len(NEIGHBOURS))
    direction = types.Constant(NEIGHBOURS, device="cpu")[label]
    corner = randint(0, geo.slack, [2])             # grid placement within the leftover pixels
    centre = corner + (geo.jitter + step)           # nominal top-left of the centre patch
    start1 = centre + randint(-geo.jitter, geo.jitter, [2])
    start2 = centre + direction * step + randint(-geo.jitter, geo.jitter, [2])
    return {
        "patch1": _patch(images, start1, p, geo, cfg),
        "patch2": _patch(images, start2, p, geo, cfg),
        "position": fn.cast(label, dtype=types.INT64),
    }

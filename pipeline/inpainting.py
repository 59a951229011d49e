"""Context encoders (Pathak et al., CVPR 2016): masked input, target, hole mask, L2 weight map.

Three hole shapes (`InpaintingParams.mode`), as in the paper:
- "center": the central square of side S // 2 (released code: 64 of 128 px).
- "blocks": several possibly overlapping rectangles, together covering at most
  `block_max_fraction` (1/4) of the image.
- "regions": smooth random shapes; low-resolution uniform noise (`region_cells` cells across the
  image) upsampled bicubically and thresholded, covering a fraction in
  [`region_fraction_min`, `region_fraction_max`] (20-30%) of the image.

Geometry of the outputs (S = cfg.image_size, r = `overlap`, w = `overlap_weight`):
- "mask" (1,S,S), 1 = hole: the pixels whose colour the network never sees.
- "image" (3,S,S): the original with every hole pixel set to 0, the mean of [-1, 1] (the
  released code fills the dataset's mean colour; 0 is that for our normalisation, and keeps
  one convention across tasks). Pixels outside the hole equal "target" exactly.
- "target" (3,S,S): the original image in [-1, 1].
- "weight" (1,S,S), the per-pixel L2 weight: 1 on the hole, w on the band of context pixels within
  r px of the hole (Chebyshev distance, i.e. the hole dilated by a (2r+1)^2 square minus the hole
  itself, clipped at the image border), 0 everywhere else. The predicted region is therefore
  the hole grown by r px: "the prediction overlaps the context by r px with 10x L2 weight
  there" (methods.md). The trainer's reconstruction loss is sum(weight * (pred - target)^2),
  normalised as it sees fit.
- In "center" mode the hole follows the released train.lua exactly: the predicted region is the
  central S/2 square, and the filled hole is that square shrunk by r px on every side (input
  `real_ctx[..., 1+S/4+r : S/2+S/4-r]` is filled, `wtl2Matrix` is 10x on the outer r px of the
  S/2 x S/2 prediction, 1x inside). For the random modes the drawn shape is the hole and the
  band lies outside it; train_random.lua instead predicts the whole image (weight 1 everywhere,
  or with useOverlapPred every context pixel 10x), which is not an overlap band; we keep the
  centre's geometry so that all three modes mean the same thing by `overlap`.

`overlap` is in pixels and is not scaled with the image size: it is the width of the seam the
prediction has to blend into, a few pixels of low-level continuity regardless of resolution.
Default 4 px (released code, at 128 px; the paper says 7). At the default image_size 64 the
centre hole is then 24 px inside a 32 px predicted square.

Randomness: blocks and regions are drawn per sample (the released code draws one mask per
batch) by DALI's random operators, hence reproducible from the pipeline seed. Evaluation
pipelines (cfg.training False) draw them the same way: a held-out inpainting loss needs holes,
and a fixed seed gives every evaluation of a checkpoint the same ones. "center" has no
randomness.

Where the work runs: the random shapes are rasterised (and every hole dilated into its band) by
numba kernels through DALI's numba operator on the CPU, because they are sequential per sample
(accepting blocks against the area budget, sorting the noise for its quantile) and DALI's GPU
numba target needs separate CUDA kernels. The masks are S x S bytes per sample; on a GPU
pipeline they are copied to the device once and all arithmetic on images (normalising,
filling the hole, the weight map) runs on `cfg.device`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types
from numba import njit
from nvidia.dali.pipeline import do_not_convert
from nvidia.dali.plugin.numba.fn.experimental import numba_function

from .ops import out_dtype, to_chw

MODES = ("center", "blocks", "regions")


@dataclass(frozen=True)
class InpaintingParams:
    mode: str = "center"
    overlap: int = 4                    # px the prediction overlaps the context (code 4, paper 7)
    overlap_weight: float = 10.0        # L2 weight on that band, relative to 1 inside the hole
    # blocks: `block_count` candidate rectangles per image, each side uniform in
    # [block_side_min, block_side_max] * S; a candidate is kept only if the union stays within
    # block_max_fraction of the image ("up to 1/4", paper).
    block_count: int = 6
    block_side_min: float = 0.1
    block_side_max: float = 0.3
    block_max_fraction: float = 0.25
    # regions: noise with region_cells x region_cells cells across the image (released code:
    # res 0.06 -> 7.7 cells across its 128 px window), hole = the pixels below a per-sample
    # quantile drawn uniformly in [region_fraction_min, region_fraction_max] (code: windows with
    # 20-30% masked, found by rejection; a quantile hits the range on every draw).
    region_cells: int = 8
    region_fraction_min: float = 0.2
    region_fraction_max: float = 0.3

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"inpainting mode must be one of {MODES}, got {self.mode!r}")
        if int(self.overlap) != self.overlap or self.overlap < 0:
            raise ValueError(f"overlap must be an integer number of pixels >= 0, got {self.overlap!r}")
        if not self.overlap_weight > 0:
            raise ValueError(f"overlap_weight must be > 0, got {self.overlap_weight!r}")
        if int(self.block_count) != self.block_count or self.block_count < 1:
            raise ValueError(f"block_count must be an integer >= 1, got {self.block_count!r}")
        if not 0.0 < self.block_side_min <= self.block_side_max <= 1.0:
            raise ValueError(
                f"need 0 < block_side_min <= block_side_max <= 1 (fractions of the image side), "
                f"got {self.block_side_min!r}, {self.block_side_max!r}"
            )
        if not 0.0 < self.block_max_fraction <= 1.0:
            raise ValueError(f"block_max_fraction must be in (0, 1], got {self.block_max_fraction!r}")
        if self.block_side_max**2 > self.block_max_fraction:
            # Otherwise a first block could overflow the budget alone and an image could get no hole.
            raise ValueError(
                f"block_side_max**2 = {self.block_side_max**2:.4g} exceeds block_max_fraction "
                f"{self.block_max_fraction}; lower block_side_max to <= {self.block_max_fraction**0.5:.4g}"
            )
        if int(self.region_cells) != self.region_cells or self.region_cells < 2:
            raise ValueError(f"region_cells must be an integer >= 2, got {self.region_cells!r}")
        if not 0.0 < self.region_fraction_min <= self.region_fraction_max < 1.0:
            raise ValueError(
                f"need 0 < region_fraction_min <= region_fraction_max < 1, "
                f"got {self.region_fraction_min!r}, {self.region_fraction_max!r}"
            )


def centre_square(size: int, overlap: int) -> tuple[int, int, int, int]:
    """(start, side, hole_start, hole_side) of the predicted centre square and its filled hole."""
    side = size // 2
    start = (size - side) // 2
    return start, side, start + overlap, side - 2 * overlap


# --- numba kernels (plain functions of arrays; DALI calls them once per sample) ---------------


@njit(cache=True, nogil=True)
def dilate(src, dst, tmp, r):
    """dst = src dilated by a (2r+1) x (2r+1) square (Chebyshev radius r), clipped at the
    border; separable: any-in-row-window, then any-in-column-window."""
    h, w = src.shape
    for y in range(h):
        for x in range(w):
            v = 0
            for xx in range(max(0, x - r), min(w, x + r + 1)):
                if src[y, xx]:
                    v = 1
                    break
            tmp[y, x] = v
    for y in range(h):
        for x in range(w):
            v = 0
            for yy in range(max(0, y - r), min(h, y + r + 1)):
                if tmp[yy, x]:
                    v = 1
                    break
            dst[y, x] = v


@njit(cache=True, nogil=True)
def rasterise_blocks(hole, cand, side_min, side_max, budget):
    """Draw candidate rectangles in order, keeping each only if the union stays <= budget px.

    cand: (K, 4) uniforms in [0, 1) -> (height, width, top, left). Sides are floored, so a
    single block never exceeds side_max**2 of the image and the first always fits."""
    s = hole.shape[0]
    hole[:] = 0
    covered = 0
    for k in range(cand.shape[0]):
        bh = max(1, min(s, int((side_min + cand[k, 0] * (side_max - side_min)) * s)))
        bw = max(1, min(s, int((side_min + cand[k, 1] * (side_max - side_min)) * s)))
        top = min(s - bh, int(cand[k, 2] * (s - bh + 1)))
        left = min(s - bw, int(cand[k, 3] * (s - bw + 1)))
        new = 0
        for y in range(top, top + bh):
            for x in range(left, left + bw):
                new += 1 - hole[y, x]
        if covered + new > budget:
            continue
        hole[top : top + bh, left : left + bw] = 1
        covered += new


@njit(cache=True, nogil=True)
def threshold_quantile(hole, noise, fraction):
    """hole = the round(fraction * S^2) pixels of lowest noise (exactly that many, ties broken by
    position), so every sample's hole covers the drawn fraction."""
    w = noise.shape[1]
    flat = noise.ravel()  # a copy for the strided view DALI hands over; only read
    n = flat.size
    k = min(n - 1, max(1, int(round(fraction * n))))
    order = np.argsort(flat, kind="mergesort")
    hole[:] = 0
    for i in range(k):
        hole[order[i] // w, order[i] % w] = 1


@do_not_convert
def _blocks_op(size, p):
    side_min, side_max = float(p.block_side_min), float(p.block_side_max)
    budget = int(np.floor(p.block_max_fraction * size * size))
    r = int(p.overlap)

    def setup(outs, ins):
        for o in range(2):
            for i in range(len(outs[o])):
                outs[o][i][0] = size
                outs[o][i][1] = size
                outs[o][i][2] = 1

    def run(hole, region, cand):
        tmp = np.empty((size, size), np.uint8)
        rasterise_blocks(hole[:, :, 0], cand, side_min, side_max, budget)
        dilate(hole[:, :, 0], region[:, :, 0], tmp, r)

    return setup, run


@do_not_convert
def _regions_op(size, p):
    r = int(p.overlap)

    def setup(outs, ins):
        for o in range(2):
            for i in range(len(outs[o])):
                outs[o][i][0] = size
                outs[o][i][1] = size
                outs[o][i][2] = 1

    def run(hole, region, noise, fraction):
        tmp = np.empty((size, size), np.uint8)
        threshold_quantile(hole[:, :, 0], noise[:, :, 0], fraction[0])
        dilate(hole[:, :, 0], region[:, :, 0], tmp, r)

    return setup, run


# --- the masks, as uint8 (S, S, 1) batches on the CPU ----------------------------------------


def _centre_masks(size, p):
    start, side, hole_start, hole_side = centre_square(size, int(p.overlap))
    zeros = fn.zeros(shape=[size, size, 1], dtype=types.UINT8, layout="HWC")
    hole = fn.erase(zeros, anchor=[hole_start] * 2, shape=[hole_side] * 2, axis_names="HW", fill_value=1)
    region = fn.erase(zeros, anchor=[start] * 2, shape=[side] * 2, axis_names="HW", fill_value=1)
    return hole, region


def _block_masks(size, p):
    cand = fn.random.uniform(range=[0.0, 1.0], shape=[int(p.block_count), 4], dtype=types.FLOAT)
    setup, run = _blocks_op(size, p)
    return numba_function(
        cand, run_fn=run, setup_fn=setup, batch_processing=False,
        out_types=[types.UINT8, types.UINT8], outs_ndim=[3, 3], in_types=[types.FLOAT], ins_ndim=[2],
    )


def _region_masks(size, p):
    cells = int(p.region_cells)
    low = fn.random.uniform(range=[0.0, 1.0], shape=[cells, cells, 1], dtype=types.FLOAT)
    # Bicubic upsampling of the cell noise gives the smooth field of the released code
    # (image.scale(..., 'bicubic')); its overshoot does not matter, only the ordering is used.
    noise = fn.resize(
        fn.reshape(low, layout="HWC"), size=[size, size], interp_type=types.INTERP_CUBIC,
        antialias=False, dtype=types.FLOAT,
    )
    fraction = fn.random.uniform(
        range=[float(p.region_fraction_min), float(p.region_fraction_max)], shape=[1], dtype=types.FLOAT
    )
    setup, run = _regions_op(size, p)
    return numba_function(
        noise, fraction, run_fn=run, setup_fn=setup, batch_processing=False,
        out_types=[types.UINT8, types.UINT8], outs_ndim=[3, 3],
        in_types=[types.FLOAT, types.FLOAT], ins_ndim=[3, 1],
    )


def generate(images, cfg) -> dict:
    p = cfg.params
    size = int(cfg.image_size)
    if p.mode == "center":
        _, side, _, hole_side = centre_square(size, int(p.overlap))
        if hole_side < 1:
            raise ValueError(
                f"overlap {p.overlap} px leaves no hole in the {side} px centre square of a {size} px image; "
                f"use overlap <= {(side - 1) // 2}"
            )
        hole, region = _centre_masks(size, p)
    elif p.mode == "blocks":
        hole, region = _block_masks(size, p)
    else:
        hole, region = _region_masks(size, p)

    if cfg.device == "gpu":
        hole, region = hole.gpu(), region.gpu()
    # (S, S, 1) and (1, S, S) share one memory order: a reshape, not a transpose.
    hole = fn.cast(fn.reshape(hole, shape=[1, size, size], layout="CHW"), dtype=types.FLOAT)
    region = fn.cast(fn.reshape(region, shape=[1, size, size], layout="CHW"), dtype=types.FLOAT)

    # DALI's arithmetic has no float16 on the CPU: compose in float32 and cast once at the end.
    # The same cast of the same float32 values makes "image" equal "target" bit for bit off the hole.
    target = to_chw(images, cfg.replace(dtype="float32"))
    image = target * (1.0 - hole)
    weight = hole + (region - hole) * float(p.overlap_weight)

    dtype = out_dtype(cfg)

    def out(x):
        return x if dtype == types.FLOAT else fn.cast(x, dtype=dtype)

    return {"image": out(image), "target": out(target), "mask": out(hole), "weight": out(weight)}

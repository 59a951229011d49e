"""Jigsaw puzzles (Noroozi & Favaro, ECCV 2016): 9 shuffled tiles and the index of the shuffle.

The paper cuts a 225x225 crop into a 3x3 grid of 75x75 cells and takes a random 64x64 tile
inside each cell (the random gap stops the network matching tile edges). Here the image the
common part hands over (cfg.image_size square) *is* the crop, and every length is scaled by
image_size / crop: a 64 px pipeline gets 21 px cells and 18 px tiles.

Contract of `generate` (per sample):
  "tiles"        (9, 3, T, T) float, T = JigsawGeometry.tile; tile i (output position i) is the
                 tile cut from grid cell perm[i], cells numbered row-major 0..8, where
                 perm = permutations[label]. Putting the tiles back with
                 `restored[perm] = tiles` (i.e. restored[perm[i]] = tiles[i]) restores the cell
                 order, so restored[k] is the tile of cell k.
  "permutation"  int64 label in [0, count), drawn uniformly.

Shortcut countermeasures (paper section 3.1), each switchable:
  - random gap (`random_gap`): each tile's top-left is uniform in its cell (else centred);
  - greyscale (`grey_prob` 0.3): the whole image turned grey (saturation 0, channels equal up to
    +-1 grey level of rounding) so colour cannot carry the layout;
  - chromatic aberration (`channel_jitter` 2 px at full scale): each channel of each tile is
    read at its own offset in [-J, J]^2 so the colour fringes that point to the lens centre
    are scrambled; reads past the image border repeat the edge pixel;
  - per-tile normalisation (`tile_norm`): each tile to zero mean / unit std over its channels
    and pixels, so brightness and contrast do not match across tile edges; off: [-1, 1].

How the 27 (tile, channel) reads are gathered depends on the backend; both give the same
tiles for the same draws (tests/pipeline/test_jigsaw.py):
  - CPU: one numba function through DALI's numba operator, greyscale folded in (BT.601 luma of
    each read pixel): DALI's CPU `hsv` alone cost ~110 us per 64 px image, twice the rest.
  - GPU: DALI operators only: `hsv` for greyscale, the image padded by J with its edge pixels
    (`warp_affine` without fill value), laid out plane by plane, and the 27 regions copied by
    one `multi_paste`. DALI 2.4's numba GPU operator refuses CUDA 13 toolkits ("Unsupported CUDA
    toolkit version: (13, 0)": its table of minimal numba versions knows CUDA 11 and 12 only),
    so the CUDA 13 build cannot run a numba kernel.
The random draws (seeded from the pipeline's seed, `ops.op_seeds`, so both gathers see the same
puzzles) and the normalisation are plain DALI operators. cfg.training switches nothing off: a
held-out split measures pretext accuracy on the same task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types

from .ops import HALF_RANGE, op_seeds, out_dtype, randint
from .permutations import CRITERIA, default_permutations, load_permutations

TILES = 9          # 3x3 grid
GRID = 3


@dataclass(frozen=True)
class JigsawParams:
    # Geometry at full scale (paper: 225 crop, 75 cells, 64 tiles; the released Caffe layer uses
    # 255 / 85 / 64); all lengths are multiplied by image_size / crop.
    crop: int = 225
    cell: int = 75
    tile: int = 64
    # Permutation set: `permutations` names a .npy made by `spotart permutations`; None uses the
    # greedy maximal-average-Hamming set for (count, criterion, perm_seed), generated once and
    # cached. The paper's 1000 classes are the default.
    count: int = 1000
    criterion: str = "avg"
    perm_seed: int = 0
    permutations: str | None = None
    # Countermeasures (see module docstring).
    random_gap: bool = True
    grey_prob: float = 0.3
    channel_jitter: int = 2        # max per-channel shift at full scale, px (paper: 0, +-1, +-2)
    tile_norm: bool = True

    def __post_init__(self):
        if not (1 <= self.tile <= self.cell and GRID * self.cell <= self.crop):
            raise ValueError(f"jigsaw geometry needs 1 <= tile <= cell and 3 * cell <= crop, got "
                             f"crop={self.crop}, cell={self.cell}, tile={self.tile}")
        if not 1 <= self.count <= math.factorial(TILES):
            raise ValueError(f"jigsaw count must be in [1, 9!], got {self.count}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"jigsaw criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if not 0.0 <= self.grey_prob <= 1.0:
            raise ValueError(f"jigsaw grey_prob must be in [0, 1], got {self.grey_prob}")
        if self.channel_jitter < 0:
            raise ValueError(f"jigsaw channel_jitter must be >= 0, got {self.channel_jitter}")

    def geometry(self, image_size: int) -> "JigsawGeometry":
        scale = image_size / self.crop
        cell = int(self.cell * scale)                       # floor: the 3x3 grid must fit
        tile = min(cell, max(1, round(self.tile * scale)))
        # A positive jitter stays at least 1 px at small scales, or the switch would silently do
        # nothing (aberration shrinks with the image, but not to zero).
        jitter = max(1, round(self.channel_jitter * scale)) if self.channel_jitter > 0 else 0
        if cell < 1:
            raise ValueError(f"image_size {image_size} is too small for a 3x3 jigsaw grid")
        return JigsawGeometry(size=image_size, cell=cell, tile=tile, jitter=jitter,
                              origin=(image_size - GRID * cell) // 2)

    def load_set(self) -> np.ndarray:
        """The permutation set (uint8 [count, 9]); a given file must hold exactly `count` rows,
        as the classifier's output size is taken from `count`."""
        if self.permutations is None:
            return default_permutations(self.count, criterion=self.criterion, seed=self.perm_seed, n=TILES)
        perms = load_permutations(self.permutations)
        if perms.shape != (self.count, TILES):
            raise ValueError(f"{self.permutations}: holds {perms.shape[0]} permutations of "
                             f"{perms.shape[1]} tiles; jigsaw params want count={self.count} of 9 "
                             f"(set `count` to {perms.shape[0]} or pick another file)")
        return perms


@dataclass(frozen=True)
class JigsawGeometry:
    """Pixel lengths at the pipeline's image size; the grid's top-left corner is (origin, origin)."""
    size: int
    cell: int
    tile: int
    jitter: int
    origin: int


LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601: saturation 0 in DALI's hsv (YIQ) keeps Y


@numba.njit(inline="always")
def _tile_pixel(img, perm, offsets, jitter, grey, i, c, y, x, cell, origin):
    # output tile i is cut from cell k = perm[i]; offsets[k] is the tile's top-left inside the
    # cell (the gap), jitter[k, c] the shift of channel c (chromatic aberration countermeasure);
    # a grey image is read as the luma of each (shifted) pixel
    k = perm[i]
    row = origin + (k // GRID) * cell + offsets[k, 0] + jitter[k, c, 0] + y
    col = origin + (k % GRID) * cell + offsets[k, 1] + jitter[k, c, 1] + x
    row = min(max(row, 0), img.shape[0] - 1)
    col = min(max(col, 0), img.shape[1] - 1)
    if grey:
        v = LUMA[0] * img[row, col, 0] + LUMA[1] * img[row, col, 1] + LUMA[2] * img[row, col, 2]
        return np.uint8(min(v + 0.5, 255.0))
    return img[row, col, c]


def _gather_cpu(images, perm, offsets, jitter, grey, geo: JigsawGeometry):
    """The 9 tiles (9, 3, T, T) uint8 by one numba function per sample (DALI's CPU backend)."""
    from nvidia.dali.plugin.numba.fn.experimental import numba_function

    T, cell, origin = geo.tile, geo.cell, geo.origin

    def setup(outs, ins):
        for s in range(len(outs[0])):
            outs[0][s][0] = TILES
            outs[0][s][1] = 3
            outs[0][s][2] = T
            outs[0][s][3] = T

    def run(out, img, perm, offsets, jitter, grey):
        for i in range(TILES):
            for c in range(3):
                for y in range(T):
                    for x in range(T):
                        out[i, c, y, x] = _tile_pixel(img, perm, offsets, jitter, grey[0], i, c, y, x, cell, origin)

    return numba_function(
        images, perm, offsets, jitter, grey, run_fn=run, setup_fn=setup,
        out_types=[types.UINT8], in_types=[types.UINT8, types.INT32, types.INT32, types.INT32, types.INT32],
        outs_ndim=[4], ins_ndim=[3, 1, 2, 3, 1], device="cpu")


def paste_anchors(perms: np.ndarray, geo: JigsawGeometry) -> tuple[np.ndarray, np.ndarray]:
    """For the 27 (cell k, channel c) regions in that order, k-major: (in_base [9, 3, 2], the
    region's top-left in the padded planar image before the gap offset and the jitter;
    out [count, 27, 2], its top-left in the (27 T, T) output for each permutation, i.e. at
    output tile inv[k] = the position of cell k in the permutation)."""
    T, J, cell, origin = geo.tile, geo.jitter, geo.cell, geo.origin
    side = geo.size + 2 * J
    k, c = np.meshgrid(np.arange(TILES), np.arange(3), indexing="ij")
    in_base = np.stack([c * side + J + origin + (k // GRID) * cell, J + origin + (k % GRID) * cell], -1)
    inv = np.argsort(perms, axis=1)                                   # [count, 9]: cell -> output tile
    rows = (inv[:, :, None] * 3 + c[None]) * T                        # [count, 9, 3]
    out = np.stack([rows, np.zeros_like(rows)], -1).reshape(len(perms), TILES * 3, 2)
    return in_base.astype(np.int32), out.astype(np.int32)


def _gather_paste(images, label, perms, offsets, jitter, geo: JigsawGeometry, device: str):
    """The 9 tiles (9, 3, T, T) uint8 by DALI operators (any backend; the GPU's): each channel
    of each tile is one region of a single multi_paste over the padded image laid out plane by
    plane, (3 (S + 2J), S + 2J, 1)."""
    T, J = geo.tile, geo.jitter
    side = geo.size + 2 * J
    if J > 0:
        # reads up to J px past the border repeat the edge pixel: without fill_value, warp_affine
        # clamps its source coordinates (nearest neighbour, integer shift: exact)
        images = fn.warp_affine(images, matrix=[1.0, 0.0, -J, 0.0, 1.0, -J], size=[side, side],
                                interp_type=types.INTERP_NN, device=device)
    planes = fn.reshape(fn.transpose(images, perm=[2, 0, 1], device=device), shape=[3 * side, side, 1],
                        layout="HWC", device=device)
    in_base, out = paste_anchors(perms, geo)
    anchors = types.Constant(in_base, device="cpu") + fn.reshape(offsets, shape=[TILES, 1, 2]) + jitter
    tiles = fn.multi_paste(*([planes] * (TILES * 3)), device=device, output_size=[TILES * 3 * T, T],
                           in_anchors=fn.reshape(anchors, shape=[TILES * 3, 2]),
                           out_anchors=types.Constant(out, device="cpu")[label],
                           shapes=types.Constant(np.full((TILES * 3, 2), T, np.int32), device="cpu"))
    return fn.reshape(tiles, shape=[TILES, 3, T, T], device=device)


def generate(images, cfg, gather: str | None = None) -> dict:
    """`gather`: "numba" or "paste" (tests); default: numba on the CPU backend, paste on GPU."""
    p: JigsawParams = cfg.params
    geo = p.geometry(cfg.image_size)
    perms = p.load_set().astype(np.int32)
    gather = gather or ("numba" if cfg.device == "cpu" else "paste")
    if gather == "numba" and cfg.device != "cpu":
        raise ValueError("the numba gather runs on DALI's CPU backend only")

    # the random draws, seeded alike on every path and backend (ops.op_seeds)
    seeds = op_seeds(4, salt=0x116)
    label = fn.random.choice(p.count, **seeds[0])
    slack = geo.cell - geo.tile
    if p.random_gap:
        offsets = randint(0, slack, [TILES, 2], **seeds[1])
    else:
        offsets = types.Constant(np.full((TILES, 2), slack // 2, np.int32), device="cpu")
    if geo.jitter > 0:
        jitter = randint(-geo.jitter, geo.jitter, [TILES, 3, 2], **seeds[2])
    else:
        jitter = types.Constant(np.zeros((TILES, 3, 2), np.int32), device="cpu")
    grey = None
    if p.grey_prob > 0:
        grey = fn.random.coin_flip(probability=p.grey_prob, dtype=types.INT32, shape=[1], **seeds[3])

    if gather == "numba":
        perm = types.Constant(perms, device="cpu")[label]
        no_grey = types.Constant(np.zeros(1, np.int32), device="cpu")
        tiles = _gather_cpu(images, perm, offsets, jitter, no_grey if grey is None else grey, geo)
    else:
        if grey is not None:
            images = fn.hsv(images, saturation=fn.cast(1 - grey[0], dtype=types.FLOAT), device=cfg.device)
        tiles = _gather_paste(images, label, perms, offsets, jitter, geo, cfg.device)

    if p.tile_norm:
        # epsilon (in grey levels squared) keeps flat tiles finite
        tiles = fn.normalize(tiles, axes=[1, 2, 3], epsilon=1.0, device=cfg.device)
    else:
        tiles = fn.normalize(tiles, mean=HALF_RANGE, stddev=HALF_RANGE, device=cfg.device)
    if out_dtype(cfg) != types.FLOAT:
        tiles = fn.cast(tiles, dtype=out_dtype(cfg), device=cfg.device)
    return {"tiles": tiles, "permutation": fn.cast(label, dtype=types.INT64)}

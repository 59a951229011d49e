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

How it runs: the geometry's draws and the slices are DALI operators on either backend.
Pixelation, projection and colour dropping are DALI operators on the GPU (`_pixelate`,
`_colour_ops`) and one numba function for both patches on DALI's CPU backend (`_patches_cpu`),
where each of the ~12 colour operators per patch cost ~2 us per sample, DALI's normal generator
~35 ns per value, and pixelation's draw and two resizes ~30 us per patch: as operators they made
the context pipeline no faster than PIL on two cores. Both implement the contract above
(tests/pipeline/test_context.py runs its colour and pixelation tests on both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types

from .ops import HALF_RANGE, out_dtype, to_chw

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


def pixelation_sides(p: ContextParams, geo: ContextGeometry) -> tuple[list[float], list[float]]:
    """(sides, probabilities) of the downsampled side: P (no pixelation) with 1 - pixelate_prob,
    each side in [pixelate_min, pixelate_max] with pixelate_prob / (their count)."""
    inner = list(range(geo.pixelate_min, geo.pixelate_max + 1))
    sides = [float(s) for s in inner] + [float(geo.patch)]
    probs = [p.pixelate_prob / len(inner)] * len(inner) + [1.0 - p.pixelate_prob]
    return sides, probs


def _pixelate(patch, p: ContextParams, geo: ContextGeometry, cfg):
    # One draw from the discrete distribution of the side (P itself = not pixelated) instead of a
    # coin, a side and their arithmetic: on the CPU backend every operator costs ~2 us per sample,
    # more than these 15 px patches' arithmetic. Non-pixelated patches go through an identity
    # resize (P -> P), which is exact. The way back up emits float (unrounded), as the colour
    # step wants it.
    sides, probs = pixelation_sides(p, geo)
    side = fn.random.choice(types.Constant(np.array(sides, np.float32), device="cpu"), p=probs)
    small = fn.resize(patch, resize_x=side, resize_y=side, device=cfg.device)
    return fn.resize(small, size=[geo.patch, geo.patch], dtype=types.FLOAT, device=cfg.device)


def _colour_ops(patch, p: ContextParams, geo: ContextGeometry, device: str):
    """Projection and/or colour dropping as DALI operators (the GPU's branch: one kernel per
    operator for the whole batch, and cuRAND makes the noise cheap). Runs on either backend."""
    P = geo.patch
    x = fn.normalize(patch, mean=HALF_RANGE, stddev=HALF_RANGE, device=device)  # HWC, [-1, 1]
    if p.projection:
        x = fn.coord_transform(x, M=projection_matrix().astype(np.float32).ravel().tolist(), device=device)
    if p.color_drop:
        keep = fn.random.choice(3)
        eye = types.Constant(np.eye(3, dtype=np.float32), device="cpu")[keep]   # (3,): the kept channel
        onehot = fn.reshape(eye, shape=[1, 1, 3])
        if device == "gpu":
            eye, onehot = eye.gpu(), onehot.gpu()
        mean = fn.reductions.mean(x, axes=[0, 1], device=device)
        std = fn.reductions.std_dev(x, mean, axes=[0, 1], device=device)
        # the kept channel's std picked by a dot product, not an index: it stays on the device
        # and never has to come back to the CPU as an argument
        kept_std = fn.reductions.sum(std * eye, device=device)
        noise = fn.random.normal(shape=[P, P, 3], device=device) * (p.noise_ratio * kept_std)
        x = x * onehot + noise * (1.0 - onehot)
    return x


# The CPU kernel's random numbers: splitmix64 (Steele, Lea & Flood 2014), seeded per sample from a
# DALI draw, so every draw is a function of the pipeline seed (reproducible, and restored by DALI
# checkpoints), and Marsaglia's polar method for the noise. numba's np.random (Mersenne Twister)
# took 29 ns per normal value: 26 of the kernel's 37 us per sample went to the ~900 noise values
# of two 15 px patches; these take ~8 ns each.
_U53 = 1.0 / 9007199254740992.0  # 2**-53


@numba.njit(cache=True, inline="always")
def _next(state):
    """splitmix64 step -> (state, 64 random bits)."""
    state = state + np.uint64(0x9E3779B97F4A7C15)
    z = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state, z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def _uniform(state):
    """-> (state, u) with u uniform on [0, 1), 53 bits."""
    state, r = _next(state)
    return state, (r >> np.uint64(11)) * _U53


@numba.njit(cache=True, inline="always")
def _below(state, n):
    """-> (state, k) with k uniform over 0 .. n - 1."""
    state, u = _uniform(state)
    return state, min(int(u * n), n - 1)


@numba.njit(cache=True)
def _normals(out, state, scale):
    """Fill `out` (a contiguous (P, P) channel) with zero-mean Gaussian values of std `scale`
    (Marsaglia's polar method: pairs of uniforms in the unit disc) -> state."""
    flat = out.ravel()
    n = flat.size
    i = 0
    while i < n:
        state, u = _uniform(state)
        state, v = _uniform(state)
        u, v = 2.0 * u - 1.0, 2.0 * v - 1.0
        q = u * u + v * v
        if q >= 1.0 or q == 0.0:
            continue
        f = scale * np.sqrt(-2.0 * np.log(q) / q)
        flat[i] = u * f
        if i + 1 < n:
            flat[i + 1] = v * f
        i += 2
    return state


@numba.njit(cache=True)  # compiled once per machine, not at every pipeline build
def _colour_patch(out, patch, keep, ratio, drop, project, B, state):
    """float HWC patch in [0, 255] -> out (3, P, P) float32 in [-1, 1], projected by B and/or colour-dropped
    (kept channel as is, the other two zero-mean Gaussian noise of std ratio * its std) -> state."""
    P = patch.shape[0]
    for y in range(P):
        for x in range(P):
            v0 = (np.float32(patch[y, x, 0]) - np.float32(HALF_RANGE)) / np.float32(HALF_RANGE)
            v1 = (np.float32(patch[y, x, 1]) - np.float32(HALF_RANGE)) / np.float32(HALF_RANGE)
            v2 = (np.float32(patch[y, x, 2]) - np.float32(HALF_RANGE)) / np.float32(HALF_RANGE)
            if project:
                out[0, y, x] = B[0, 0] * v0 + B[0, 1] * v1 + B[0, 2] * v2
                out[1, y, x] = B[1, 0] * v0 + B[1, 1] * v1 + B[1, 2] * v2
                out[2, y, x] = B[2, 0] * v0 + B[2, 1] * v1 + B[2, 2] * v2
            else:
                out[0, y, x] = v0
                out[1, y, x] = v1
                out[2, y, x] = v2
    if not drop:
        return state
    n = P * P
    s = 0.0
    for y in range(P):
        for x in range(P):
            s += out[keep, y, x]
    mean = s / n
    s = 0.0
    for y in range(P):
        for x in range(P):
            d = out[keep, y, x] - mean
            s += d * d
    scale = ratio * np.sqrt(s / n)  # population std, as DALI's reductions.std_dev
    for c in range(3):
        if c != keep:
            state = _normals(out[c], state, scale)
    return state


@numba.njit(cache=True)
def _resample(src, n_out, support):
    """Linear resampling of the rows of `src` (n_in, m) to (n_out, m), pixel centres aligned.
    `support` > 1 widens the triangle filter to it (antialiasing a downscale by that factor, as
    DALI's resize with antialias); 1 is plain linear interpolation (edges clamped)."""
    n_in, m = src.shape
    out = np.zeros((n_out, m), np.float32)
    scale = n_in / n_out
    for i in range(n_out):
        c = (i + 0.5) * scale - 0.5
        lo = int(np.floor(c - support)) + 1
        hi = int(np.ceil(c + support)) - 1
        wsum = 0.0
        for k in range(lo, hi + 1):
            w = 1.0 - abs(k - c) / support
            if w <= 0.0:
                continue
            kk = min(max(k, 0), n_in - 1)
            wsum += w
            for j in range(m):
                out[i, j] += w * src[kk, j]
        if wsum > 0.0:
            for j in range(m):
                out[i, j] /= wsum
    return out


@numba.njit(cache=True)
def _resize_square(img, n, support):
    """(S, S, 3) float -> (n, n, 3): `_resample` along the rows, then along the columns."""
    S = img.shape[0]
    rows = _resample(img.reshape((S, S * 3)), n, support)                           # (n, S*3): [y, x, c]
    cols = _resample(rows.reshape((n, S, 3)).transpose(1, 0, 2).copy().reshape((S, n * 3)), n, support)
    return cols.reshape((n, n, 3)).transpose(1, 0, 2).copy()                         # [x, y, c] -> [y, x, c]


@numba.njit(cache=True)
def _pixelate_patch(patch, side):
    """(P, P, 3) float -> the same downsampled to side x side (linear, antialiased) and back up
    (linear): the contract of `_pixelate`, in one pass of arithmetic instead of two DALI resizes."""
    P = patch.shape[0]
    return _resize_square(_resize_square(patch, side, max(1.0, P / side)), P, 1.0)


def _patch_cpu_kernel(p: ContextParams, geo: ContextGeometry):
    """run_fn for DALI's numba operator: pixelation, projection and colour dropping of both
    patches of a sample in one call. Without a setup_fn (DALI compiles one cfunc per function at
    every pipeline build, seconds each) the outputs take the inputs' shapes and types: float
    patches in, written in CHW order into their (P, P, 3) buffers and a reshape (no copy)
    relabels them (3, P, P); the output matching `seed` is a placeholder, never written or read."""
    ratio, drop, project = float(p.noise_ratio), bool(p.color_drop), bool(p.projection)
    B = projection_matrix().astype(np.float32)
    P, lo, hi, prob = geo.patch, geo.pixelate_min, geo.pixelate_max, float(p.pixelate_prob)

    def run(out1, out2, _seed_out, patch1, patch2, seed):
        # every draw (pixelation side, kept channel, noise) from one generator seeded by a DALI
        # draw per sample: a function of the pipeline seed
        state = np.uint64(seed[0])
        for out, patch in ((out1, patch1), (out2, patch2)):
            # the side: P (not pixelated) with 1 - pixelate_prob, else uniform over [lo, hi]
            state, u = _uniform(state)
            if u < prob:
                state, k = _below(state, hi - lo + 1)
                patch = _pixelate_patch(patch, lo + k)
            state, keep = _below(state, 3)
            state = _colour_patch(out.reshape((3, P, P)), patch, keep, ratio, drop, project, B, state)

    return run


def _patches_cpu(patch1, patch2, p: ContextParams, geo: ContextGeometry, cfg):
    """Pixelation, projection and colour dropping of both patches in one numba operator (the CPU
    branch). As DALI operators, colour dropping took ~12 operators per patch at ~2 us per sample
    each, plus DALI's CPU normal generator at ~35 ns per value, and pixelation a draw and two
    resizes per patch (~60 us of CPU per sample on the dev VM, a fifth of the context pipeline);
    the kernel does the arithmetic in one pass per patch and draws noise only for the two
    dropped channels."""
    from nvidia.dali.plugin.numba.fn.experimental import numba_function

    P = geo.patch
    patch1, patch2 = (fn.cast(x, dtype=types.FLOAT) for x in (patch1, patch2))
    seed = fn.random.choice(2**31 - 1, shape=[1])
    outs = numba_function(patch1, patch2, seed, run_fn=_patch_cpu_kernel(p, geo),
                          out_types=[types.FLOAT, types.FLOAT, types.INT32],
                          in_types=[types.FLOAT, types.FLOAT, types.INT32],
                          outs_ndim=[3, 3, 1], ins_ndim=[3, 3, 1], device="cpu")
    outs = [fn.reshape(o, shape=[3, P, P], layout="CHW") for o in outs[:2]]
    if out_dtype(cfg) != types.FLOAT:
        outs = [fn.cast(o, dtype=out_dtype(cfg)) for o in outs]
    return outs


def generate(images, cfg, colour: str | None = None) -> dict:
    """`colour`: "numba" (CPU backend; the default there) or "ops" (DALI operators, any backend;
    the GPU's default) for pixelation, projection and colour dropping."""
    p: ContextParams = cfg.params
    geo = p.geometry(cfg.image_size)
    step = geo.patch + geo.gap
    P = geo.patch

    # Corners with the randint offsets folded into constants (fewer operators per sample): the
    # centre patch's nominal corner is c = corner + J + step and its jitter j - J, so
    # start1 = corner + j1 + step; the neighbour adds (dy, dx) * step.
    label = fn.random.choice(len(NEIGHBOURS))
    corner = fn.random.choice(geo.slack + 1, shape=[2])      # grid placement within the leftover pixels
    jitters = 2 * geo.jitter + 1
    start1 = corner + fn.random.choice(jitters, shape=[2]) + step
    offset = types.Constant((NEIGHBOURS + 1) * step, device="cpu")[label]
    start2 = corner + fn.random.choice(jitters, shape=[2]) + offset

    patches = [fn.slice(images, start=start, shape=[P, P], axis_names="HW", device=cfg.device)
               for start in (start1, start2)]
    colour = colour or ("numba" if cfg.device == "cpu" else "ops")
    if colour == "numba" and cfg.device != "cpu":
        raise ValueError("the numba patch step runs on DALI's CPU backend only")
    if not (p.projection or p.color_drop or p.pixelate_prob > 0):
        patch1, patch2 = (to_chw(x, cfg) for x in patches)
    elif colour == "numba":
        patch1, patch2 = _patches_cpu(*patches, p, geo, cfg)
    else:
        if p.pixelate_prob > 0:
            patches = [_pixelate(x, p, geo, cfg) for x in patches]
        if p.projection or p.color_drop:
            patch1, patch2 = (to_chw(_colour_ops(x, p, geo, cfg.device), cfg, mean=0.0, std=1.0) for x in patches)
        else:
            patch1, patch2 = (to_chw(x, cfg) for x in patches)
    return {"patch1": patch1, "patch2": patch2, "position": fn.cast(label, dtype=types.INT64)}

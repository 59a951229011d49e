"""Hand-made features of ONE low-level cue each: what a cheater is allowed to see.

Every function maps a batch of image tensors (N, C, H, W) (or pairs of them) to a plain feature
matrix (N, D), float32 on the CPU. They are deliberately simple (a few statistics per patch or
strip) so that a linear classifier on them is a weak learner: it can only win through the cue.

  border_strips     the k px strip along each side: per-channel mean and std ("boundary pattern")
  facing_edges      continuity between two patches across each of 8 directions, from their
                    facing k px strips only ("edge continuity")
  channel_shifts    per-channel spatial offsets: the cross-correlation peak and a gradient
                    (Lucas-Kanade) estimate of the shift between colour channels ("chromatic
                    aberration")
  colour_stats      per-channel mean, std, quantiles and a soft histogram ("intensity and colour
                    distribution")
  low_frequency     the content blurred down to 3x3 per channel ("vignetting, lens fall-off,
                    position from low-frequency content")
  frequency_stats   per-image colour and high-frequency energy (artifacts: real vs repaired)
  band_stats        seams along the boundary of a region (damage or hole): jumps across it and
                    high-frequency energy in the k px on each side, against the same elsewhere
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# (dy, dx) of the 8 neighbours, row-major without the centre: context's position labels
DIRECTIONS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
CHANNEL_PAIRS = ((1, 0), (1, 2), (0, 2))  # green-red, green-blue, red-blue
EPS = 1e-6


def _f(x: torch.Tensor) -> torch.Tensor:
    return x.detach().float().cpu()


def grey_z(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H, W): channel sum, standardised per image. After colour dropping the
    two noise channels add almost nothing, so this is the kept channel whichever it is."""
    g = _f(x).sum(1)
    m = g.mean((1, 2), keepdim=True)
    s = g.std((1, 2), keepdim=True)
    return (g - m) / (s + EPS)


def strips(x: torch.Tensor, k: int) -> list[torch.Tensor]:
    """The k px strips (top, bottom, left, right) of (..., H, W)."""
    return [x[..., :k, :], x[..., -k:, :], x[..., :, :k], x[..., :, -k:]]


def border_strips(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, 8C): per side and channel, the strip's mean and std."""
    x = _f(x)
    out = []
    for s in strips(x, k):
        out += [s.mean((-2, -1)), s.std((-2, -1))]
    return torch.cat(out, 1)


def _corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two (N, L) batches of profiles."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)


def facing(a: torch.Tensor, b: torch.Tensor, dy: int, dx: int, k: int) -> torch.Tensor:
    """(N, H, W) greys of patch a and its neighbour b in direction (dy, dx) -> (N, 3): the mean
    jump between the two lines that would touch, the correlation of the facing k px strips
    (averaged across their depth; the k x k corner blocks for a diagonal) and the jump between
    b's line and a's line extrapolated one step on from its gradient."""
    if dy and dx:  # diagonal: a's corner towards (dy, dx) against b's opposite corner
        ya, yb = (slice(-k, None), slice(None, k)) if dy > 0 else (slice(None, k), slice(-k, None))
        xa, xb = (slice(-k, None), slice(None, k)) if dx > 0 else (slice(None, k), slice(-k, None))
        ca, cb = a[:, ya, xa], b[:, yb, xb]
        ia = -1 if dy > 0 else 0
        ja = -1 if dx > 0 else 0
        ib, jb = -1 - ia, -1 - ja
        jump = (a[:, ia, ja] - b[:, ib, jb]).abs()
        corr = _corr(ca.flatten(1), cb.flatten(1)) if k > 1 else torch.zeros_like(jump)
        return torch.stack([jump, corr, jump], 1)
    if dx:  # a's right (or left) columns against b's left (or right) columns
        a, b = a.transpose(1, 2), b.transpose(1, 2)
        dy = dx
    # now vertical: a's bottom rows (dy > 0) face b's top rows
    sa, sb = (a[:, -k:], b[:, :k]) if dy > 0 else (a[:, :k].flip(1), b[:, -k:].flip(1))
    la, lb = sa[:, -1], sb[:, 0]                     # the lines that would touch
    prev = sa[:, -2] if k > 1 else la
    jump = (la - lb).abs().mean(1)
    extra = ((2 * la - prev) - lb).abs().mean(1)
    corr = _corr(sa.mean(1), sb.mean(1))
    return torch.stack([jump, corr, extra], 1)


def facing_edges(p1: torch.Tensor, p2: torch.Tensor, k: int) -> torch.Tensor:
    """Context: centre patch p1 and neighbour p2 -> (N, 24), the facing features of each of the 8
    directions the neighbour could lie in."""
    a, b = grey_z(p1), grey_z(p2)
    return torch.cat([facing(a, b, dy, dx, k) for dy, dx in DIRECTIONS], 1)


def pair_edges(tiles: torch.Tensor, k: int) -> torch.Tensor:
    """Jigsaw: (N, 9, C, T, T) -> (N, 9, 9, 2, 3): [i, j, 0] tile j right of tile i, [i, j, 1] j
    below i, each the facing features of the two strips."""
    n, t = tiles.shape[:2]
    g = grey_z(tiles.flatten(0, 1)).view(n, t, *tiles.shape[-2:])
    a = g[:, :, None].expand(n, t, t, *g.shape[-2:]).flatten(0, 2)
    b = g[:, None, :].expand(n, t, t, *g.shape[-2:]).flatten(0, 2)
    right, below = facing(a, b, 0, 1, k), facing(a, b, 1, 0, k)
    return torch.stack([right, below], 1).view(n, t, t, 2, 3)


def _highpass(x: torch.Tensor) -> torch.Tensor:
    return x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def _parabola(m: torch.Tensor, c: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Sub-pixel offset of a peak from its value c and neighbours m (at -1) and p (at +1)."""
    den = m - 2 * c + p
    return torch.where(den.abs() > EPS, 0.5 * (m - p) / den, torch.zeros_like(den)).clamp(-0.5, 0.5)


def _xcorr(a: torch.Tensor, b: torch.Tensor, r: int) -> torch.Tensor:
    """(N, H, W) channels -> (N, 2r+1, 2r+1): normalised cross-correlation of a's interior
    (r px margin) with b moved by each shift in [-r, r]^2; one grouped convolution per map."""
    n, h, w = a.shape
    core = a[:, r:h - r, r:w - r]
    core = core / (core.flatten(1).norm(dim=1)[:, None, None] + EPS)
    dots = F.conv2d(b[None], core[:, None], groups=n)[0]
    energy = F.conv2d((b * b)[None], torch.ones(n, 1, h - 2 * r, w - 2 * r), groups=n)[0]
    return dots / (energy.clamp(min=0).sqrt() + EPS)


def channel_shifts(x: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 15): for each channel pair (G-R, G-B, R-B), the shift (dy, dx) that
    maximises the normalised cross-correlation of the high-passed channels (integer search in
    [-radius, radius]^2, parabolic sub-pixel refinement), its peak value, and a one-step
    Lucas-Kanade shift estimate (dy, dx) from the standardised channels."""
    x = _f(x)
    n, _, h, w = x.shape
    r = min(radius, (min(h, w) - 3) // 2)
    hp = _highpass(x)
    z = (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + EPS)
    gy, gx = torch.gradient(z, dim=(2, 3))
    rows = torch.arange(n)
    out = []
    for ca, cb in CHANNEL_PAIRS:
        cc = _xcorr(hp[:, ca], hp[:, cb], r)
        peak, idx = cc.flatten(1).max(1)
        iy, ix = idx // (2 * r + 1), idx % (2 * r + 1)
        cy, cx = cc[rows, :, ix], cc[rows, iy, :]
        ym = cy.gather(1, (iy - 1).clamp(min=0)[:, None])[:, 0]
        yp = cy.gather(1, (iy + 1).clamp(max=2 * r)[:, None])[:, 0]
        xm = cx.gather(1, (ix - 1).clamp(min=0)[:, None])[:, 0]
        xp = cx.gather(1, (ix + 1).clamp(max=2 * r)[:, None])[:, 0]
        inner_y, inner_x = (iy > 0) & (iy < 2 * r), (ix > 0) & (ix < 2 * r)  # no refinement at the search edge
        dy = iy.float() - r + _parabola(ym, peak, yp) * inner_y
        dx = ix.float() - r + _parabola(xm, peak, xp) * inner_x
        # Lucas-Kanade: channel b ~ channel a moved by d  =>  b - a ~ -grad(a) . d
        ay, ax, diff = gy[:, ca], gx[:, ca], z[:, cb] - z[:, ca]
        syy, sxx, sxy = (ay * ay).sum((1, 2)), (ax * ax).sum((1, 2)), (ay * ax).sum((1, 2))
        by, bx = -(ay * diff).sum((1, 2)), -(ax * diff).sum((1, 2))
        det = syy * sxx - sxy * sxy + EPS
        out += [dy, dx, peak, (sxx * by - sxy * bx) / det, (syy * bx - sxy * by) / det]
    return torch.stack(out, 1)


HIST_BINS = 8
QUANTILES = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])


def colour_stats(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C * (7 + HIST_BINS)): per channel mean, std, 5 quantiles and a soft
    (triangular-kernel) histogram over [-1, 1] (values beyond fall in the end bins)."""
    x = _f(x)
    flat = x.flatten(2)
    centres = torch.linspace(-1, 1, HIST_BINS)
    width = 2.0 / (HIST_BINS - 1)
    v = flat.clamp(-1, 1)[..., None]
    hist = (1 - (v - centres).abs() / width).clamp(min=0).mean(2)  # (N, C, bins)
    q = torch.quantile(flat, QUANTILES, dim=2).permute(1, 2, 0)      # (N, C, 5)
    return torch.cat([flat.mean(2), flat.std(2), q.flatten(1), hist.flatten(1)], 1)


def low_frequency(x: torch.Tensor, cells: int = 3) -> torch.Tensor:
    """(N, C, H, W) -> (N, C * cells^2): the content averaged over a cells x cells grid."""
    return F.adaptive_avg_pool2d(_f(x), cells).flatten(1)


def _energy(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, 4C): mean squared high-pass (3x3 and 5x5 box residuals), mean squared
    gradient and mean absolute Laplacian, per channel."""
    hp3 = _highpass(x)
    hp5 = x - F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    gy, gx = torch.gradient(x, dim=(2, 3))
    lap = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"),
                   torch.tensor([[0., 1, 0], [1, -4, 1], [0, 1, 0]]).expand(x.shape[1], 1, 3, 3), groups=x.shape[1])
    return torch.cat([hp3.pow(2).mean((2, 3)), hp5.pow(2).mean((2, 3)), (gy * gy + gx * gx).mean((2, 3)),
                      lap.abs().mean((2, 3))], 1)


def frequency_stats(x: torch.Tensor) -> torch.Tensor:
    """Artifacts, real vs repaired: (N, C, H, W) -> per-image colour statistics and the
    high-frequency energy at full and half resolution, (log) per channel."""
    x = _f(x)
    half = F.avg_pool2d(x, 2)
    return torch.cat([colour_stats(x), (_energy(x) + EPS).log(), (_energy(half) + EPS).log()], 1)


def band_masks(region: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """region (N, 1, H, W) in {0, 1} -> (inside band, outside band, rest): the k px just inside
    and just outside the region's boundary, and the pixels farther from it."""
    r = region.float()
    grow = F.max_pool2d(r, 2 * k + 1, stride=1, padding=k)
    shrink = 1 - F.max_pool2d(1 - r, 2 * k + 1, stride=1, padding=k)
    inside, outside = r - shrink, grow - r
    return inside, outside, 1 - grow + shrink


def band_stats(x: torch.Tensor, region: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C, H, W) image and the (N, 1, H, W) region whose boundary is the seam to look at
    (damage, hole) -> (N, 10): the mean jump between neighbouring pixels that straddle the
    boundary, the same between pixels that do not, their log ratio, and the high-pass energy and
    the mean absolute deviation from the local mean in the k px band inside, outside, and in
    the rest of the image. Images whose region has no boundary get zeros."""
    x = _f(x)
    r = _f(region)
    g = x.mean(1, keepdim=True)
    jy, jx = (g[..., 1:, :] - g[..., :-1, :]).abs(), (g[..., :, 1:] - g[..., :, :-1]).abs()
    cy, cx = (r[..., 1:, :] != r[..., :-1, :]).float(), (r[..., :, 1:] != r[..., :, :-1]).float()

    def mean(v, m):
        return (v * m).sum((1, 2, 3)) / (m.sum((1, 2, 3)) + EPS)

    across = (mean(jy, cy) * cy.sum((1, 2, 3)) + mean(jx, cx) * cx.sum((1, 2, 3))) / (cy.sum((1, 2, 3)) + cx.sum((1, 2, 3)) + EPS)
    along = (mean(jy, 1 - cy) + mean(jx, 1 - cx)) / 2
    hp = _highpass(x).pow(2).mean(1, keepdim=True)
    dev = (g - F.avg_pool2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), 3, stride=1)).abs()
    inside, outside, rest = band_masks(r, k)
    feats = [across, along, (across + EPS).log() - (along + EPS).log()]
    for m in (inside, outside, rest):
        feats += [(mean(hp, m) + EPS).log(), mean(dev, m)]
    has = ((cy.sum((1, 2, 3)) + cx.sum((1, 2, 3))) > 0).float()
    feats.append(has)
    return torch.stack(feats, 1) * has[:, None]

"""`SyntheticBatches`: on-device batches with the DaliLoader interface, for tests, benchmarks
(the trainer's speed without any input pipeline) and profiling.

The images are made once (smooth random colour fields in [-1, 1], so an autoencoder has structure
to learn) and reused every step: the cost per step is the task's random parts only (e.g. a fresh
Omega per batch, drawn on the device from (seed, rank, position), so a resumed run sees the same
masks). `fixed=True` reuses the first batch's random parts too (one fixed batch).

Interface as DaliLoader: iterating yields one epoch (`length` batches, or forever when None) of
dicts of tensors on `device`; `len()`; `state_dict()` / `load_state_dict()` hold the position.
The rank comes from torch.distributed when initialised, so every rank gets other data.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def smooth_images(gen: torch.Generator, n: int, size: int, device) -> torch.Tensor:
    """(n, 3, size, size) float32 in [-1, 1]: coarse noise upsampled plus a little fine detail."""
    coarse = torch.rand(n, 3, max(size // 8, 2), max(size // 8, 2), generator=gen, device=device) * 2 - 1
    img = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    img = img + 0.1 * (torch.rand(n, 3, size, size, generator=gen, device=device) * 2 - 1)
    return img.clamp(-1, 1)


def _artifacts(gen, b, s, device, params):
    m, theta = int(params["mask_size"]), float(params["theta"])
    return {"mask": (torch.rand(b, 1, m, m, generator=gen, device=device) >= theta).float()}


def _images(gen, b, s, device, params):
    return {}


def _context(gen, b, s, device, params):
    # the pipeline's geometry without jitter or countermeasures: centre patch and one neighbour
    from ..pipeline.context import NEIGHBOURS, ContextParams

    geo = ContextParams(**params).geometry(s)
    img, p, step = smooth_images(gen, b, s, device), geo.patch, geo.patch + geo.gap
    c = geo.jitter + step
    pos = torch.randint(0, len(NEIGHBOURS), (b,), generator=gen, device=device)
    cands = torch.stack([img[:, :, c + dy * step:c + dy * step + p, c + dx * step:c + dx * step + p]
                         for dy, dx in NEIGHBOURS.tolist()])
    return {"patch1": img[:, :, c:c + p, c:c + p], "patch2": cands[pos, torch.arange(b, device=device)],
            "position": pos}


_PERMS: dict = {}


def _jigsaw(gen, b, s, device, params):
    # tiles at the centre of their cells (no gap, jitter or greyscale), shuffled by the set
    from ..pipeline.jigsaw import JigsawParams

    jp = JigsawParams(**params)
    geo = jp.geometry(s)
    img, t = smooth_images(gen, b, s, device), geo.tile
    offs = [geo.origin + k * geo.cell + (geo.cell - t) // 2 for k in range(3)]
    cells = torch.stack([img[:, :, y:y + t, x:x + t] for y in offs for x in offs], 1)  # (B, 9, 3, T, T)
    key = (jp.count, jp.criterion, jp.perm_seed, jp.permutations, str(device))
    if key not in _PERMS:  # read once, not every step
        _PERMS[key] = torch.as_tensor(jp.load_set(), dtype=torch.long, device=device)
    perms = _PERMS[key]
    label = torch.randint(0, len(perms), (b,), generator=gen, device=device)
    tiles = cells[torch.arange(b, device=device)[:, None], perms[label]]  # tile i = cell perm[i]
    return {"tiles": tiles, "permutation": label}


def _inpainting(gen, b, s, device, params):
    # centre holes whatever the mode (the geometry of pipeline/inpainting.py's "center")
    from ..pipeline.inpainting import centre_square

    overlap, w = int(params.get("overlap", 4)), float(params.get("overlap_weight", 10.0))
    start, side, hs, hside = centre_square(s, overlap)
    target = smooth_images(gen, b, s, device)
    mask = torch.zeros(b, 1, s, s, device=device)
    mask[..., hs:hs + hside, hs:hs + hside] = 1
    weight = torch.zeros_like(mask)
    weight[..., start:start + side, start:start + side] = w
    weight[mask > 0] = 1
    return {"image": target * (1 - mask), "target": target, "mask": mask, "weight": weight}


# pipeline task -> maker of the per-batch random outputs besides "image" and "label"
# (a maker may return its own "image", which replaces the fixed one)
MAKERS = {"artifacts": _artifacts, "images": _images, "context": _context, "jigsaw": _jigsaw,
          "inpainting": _inpainting}


class SyntheticBatches:
    def __init__(self, task: str, batch_size: int, image_size: int, device="cpu", dtype: str = "float32",
                 seed: int = 0, params: dict | None = None, length: int | None = None, fixed: bool = False):
        if task not in MAKERS:
            raise ValueError(f"no synthetic batches for pipeline task {task!r}; have {sorted(MAKERS)}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if length is not None and length < 1:
            raise ValueError(f"length must be >= 1 or None, got {length}")
        self.task, self.batch_size, self.image_size = task, batch_size, image_size
        self.device, self.dtype = torch.device(device), _DTYPES[dtype]
        self.params, self.length, self.fixed = dict(params or {}), length, fixed
        self.seed = seed * 1000 + _rank()  # every rank its own data
        self.position = 0  # batches yielded so far, all epochs
        self._gen = torch.Generator(device=self.device)
        self._gen.manual_seed(self.seed)
        self._images = smooth_images(self._gen, batch_size, image_size, self.device).to(self.dtype)
        self._labels = torch.full((batch_size,), -1, dtype=torch.long, device=self.device)
        self._first = self._make(0)

    def _make(self, position: int) -> dict:
        self._gen.manual_seed(self.seed * 1_000_003 + position + 1)
        extra = MAKERS[self.task](self._gen, self.batch_size, self.image_size, self.device, self.params)
        return {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in extra.items()}

    def __len__(self) -> int:
        return self.length if self.length is not None else sys.maxsize

    def __iter__(self):
        """From the current position to the end of its epoch."""
        while True:
            extra = self._first if self.fixed else self._make(self.position)
            self.position += 1
            yield {"image": self._images, **extra, "label": self._labels}
            if self.length is not None and self.position % self.length == 0:
                return

    @property
    def epoch(self) -> int:
        return self.position // self.length if self.length else 0

    def state_dict(self) -> dict:
        return {"kind": "synthetic", "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict):
        if state.get("kind") != "synthetic":
            raise ValueError(f"the saved data position is from a {state.get('kind')!r} loader, not synthetic data")
        self.position = int(state["position"])

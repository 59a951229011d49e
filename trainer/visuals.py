"""Pictures of what a task sees: one batch drawn as a PNG grid, one row per sample, and, for a
run's checkpoints, the trained networks' view of the same batch beside it.

- artifacts: image | image with the dropped cells of Omega in semi-transparent red; with a model:
  its reconstruction D(E(x)) | the damaged-then-repaired image | C's predicted dropped cells as a
  heat map (black kept, yellow dropped), and C's real/fake call in the caption;
- inpainting: masked input | target | weight map (black 0, grey the hole's 1, white the band);
  with a model: the prediction filled into the hole;
- context: patch1 | patch2 | both drawn at their places in the 3x3 neighbourhood;
- jigsaw: the 9 tiles in the order the network gets them | the tiles put back by the permutation;
- images: the augmented image.
Each row's caption gives the label (class, position or permutation), the model's prediction
when given, and a statistic (dropped cells, hole fraction). Images in [-1, 1] are shown as they
are (clipped); jigsaw tiles are standardised per tile (mean +- 2.5 std), which is how the
network sees them with tile_norm.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

PAD = 4          # px between panels and around the grid
TEXT_H = 14      # px of one caption / header line
MIN_PANEL = 96   # small inputs are enlarged (nearest neighbour) to at least this side
RED = np.array([255.0, 0.0, 0.0])
ALPHA = 0.45     # opacity of the red over dropped cells

HEADERS = {
    "artifacts": ["image", "dropped cells (red)"],
    "inpainting": ["masked input", "target", "loss weight"],
    "context": ["patch1", "patch2", "relative position"],
    "jigsaw": ["tiles as fed", "reassembled"],
    "images": ["image"],
}
# extra columns when a trained model's outputs are drawn beside the inputs (checkpoint grids)
OUTPUT_HEADERS = {
    "artifacts": ["reconstruction", "damaged + repaired", "C: dropped? (heat)"],
    "inpainting": ["prediction filled in"],
}
REQUIRED = {
    "artifacts": ("image", "mask"),
    "inpainting": ("image", "target", "mask", "weight"),
    "context": ("patch1", "patch2", "position"),
    "jigsaw": ("tiles", "permutation"),
    "images": ("image",),
}


def _np(t) -> np.ndarray:
    """torch tensor (any float dtype, any device) or array -> float32/int numpy on the CPU."""
    if hasattr(t, "detach"):
        t = t.detach().cpu()
        t = t.float() if t.is_floating_point() else t
        return t.numpy()
    return np.asarray(t)


def _unit(chw: np.ndarray) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) in [0, 1], clipped."""
    return np.clip((chw.transpose(1, 2, 0) + 1.0) / 2.0, 0.0, 1.0)


def _standardised(chw: np.ndarray) -> np.ndarray:
    x = chw.transpose(1, 2, 0)
    return np.clip((x - x.mean()) / (5.0 * (x.std() + 1e-6)) + 0.5, 0.0, 1.0)


def _u8(x: np.ndarray, scale: int) -> np.ndarray:
    # a diverged model's NaN outputs draw black (its checkpoint grid is still written, no warning)
    x = (np.clip(np.nan_to_num(x, nan=0.0), 0, 1) * 255.0 + 0.5).astype(np.uint8)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=2)
    return np.repeat(np.repeat(x, scale, axis=0), scale, axis=1) if scale > 1 else x


def _upsample_nearest(mask: np.ndarray, size: int) -> np.ndarray:
    """(M, M) -> (size, size); also right when size is not a multiple of M."""
    idx = np.arange(size) * mask.shape[0] // size
    return mask[np.ix_(idx, idx)]


def _scale(side: int) -> int:
    return max(1, math.ceil(MIN_PANEL / side))


def _heat(p: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3): black (0) through red to yellow (1)."""
    p = np.clip(p, 0.0, 1.0)[..., None]
    return np.concatenate([np.minimum(1.0, 2 * p), np.clip(2 * p - 1, 0, 1), np.zeros_like(p)], axis=-1)


def _artifacts_rows(b, out=None):
    image, mask = _np(b["image"]), _np(b["mask"])[:, 0]
    s, m = image.shape[-1], mask.shape[-1]
    k = _scale(s)
    rows = []
    for i in range(len(image)):
        rgb = _unit(image[i])
        dropped = _upsample_nearest(1.0 - mask[i], s)[..., None]
        overlay = rgb * (1 - ALPHA * dropped) + (RED / 255.0) * ALPHA * dropped
        n = int(round((1.0 - mask[i]).sum()))
        panels, caption = [_u8(rgb, k), _u8(overlay, k)], f"{_label(b, i)}dropped {n}/{m * m}"
        if out is not None:
            prob = _np(out["dropped_prob"])[i, 0]
            panels += [_u8(_unit(_np(out["reconstruction"])[i]), k), _u8(_unit(_np(out["repaired"])[i]), k),
                       _u8(_heat(_upsample_nearest(prob, s)), k)]
            caption += f", C says real {float(_np(out['real_prob'])[i]):.2f}"
        rows.append((panels, caption))
    return rows


def _inpainting_rows(b, out=None):
    image, target, mask, weight = (_np(b[n]) for n in ("image", "target", "mask", "weight"))
    k = _scale(image.shape[-1])
    rows = []
    for i in range(len(image)):
        w = weight[i, 0]
        pos = w[w > 0]
        lo, hi = (float(pos.min()), float(pos.max())) if pos.size else (0.0, 0.0)
        # 0 black, the smallest positive weight (the hole's 1) mid grey, the largest (band) white
        shown = np.where(w > 0, 0.5 + 0.5 * (w - lo) / (hi - lo) if hi > lo else 1.0, 0.0)
        caption = f"{_label(b, i)}hole {100 * mask[i].mean():.1f}%, weights {lo:g}/{hi:g}"
        panels = [_u8(_unit(image[i]), k), _u8(_unit(target[i]), k), _u8(shown, k)]
        if out is not None:
            panels.append(_u8(_unit(_np(out["fill"])[i]), k))
        rows.append((panels, caption))
    return rows


def _context_rows(b, gap, out=None):
    from ..pipeline.context import NEIGHBOURS

    p1, p2, pos = _np(b["patch1"]), _np(b["patch2"]), _np(b["position"]).reshape(-1)
    p = p1.shape[-1]
    gap = p // 2 if gap is None else int(gap)  # paper: 48 px between 96 px patches
    side = 3 * p + 2 * gap
    k, kc = _scale(p), _scale(side)
    rows = []
    for i in range(len(p1)):
        dy, dx = (int(v) for v in NEIGHBOURS[int(pos[i])])
        canvas = np.full((side, side, 3), 0.15)
        canvas[p + gap : 2 * p + gap, p + gap : 2 * p + gap] = _unit(p1[i])
        y, x = (1 + dy) * (p + gap), (1 + dx) * (p + gap)
        canvas[y : y + p, x : x + p] = _unit(p2[i])
        caption = f"{_label(b, i)}position {int(pos[i])} (dy {dy:+d}, dx {dx:+d}){_predicted(out, i)}"
        rows.append(([_u8(_unit(p1[i]), k), _u8(_unit(p2[i]), k), _u8(canvas, kc)], caption))
    return rows


def _tile_grid(tiles, order, t, gap):
    """Tiles (9, 3, T, T) placed so that tiles[i] lands in grid cell order[i] (row-major)."""
    side = 3 * t + 2 * gap
    grid = np.full((side, side, 3), 0.15)
    for i, cell in enumerate(order):
        y, x = (cell // 3) * (t + gap), (cell % 3) * (t + gap)
        grid[y : y + t, x : x + t] = _standardised(tiles[i])
    return grid


def _jigsaw_rows(b, permutations, out=None):
    tiles, label = _np(b["tiles"]), _np(b["permutation"]).reshape(-1)
    t = tiles.shape[-1]
    gap = max(1, t // 8)
    k = _scale(3 * t + 2 * gap)
    rows = []
    for i in range(len(tiles)):
        fed = _tile_grid(tiles[i], range(9), t, gap)
        panels = [_u8(fed, k)]
        if permutations is not None:
            perm = [int(v) for v in permutations[int(label[i])]]
            # tile i was cut from cell perm[i] (jigsaw contract): putting it back there restores
            panels.append(_u8(_tile_grid(tiles[i], perm, t, gap), k))
            caption = f"{_label(b, i)}perm #{int(label[i])} = {' '.join(map(str, perm))}{_predicted(out, i)}"
        else:
            caption = f"{_label(b, i)}perm #{int(label[i])} (set not given: no reassembly)"
        rows.append((panels, caption))
    return rows


def _images_rows(b, out=None):
    image = _np(b["image"])
    k = _scale(image.shape[-1])
    return [([_u8(_unit(image[i]), k)], (_label(b, i).rstrip(", ") or f"sample {i}") + _predicted(out, i))
            for i in range(len(image))]


def _predicted(out, i) -> str:
    """", predicted 3" when a model's prediction is given."""
    if out is None or "pred" not in out:
        return ""
    return f", predicted {int(_np(out['pred']).reshape(-1)[i])}"


def _label(b, i) -> str:
    if "label" not in b:
        return ""
    return f"class {int(_np(b['label']).reshape(-1)[i])}, "


def _compose(header: list[str], rows: list[tuple[list[np.ndarray], str]]) -> Image.Image:
    """Panels in columns, a header line on top and a caption line under each row."""
    ncol = max(len(panels) for panels, _ in rows)
    colw = [max(p[c].shape[1] for p, _ in rows if c < len(p)) for c in range(ncol)]
    rowh = [max(q.shape[0] for q in p) for p, _ in rows]
    width = PAD + sum(w + PAD for w in colw)
    height = PAD + TEXT_H + PAD + sum(h + TEXT_H + PAD for h in rowh)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=11)
    x = PAD
    for c in range(ncol):
        draw.text((x, PAD), header[c] if c < len(header) else "", fill=(0, 0, 0), font=font)
        x += colw[c] + PAD
    y = PAD + TEXT_H + PAD
    for (panels, caption), h in zip(rows, rowh):
        x = PAD
        for c, panel in enumerate(panels):
            img.paste(Image.fromarray(panel), (x, y))
            x += colw[c] + PAD
        draw.text((PAD, y + h), caption, fill=(0, 0, 0), font=font)
        y += h + TEXT_H + PAD
    return img


def render_preview(batch: dict, task: str, path: str, *, permutations: np.ndarray | None = None,
                   context_gap: int | None = None, outputs: dict | None = None) -> tuple[int, int]:
    """Draw `batch` (names as the task's generator emits them, torch tensors or arrays, leading
    batch dimension) to the PNG `path`; returns its (width, height). `permutations` (count, 9)
    lets jigsaw rows show the reassembled image; `context_gap` is the pipeline's gap between
    patches in px (default half the patch side, the paper's ratio), used to place the pair.
    `outputs`: a trained model's view of the batch (`model_outputs`), drawn beside it."""
    if task not in REQUIRED:
        raise ValueError(f"cannot preview task {task!r}; choose one of {sorted(REQUIRED)}")
    missing = [n for n in REQUIRED[task] if n not in batch]
    if missing:
        raise ValueError(f"{task} batch lacks {missing}; got {sorted(batch)}")
    if task == "artifacts":
        rows = _artifacts_rows(batch, outputs)
    elif task == "inpainting":
        rows = _inpainting_rows(batch, outputs)
    elif task == "context":
        rows = _context_rows(batch, context_gap, outputs)
    elif task == "jigsaw":
        rows = _jigsaw_rows(batch, permutations, outputs)
    else:
        rows = _images_rows(batch, outputs)
    if not rows:
        raise ValueError("empty batch: nothing to preview")
    img = _compose(HEADERS[task] + (OUTPUT_HEADERS.get(task, []) if outputs is not None else []), rows)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path, format="PNG")
    log.info("preview of %d %s samples -> %s (%dx%d)", len(rows), task, path, *img.size)
    return img.size



@contextmanager
def _eval_mode(models: dict):
    """Every module in eval mode inside, each submodule's own mode restored after (a frozen
    decoder inside a training generator stays in eval)."""
    modes = [(m, m.training) for model in models.values() for m in model.modules()]
    try:
        for model in models.values():
            model.eval()
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def save_task_grid(task, models: dict, batch: dict, cfg, path: str, samples: int = 8) -> tuple[int, int]:
    """The first `samples` of `batch` with `task`'s networks' outputs on them (eval mode, no
    gradients), drawn to `path`: what the run sees and what it makes of it."""
    # float32 copies: the networks' weights are float32 whatever precision the run's autocast uses
    small = {k: v[:samples].float() if v.is_floating_point() else v[:samples] for k, v in batch.items()}
    with _eval_mode(models), torch.no_grad():
        outputs = task.model_outputs(models, small, cfg)
    pipeline_task = task.pipeline_task
    perms = cfg.pipeline.load_set() if pipeline_task == "jigsaw" else None
    gap = cfg.pipeline.geometry(cfg.image_size).gap if pipeline_task == "context" else None
    return render_preview(small, pipeline_task, path, permutations=perms, context_gap=gap, outputs=outputs)

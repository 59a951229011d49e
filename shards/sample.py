"""`make_sample`: a labelled procedural image collection for demos and tests (no data needed).

Eight classes of shapes and textures with random colours, sizes, positions and backgrounds;
about one image in eight is greyscale, sizes vary around `size`. Deterministic by seed."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circles", "squares", "triangles", "stripes", "checker", "rings", "gradient", "blobs")


def _colour(rng):
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _background(rng, w, h):
    a, b = np.array(_colour(rng), float), np.array(_colour(rng), float)
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    img = a * (1 - t) + b * t + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def draw(cls: str, rng: np.random.Generator, w: int, h: int) -> Image.Image:
    img = _background(rng, w, h)
    d = ImageDraw.Draw(img)
    s = min(w, h)
    if cls in ("circles", "squares", "triangles"):
        for _ in range(int(rng.integers(1, 5))):
            r = int(rng.integers(s // 8, s // 3))
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            if cls == "circles":
                d.ellipse([x - r, y - r, x + r, y + r], fill=_colour(rng))
            elif cls == "squares":
                d.rectangle([x - r, y - r, x + r, y + r], fill=_colour(rng))
            else:
                d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=_colour(rng))
    elif cls == "stripes":
        period = int(rng.integers(4, max(5, s // 4)))
        c = _colour(rng)
        for x in range(-h, w + h, period * 2):
            d.polygon([(x, 0), (x + period, 0), (x + period + h, h), (x + h, h)], fill=c)
    elif cls == "checker":
        cell = int(rng.integers(4, max(5, s // 4)))
        c = _colour(rng)
        for y in range(0, h, cell):
            for x in range((y // cell) % 2 * cell, w, 2 * cell):
                d.rectangle([x, y, x + cell - 1, y + cell - 1], fill=c)
    elif cls == "rings":
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        c, step = _colour(rng), int(rng.integers(3, max(4, s // 6)))
        for r in range(step, 2 * s, 2 * step):
            d.ellipse([x - r, y - r, x + r, y + r], outline=c, width=max(1, step // 2))
    elif cls == "gradient":
        yy, xx = np.mgrid[0:h, 0:w]
        ang = rng.uniform(0, 2 * np.pi)
        t = (np.cos(ang) * xx + np.sin(ang) * yy) / s
        a, b = np.array(_colour(rng)), np.array(_colour(rng))
        m = (np.sin(t * rng.uniform(2, 8)) + 1) / 2
        img = Image.fromarray((a * m[..., None] + b * (1 - m[..., None])).astype(np.uint8))
    else:  # blobs: smooth coloured noise
        small = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(1))
    return img


def make_sample(out: str, count: int = 512, size: int = 64, seed: int = 0, classes: int = len(CLASSES)) -> list[str]:
    """Write `count` images as `out/<class>/<class>_<i>.jpg|png`. -> the written paths."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not 1 <= classes <= len(CLASSES):
        raise ValueError(f"classes must be in 1..{len(CLASSES)}, got {classes}")
    if size < 16:
        raise ValueError(f"size must be >= 16 px, got {size}")
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        cls = CLASSES[i % classes]
        w, h = (int(size * f) for f in rng.uniform(0.8, 1.5, 2))
        img = draw(cls, rng, w, h)
        if rng.random() < 0.125:
            img = img.convert("L")  # some greyscale images, as real collections have
        folder = os.path.join(out, cls)
        os.makedirs(folder, exist_ok=True)
        ext = "png" if i % 10 == 9 else "jpg"
        path = os.path.join(folder, f"{cls}_{i:06d}.{ext}")
        img.save(path, quality=90) if ext == "jpg" else img.save(path)
        paths.append(path)
    return paths

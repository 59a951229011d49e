"""The 224 px benchmark data: JPEGs of ImageNet's typical size made from a small-image archive.

tiny-imagenet-a is 64x64. Decoding cost follows the bytes of a JPEG (entropy decoding) and its
pixels (IDCT, colour conversion), so a 224 px pipeline must read images the size of ImageNet's,
not 64 px ones. `build-shards --resize` only shrinks, so this upscales instead: `--count`
images spread evenly over SOURCE (a tar/tar.gz of class folders, read as a stream), each
resized bicubically to 500x375 (one in four 375x500; ILSVRC-2012's most common sizes), plus
optional Gaussian luma grain of std `--grain` grey levels (an upscale is smoother than a photo
and compresses to fewer bytes; grain brings the bytes towards a photograph's), saved at JPEG
`--quality` into OUT/<class>/<name>.jpg. Deterministic: the same arguments give the same bytes.
Prints and writes OUT/upscale.json with the mean bytes per image.

    python tools/bench/upscale.py ../shared/datasets/tiny-imagenet-a/train-00.tar.gz --out /tmp/up224 \\
        --count 4096 --grain 12 -j 16
    spotart build-shards /tmp/up224 --out /tmp/shards224 -j 16
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import tarfile
import time

import numpy as np
from PIL import Image

EXTS = (".jpg", ".jpeg", ".png")


def read_members(source: str) -> list[tuple[str, bytes]]:
    """(class/name, bytes) of every image in the archive, in archive order."""
    out = []
    with tarfile.open(source, "r:*") as tf:
        for m in tf:
            if m.isfile() and m.name.lower().endswith(EXTS):
                parts = m.name.split("/")
                if len(parts) < 2:
                    raise ValueError(f"{source}: {m.name} is not in a class folder (want CLASS/NAME.jpg)")
                out.append((f"{parts[-2]}/{os.path.splitext(parts[-1])[0]}", tf.extractfile(m).read()))
    if not out:
        raise ValueError(f"{source}: no .jpg/.jpeg/.png members; give a tar or tar.gz of class folders")
    return out


def upscale(task) -> tuple[str, int]:
    i, name, data, out, long_side, grain, quality = task
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = (long_side, long_side * 3 // 4) if i % 4 else (long_side * 3 // 4, long_side)
    big = img.resize((w, h), Image.Resampling.BICUBIC)
    if grain > 0:
        a = np.asarray(big, np.float32) + np.random.default_rng(i).normal(0.0, grain, (h, w, 1)).astype(np.float32)
        big = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))
    path = os.path.join(out, name + ".jpg")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    big.save(path, "JPEG", quality=quality)
    return path, os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("source", help="tar or tar.gz of CLASS/NAME.jpg images")
    ap.add_argument("--out", required=True, help="output folder (class folders, for spotart build-shards)")
    ap.add_argument("--count", type=int, default=4096, help="images, spread evenly over the archive")
    ap.add_argument("--long-side", type=int, default=500, help="longer side in px (aspect 4:3)")
    ap.add_argument("--grain", type=float, default=12.0, help="std of the added luma noise, grey levels (0: none)")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality")
    ap.add_argument("-j", "--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if args.count < 1 or args.long_side < 16 or not 1 <= args.quality <= 100 or args.grain < 0:
        ap.error("need --count >= 1, --long-side >= 16, --quality in 1..100, --grain >= 0")
    t = time.perf_counter()
    members = read_members(args.source)
    pick = np.linspace(0, len(members) - 1, min(args.count, len(members))).round().astype(int)
    tasks = [(i, *members[k], args.out, args.long_side, args.grain, args.quality) for i, k in enumerate(pick)]
    with mp.Pool(args.workers) as pool:
        sizes = [s for _, s in pool.imap(upscale, tasks, chunksize=16)]
    info = {"source": os.path.abspath(args.source), "count": len(sizes), "mean_bytes": float(np.mean(sizes)),
            "median_bytes": float(np.median(sizes)), "source_mean_bytes": float(np.mean([len(members[k][1]) for k in pick])),
            "long_side": args.long_side, "grain": args.grain, "quality": args.quality,
            "seconds": time.perf_counter() - t}
    with open(os.path.join(args.out, "upscale.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"wrote {info['count']} images to {args.out}: mean {info['mean_bytes'] / 1e3:.1f} kB per image "
          f"(source {info['source_mean_bytes'] / 1e3:.1f} kB), {args.long_side}x{args.long_side * 3 // 4} / "
          f"{args.long_side * 3 // 4}x{args.long_side}, grain {args.grain}, quality {args.quality}, {info['seconds']:.1f} s")


if __name__ == "__main__":
    main()

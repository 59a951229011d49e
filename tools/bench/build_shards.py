"""Benchmark: `build_shards` on the tiny-imagenet-a archives with -j 1 and -j 2, against a plain
single-process `webdataset.ShardWriter` loop doing the same per-image work (stream the archive,
decode and check, convert/re-encode where needed), measured in the same run.

    python tools/bench/build_shards.py [--data ../shared/datasets/tiny-imagenet-a] [--archives val.tar.gz]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tarfile
import tempfile
import time

import webdataset as wds

from spotart.shards.build import build_shards
from spotart.shards.images import BadImage, convert
from spotart.shards.sources import is_image_name
from spotart.shards.spec import ShardSpec

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "datasets", "tiny-imagenet-a"))


def baseline(archives: list[str], out: str, spec: ShardSpec) -> int:
    """What a user writes by hand: stream, convert, ShardWriter. No shuffle, resume or catalog."""
    os.makedirs(out, exist_ok=True)
    n = 0
    with wds.ShardWriter(os.path.join(out, "base-%06d.tar"), maxcount=spec.max_count, verbose=0) as sink:
        for a in archives:
            with tarfile.open(a, "r|*") as tf:
                for m in tf:
                    if not (m.isfile() and is_image_name(m.name)):
                        continue
                    data = tf.extractfile(m).read()
                    try:
                        jpg, _ = convert(data, spec.resize, spec.quality, spec.max_pixels)
                    except BadImage:
                        continue
                    label = m.name.split("/")[-2]
                    sink.write({"__key__": f"{n:010d}", "jpg": jpg, "cls": label.encode(), "json": {"source": m.name}})
                    n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--archives", nargs="+", default=["train-00.tar.gz", "train-01.tar.gz", "val.tar.gz"])
    ap.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    archives = [os.path.join(args.data, a) for a in args.archives]
    for a in archives:
        if not os.path.isfile(a):
            raise SystemExit(f"{a}: missing; pass --data DIR with the tiny-imagenet-a archives")
    work = args.workdir or tempfile.mkdtemp(prefix="spotart-bench-")
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; archives: {args.archives}")
    spec = ShardSpec(max_count=10_000)
    t = time.perf_counter()
    nb = baseline(archives, os.path.join(work, "base"), spec)
    base_rate = nb / (time.perf_counter() - t)
    print(f"baseline webdataset.ShardWriter loop, 1 process: {nb} images, {base_rate:.0f} img/s")
    for j in (1, 2):
        out = os.path.join(work, f"j{j}")
        t = time.perf_counter()
        r = build_shards(archives, out, ShardSpec(max_count=10_000, workers=j), overwrite=True, progress=False)
        rate = r.num_samples / (time.perf_counter() - t)
        print(f"spotart build-shards -j {j}: {r.num_samples} samples, {r.duplicates} duplicates, "
              f"{rate:.0f} img/s, ratio vs baseline {rate / base_rate:.2f}x")
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

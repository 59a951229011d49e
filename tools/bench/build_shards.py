"""Benchmark: `build_shards` with -j 1, 2, ... against a plain single-process
`webdataset.ShardWriter` loop doing the same per-image work (stream the archive, decode and
check, convert/re-encode where needed), measured in the same run.

Rounds are interleaved (baseline, -j 1, -j 2, baseline, ...) so that load from other processes
falls on every configuration alike; each figure is the median of `--repeat` rounds. Besides
img/s it prints where the CPU time went: the main process vs the workers, and the wall time of
each stage (list, convert, survey, write), which is what tells a `-j` ceiling apart.

    python tools/bench/build_shards.py [--data ../shared/datasets/tiny-imagenet-a] [--jobs 1 2] [--repeat 3]
    python tools/bench/build_shards.py --listing-rss 1300000     # peak memory of a 1.3 M-image listing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

from spotart.shards.build import build_shards
from spotart.shards.images import BadImage, convert
from spotart.shards.sources import is_image_name
from spotart.shards.spec import ShardSpec

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "datasets", "tiny-imagenet-a"))


def baseline(archives: list[str], out: str, spec: ShardSpec) -> int:
    """What a user writes by hand: stream, convert, ShardWriter. No shuffle, resume or catalog."""
    # imported here, not at the top: spawned build workers re-import this script as their
    # __main__, and webdataset imports torch (~1.9 s of CPU per worker, per build)
    import webdataset as wds

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


def _cpu(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run_build(archives, out, spec) -> dict:
    s0, c0, t0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
    r = build_shards(archives, out, spec, overwrite=True, progress=False)
    wall = time.perf_counter() - t0
    return {"samples": r.num_samples, "duplicates": r.duplicates, "wall": wall, "rate": r.num_samples / wall,
            "main_cpu": _cpu(resource.RUSAGE_SELF) - s0, "worker_cpu": _cpu(resource.RUSAGE_CHILDREN) - c0,
            "stages": getattr(r, "stages", {})}   # older builders (comparisons) lack it


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def throughput(args, archives, work) -> dict:
    spec = ShardSpec(max_count=args.max_count, resize=args.resize)
    runs = {"baseline": []} if not args.no_baseline else {}
    runs.update({f"-j {j}": [] for j in args.jobs})
    for rnd in range(args.repeat):
        if not args.no_baseline:
            t = time.perf_counter()
            nb = baseline(archives, os.path.join(work, "base"), spec)
            runs["baseline"].append({"samples": nb, "rate": nb / (time.perf_counter() - t)})
            shutil.rmtree(os.path.join(work, "base"))
        for j in args.jobs:
            r = run_build(archives, os.path.join(work, f"j{j}"), ShardSpec(max_count=args.max_count, resize=args.resize, workers=j))
            runs[f"-j {j}"].append(r)
            shutil.rmtree(os.path.join(work, f"j{j}"))
        print(f"round {rnd + 1}/{args.repeat}: " + ", ".join(f"{k} {v[-1]['rate']:.0f}" for k, v in runs.items())
              + f" img/s; load {load()}", flush=True)
    return runs


def report(runs: dict) -> dict:
    med = {k: statistics.median(r["rate"] for r in v) for k, v in runs.items()}
    base, j1 = med.get("baseline"), med.get("-j 1")
    summary = {}
    for k, v in runs.items():
        rates = ", ".join(f"{r['rate']:.0f}" for r in v)
        line = f"{k:>9}: {med[k]:7.0f} img/s (median of {len(v)}: {rates})"
        if base and k != "baseline":
            line += f", {med[k] / base:.2f}x baseline"
        if j1 and k.startswith("-j"):
            line += f", {med[k] / j1:.2f}x -j 1"
        entry = {"img_per_s": med[k], "runs": [r["rate"] for r in v]}
        if k != "baseline":
            mid = sorted(v, key=lambda r: r["rate"])[len(v) // 2]
            line += (f"; main CPU {mid['main_cpu']:.1f} s, workers CPU {mid['worker_cpu']:.1f} s; stages "
                     + " ".join(f"{s} {t:.2f}" for s, t in mid["stages"].items()) + f" s; {mid['samples']} samples")
            entry.update(main_cpu=mid["main_cpu"], worker_cpu=mid["worker_cpu"], stages=mid["stages"], samples=mid["samples"])
        print(line)
        summary[k] = entry
    return summary


def make_names_only(path: str, count: int, classes: int = 1000):
    """ILSVRC2012 train's shape with empty members: `<wnid>.tar` inside, `<wnid>_<i>.JPEG` in those."""
    from spotart.shards.tario import member_header

    per = -(-count // classes)
    with open(path, "wb") as f:
        for c in range(classes):
            wnid, n = f"n{c:08d}", min(per, count - c * per)
            if n <= 0:
                break
            body = b"".join(member_header(f"{wnid}_{i}.JPEG", 0) for i in range(n)) + b"\0" * 1024
            body += b"\0" * (-len(body) % 10240)
            f.write(member_header(f"{wnid}.tar", len(body)) + body)
        f.write(b"\0" * 1024)


_RSS_CHILD = r"""
import json, resource, sys, time
from spotart.shards import build as b
from spotart.shards.sources import open_source
from spotart.shards.spec import ShardSpec
t = time.perf_counter()
srcs = [open_source(sys.argv[1])]
listings = b._list_sources(srcs, None)
classes = b._classes(listings, None, None, None)
ids = {c: i for i, c in enumerate(classes)}
n = len(listings[0])
batched = sum(len(x[2]) for x in b._batches(srcs, listings, [0, n], bytearray(n), ShardSpec(), ids))
print(json.dumps({"entries": n, "classes": len(classes), "batched": batched, "seconds": time.perf_counter() - t,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def listing_rss(count: int, work: str) -> dict:
    """Peak RSS of the main process listing `count` names (ILSVRC-shaped, names only), making
    the class table and every convert batch (dry: nothing is decoded), in a fresh process."""
    path = os.path.join(work, "names-only.tar")
    make_names_only(path, count)
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, path], check=True, capture_output=True, text=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"listing {r['entries']} names in {r['classes']} inner archives + class table + convert batches: "
          f"{r['seconds']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB")
    os.remove(path)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="folder of the archives ('' when --archives are paths)")
    ap.add_argument("--archives", nargs="+", default=["train-00.tar.gz", "train-01.tar.gz", "val.tar.gz"])
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="-j values to measure")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians")
    ap.add_argument("--resize", type=int, default=None, help="--resize for every build (re-encodes all images)")
    ap.add_argument("--max-count", type=int, default=10_000, help="samples per shard (shards are the write stage's parallelism)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the webdataset.ShardWriter loop")
    ap.add_argument("--listing-rss", type=int, default=0, metavar="N", help="only measure the memory of an N-image listing")
    ap.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write the figures here too")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="spotart-bench-")
    os.makedirs(work, exist_ok=True)
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}; load before {load()}")
    try:
        if args.listing_rss:
            result = {"listing_rss": listing_rss(args.listing_rss, work)}
        else:
            archives = [os.path.join(args.data, a) if args.data else a for a in args.archives]
            for a in archives:
                if not os.path.isfile(a):
                    raise SystemExit(f"{a}: missing; pass --data DIR with the tiny-imagenet-a archives")
            print(f"archives: {archives}")
            result = report(throughput(args, archives, work))
        print(f"load after {load()}")
    finally:
        if not args.workdir:
            shutil.rmtree(work)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.node(), "cpus": os.cpu_count(), "args": vars(args), "result": result}, f, indent=1)


if __name__ == "__main__":
    main()

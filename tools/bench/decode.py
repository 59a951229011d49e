"""Benchmark: decode-only images/s of DALI's JPEG decoder over a shard set: the "mixed" decoder
(nvJPEG: the hardware decoder takes `hw_decoder_load` of each batch, CUDA kernels the rest) at
each `--hw-loads` value, and optionally the CPU decoder (libjpeg-turbo, `--threads` threads)
for scale. Whole images are decoded to RGB (no crop window), as published decoder figures are.
Modes are measured in interleaved repeats; the median is the figure to quote. Also reports
the bytes and megapixels decoded per second: decoding cost follows the bytes (entropy
decoding) and the pixels (IDCT, colour conversion), so the mean bytes per image go with every
figure.

    python tools/bench/decode.py --shards DIR [--modes mixed:0 mixed:0.65 cpu] [--batch 256]
                                 [--threads 16] [--batches 30] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import pipeline_def
from nvidia.dali.backend import TensorListGPU


def parse_mode(text: str) -> tuple[str, float | None]:
    """"mixed:0.65" -> ("mixed", 0.65); "cpu" -> ("cpu", None)."""
    dev, _, load = text.partition(":")
    if dev == "cpu" and not load:
        return "cpu", None
    if dev == "mixed":
        value = float(load) if load else 0.65
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"hw_decoder_load must be in [0, 1], got {value}")
        return "mixed", value
    raise ValueError(f"mode {text!r}: want cpu or mixed[:LOAD]")


def build(shards: str, mode: str, batch: int, threads: int, device_id: int | None):
    with open(os.path.join(shards, "manifest.json")) as f:
        m = json.load(f)
    tars = [os.path.join(shards, s["path"]) for s in m["shards"]]
    idxs = [os.path.join(shards, s["index"]) for s in m["shards"]]
    dev, load = parse_mode(mode)

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=device_id if dev == "mixed" else None,
                  prefetch_queue_depth=2, seed=0, exec_dynamic=True)
    def pipe():
        jpg = fn.readers.webdataset(paths=tars, index_paths=idxs, ext=["jpg"], random_shuffle=False,
                                    name="Reader")
        hw = {"hw_decoder_load": load} if dev == "mixed" else {}
        return fn.decoders.image(jpg, device=dev, output_type=types.RGB, **hw), jpg

    p = pipe()
    p.build()
    return p


def _finish(outputs):
    # run() may hand back GPU outputs still in flight on DALI's stream; copying one sample's
    # batch to the host waits for the iteration (once per measurement: negligible)
    if isinstance(outputs[0], TensorListGPU):
        outputs[0].as_cpu()


def measure(p, batches: int, warmup: int, batch: int) -> dict:
    nbytes, pixels = [], []
    for _ in range(warmup):
        img, jpg = p.run()
        nbytes += [int(np.prod(s)) for s in jpg.shape()]
        pixels += [int(s[0]) * int(s[1]) for s in img.shape()]
    _finish((img,))
    t = time.perf_counter()
    for _ in range(batches):
        out = p.run()
    _finish(out)
    wall = time.perf_counter() - t
    ips = batches * batch / wall
    return {"img_s": ips, "mb_s": ips * float(np.mean(nbytes)) / 1e6, "mpix_s": ips * float(np.mean(pixels)) / 1e6,
            "mean_bytes": float(np.mean(nbytes)), "mean_pixels": float(np.mean(pixels))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--modes", nargs="+", default=["mixed:0", "mixed:0.65", "cpu"],
                    help="cpu, or mixed:LOAD with LOAD the hw_decoder_load (0: CUDA decoding only; "
                         "0.65: DALI's default)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="DALI CPU threads")
    ap.add_argument("--batches", type=int, default=30, help="timed batches per mode and repeat")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    for m in args.modes:
        parse_mode(m)  # clear error before anything is built
    device_id, gpu = None, ""
    if any(m.startswith("mixed") for m in args.modes):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("mixed decoding needs a CUDA GPU; use --modes cpu")
        device_id, gpu = torch.cuda.current_device(), torch.cuda.get_device_name()
    machine = f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus" + (f", {gpu}" if gpu else "")
    print(f"machine: {machine}; batch {args.batch}, {args.threads} threads, {args.batches} batches x {args.repeats}")
    pipes = {m: build(args.shards, m, args.batch, args.threads, device_id) for m in args.modes}
    runs = {m: [] for m in args.modes}
    for r in range(args.repeats):
        for m, p in pipes.items():
            res = measure(p, args.batches, args.warmup, args.batch)
            runs[m].append(res)
            print(f"run {r + 1}/{args.repeats}  {m:11s} {res['img_s']:9.0f} img/s  {res['mb_s']:8.1f} MB/s  "
                  f"{res['mpix_s']:8.1f} Mpix/s  ({res['mean_bytes'] / 1e3:.1f} kB, "
                  f"{res['mean_pixels'] / 1e3:.0f} kpix per image)", flush=True)
    summary = {m: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for m, rs in runs.items()}
    print("median:")
    for m, s in summary.items():
        print(f"  {m:11s} {s['img_s']:9.0f} img/s  {s['mb_s']:8.1f} MB/s  {s['mpix_s']:8.1f} Mpix/s")
    if args.json:
        out = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "machine": machine,
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "args": vars(args), "runs": runs, "median": summary}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

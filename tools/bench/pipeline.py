"""Benchmark: images/s of each task's DALI pipeline against a PyTorch DataLoader over webdataset
doing the same work per sample with PIL/numpy (decode, random resized crop, flip, then the
task's masks / pixelated, colour-dropped patch pairs / jittered tiles), with equal worker
counts, measured in the same run and interleaved: each repeat times the DALI loader, then a
fresh DataLoader, so load changes on a shared machine hit both alike. The figure to quote is
the median over repeats of the per-repeat ratio. Beside wall-clock images/s, each side's CPU
time per image is reported (DALI: this process, all threads; DataLoader: its workers and this
process): on a busy machine it tells the work apart from the waiting.

torchvision is not used for the baseline: PyPI's torchvision does not import beside the CPU
torch 2.13 build the project pins, so its transforms are written out in PIL/numpy here.

    python tools/bench/pipeline.py --shards DIR [--device cpu|gpu] [--workers 2] [--batches 40]
                                   [--image-size 64] [--repeats 3] [--tasks ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import random
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

TASKS = ("artifacts", "inpainting", "context", "jigsaw", "images")
DEFAULT_TASKS = ("artifacts", "inpainting", "context", "jigsaw")


# ---- baseline: the same per-sample work in Python, in DataLoader worker processes -------------
def _rrc(img: Image.Image, s: int, rng, min_area=0.25):
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(min_area, 1.0)
        ar = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(area * ar))), int(round(np.sqrt(area / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            break
    else:
        cw, ch, x, y = w, h, 0, 0
    img = img.resize((s, s), Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(img, dtype=np.float32)


def _chw(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1) / 127.5 - 1.0, dtype=np.float32))


def make_baseline(task: str, s: int, params):
    def images(a, rng):
        return {"image": _chw(a)}

    def artifacts(a, rng):
        m = (rng.random((params.mask_size, params.mask_size)) >= params.theta).astype(np.float32)
        return {"image": _chw(a), "mask": torch.from_numpy(m[None])}

    def inpainting(a, rng):
        hole = np.zeros((s, s), np.float32)
        q = s // 4
        hole[q : s - q, q : s - q] = 1
        ov = params.overlap
        inner = np.zeros_like(hole)
        inner[q + ov : s - q - ov, q + ov : s - q - ov] = 1
        weight = inner + params.overlap_weight * (hole - inner)
        x = _chw(a)
        return {"image": x * torch.from_numpy(1 - inner)[None], "target": x, "mask": torch.from_numpy(hole[None]),
                "weight": torch.from_numpy(weight[None])}

    def context(a, rng):
        from spotart.pipeline.context import NEIGHBOURS

        geo = params.geometry(s)
        P, step, J = geo.patch, geo.patch + geo.gap, geo.jitter
        pos = int(rng.integers(8))
        dy, dx = NEIGHBOURS[pos]
        cy, cx = rng.integers(0, geo.slack + 1, 2) + J + step
        jit = rng.integers(-J, J + 1, (2, 2))
        pixelate = rng.random(2) < params.pixelate_prob
        sides = rng.integers(geo.pixelate_min, geo.pixelate_max + 1, 2)
        keeps = rng.integers(0, 3, 2)

        def patch(i, oy, ox):
            y, x = cy + oy * step + jit[i, 0], cx + ox * step + jit[i, 1]
            q = a[y : y + P, x : x + P]
            if pixelate[i]:  # antialiased linear down, linear up
                im = Image.fromarray(q.astype(np.uint8)).resize((sides[i], sides[i]), Image.Resampling.BILINEAR)
                q = np.asarray(im.resize((P, P), Image.Resampling.BILINEAR), dtype=np.float32)
            q = q.transpose(2, 0, 1) / 127.5 - 1.0  # CHW, a new array
            if params.color_drop:
                keep = keeps[i]
                drop = [c for c in range(3) if c != keep]
                q[drop] = rng.normal(0.0, params.noise_ratio * q[keep].std(), (2, P, P))
            return torch.from_numpy(q.astype(np.float32))

        return {"patch1": patch(0, 0, 0), "patch2": patch(1, dy, dx), "position": torch.tensor(pos)}

    perms = None

    def jigsaw(a, rng):
        nonlocal perms
        if perms is None:
            perms = params.load_set()
        geo = params.geometry(s)
        T, J = geo.tile, geo.jitter
        k = int(rng.integers(len(perms)))
        if rng.random() < params.grey_prob:
            a = np.repeat(a.mean(axis=2, keepdims=True), 3, axis=2)
        pad = np.pad(a, ((J, J), (J, J), (0, 0)), mode="edge")  # reads past the border repeat the edge
        gaps = rng.integers(0, geo.cell - T + 1, (9, 2))
        jit = rng.integers(-J, J + 1, (9, 3, 2))  # chromatic aberration: each channel its own shift
        tiles = np.empty((9, 3, T, T), np.float32)
        for i, c in enumerate(perms[k]):
            y = geo.origin + (c // 3) * geo.cell + gaps[c, 0] + J
            x = geo.origin + (c % 3) * geo.cell + gaps[c, 1] + J
            for ch in range(3):
                yy, xx = y + jit[c, ch, 0], x + jit[c, ch, 1]
                tiles[i, ch] = pad[yy : yy + T, xx : xx + T, ch]
        mean = tiles.mean(axis=(1, 2, 3), keepdims=True)
        std = tiles.std(axis=(1, 2, 3), keepdims=True)
        return {"tiles": torch.from_numpy((tiles - mean) / (std + 1e-5)), "permutation": torch.tensor(k)}

    return {"images": images, "artifacts": artifacts, "inpainting": inpainting, "context": context,
            "jigsaw": jigsaw}[task]


class BaselineDataset(torch.utils.data.IterableDataset):
    def __init__(self, tars, task, s, params, seed=0):
        self.tars, self.task, self.s, self.params, self.seed = tars, task, s, params, seed

    def __iter__(self):
        import webdataset as wds

        info = torch.utils.data.get_worker_info()
        wid = info.id if info else 0
        rng = np.random.default_rng(self.seed + wid)
        fn = make_baseline(self.task, self.s, self.params)
        nworkers = info.num_workers if info else 1
        # fewer shards than workers: every worker reads them all in its own shuffled order (a
        # throughput benchmark needs busy workers, not disjoint samples); a worker with no shard
        # would stall the DataLoader, which collects batches from the workers in turn
        split = wds.split_by_worker if len(self.tars) >= nworkers else (lambda src: src)
        ds = wds.WebDataset(self.tars, shardshuffle=False, nodesplitter=None, workersplitter=split,
                            empty_check=False).shuffle(1000, rng=random.Random(wid))
        while True:
            for sample in ds:
                img = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
                out = fn(_rrc(img, self.s, rng), rng)
                out["label"] = torch.tensor(int(sample.get("cls", b"-1")))
                yield out


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of process `pid` (Linux /proc), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cycle(iterable):
    """Batches without end: an epoch-based loader (DALI's stops after each pass over the shards)
    starts its next epoch, in warm-up and timed part alike."""
    while True:
        empty = True
        for b in iterable:
            empty = False
            yield b
        if empty:
            raise RuntimeError("the loader gave no batch: fewer samples than one batch?")


def rate(iterable, batches: int, batch: int, warmup: int, workers=()) -> tuple[float, float]:
    """(images/s, CPU us per image) over `batches` batches after `warmup`. The warm-up must
    outlast the loader's queue of ready batches (made while nobody was asking): counted, those
    would be free. CPU time is this process's (all threads: DALI's workers) plus the `workers`
    processes' (a DataLoader's): on a shared machine it is the steadier measure of the work,
    as other processes take wall time but not CPU time from it."""
    it = _cycle(iterable)
    for _ in range(warmup):
        next(it)
    t = time.perf_counter()
    cpu = time.process_time() + sum(_proc_cpu_s(w) for w in workers)
    for _ in range(batches):
        b = next(it)
    for v in b.values():  # the last batch must really exist on the device before we stop the clock
        if v.is_cuda:
            torch.cuda.synchronize()
            break
    wall = time.perf_counter() - t
    cpu = time.process_time() + sum(_proc_cpu_s(w) for w in workers) - cpu
    return batches * batch / wall, 1e6 * cpu / (batches * batch)


def dataloader_batches(batches: int, workers: int) -> int:
    """The DataLoader's timed batches: whole rounds of its workers, at least two. Its W workers
    start together and each makes a whole batch, so batches arrive in rounds of W at nearly the
    same moment; a count that ends inside a round gets part of it free (H100, 16 workers, 8
    timed batches after 19 warm-up ones: 13 were ready at the clock's start and the DataLoader
    'made' 117k img/s). Timed from a round's end to a round's end, k rounds take k round times."""
    rounds = max(2, -(-batches // max(workers, 1)))
    return rounds * max(workers, 1)


def baseline_rate(tars, task, args, params, dev) -> tuple[float, float]:
    """One fresh DataLoader: its workers start, are timed, and are shut down before the DALI
    loader runs again (idle workers would otherwise keep filling their queue beside it)."""
    ds = BaselineDataset(tars, task, args.image_size, params)
    dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, num_workers=args.workers,
                                     pin_memory=dev.type == "cuda", prefetch_factor=2)
    it = iter(dl)
    moved = ({k: v.to(dev, non_blocking=True) for k, v in b.items()} for b in it)
    pids = [w.pid for w in getattr(it, "_workers", [])]
    try:
        # warm-up: the first round (workers starting, one batch each) and a second, so the clock
        # starts at a round's end with the workers in their steady rhythm
        return rate(moved, dataloader_batches(args.batches, args.workers), args.batch,
                    warmup=2 * max(args.workers, 1), workers=pids)
    finally:
        moved.close()
        del it  # shuts the workers down


def measure_task(task, args, tars, dev) -> dict:
    from spotart.pipeline.loader import DaliLoader
    from spotart.trainer.config import build_config
    from spotart.trainer.data import pipeline_config
    from spotart.trainer.runtime import resolve_runtime

    # the pipeline a `spotart train --task TASK` run builds ("images" is the supervised task's);
    # fp32 outputs, as the baseline's
    train_task = "supervised" if task == "images" else task
    train = build_config(train_task, args.preset, [*args.overrides, f"batch_size={args.batch}", "precision=fp32",
                                                   f"image_size={args.image_size}", f"num_threads={args.workers}",
                                                   f"device={'cuda' if args.device == 'gpu' else 'cpu'}"])
    cfg = pipeline_config(train, resolve_runtime(train), shards=args.shards, shard_id=0, num_shards=1)
    t = time.perf_counter()
    loader = DaliLoader(cfg, dev)
    build_s = time.perf_counter() - t
    runs = []
    for r in range(args.repeats):
        dali, dali_cpu = rate(loader, args.batches, args.batch, warmup=cfg.prefetch + 3)
        base, base_cpu = baseline_rate(tars, task, args, cfg.params, dev)
        runs.append({"dali_img_s": dali, "dataloader_img_s": base, "ratio": dali / base,
                     "dali_cpu_us_per_img": dali_cpu, "dataloader_cpu_us_per_img": base_cpu,
                     "cpu_ratio": base_cpu / dali_cpu})
        print(f"{task:11s} run {r + 1}/{args.repeats}  DALI {dali:8.0f} img/s   DataLoader+PIL {base:8.0f} img/s   "
              f"ratio {dali / base:5.2f}x   CPU us/img {dali_cpu:6.0f} vs {base_cpu:6.0f} ({base_cpu / dali_cpu:5.2f}x)",
              flush=True)
    del loader
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {"runs": runs, "median": med, "dali_build_s": build_s}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--workers", type=int, default=2, help="DALI threads = DataLoader workers")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=40, help="timed batches per loader and repeat")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved DALI/DataLoader measurements per task")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), choices=TASKS,
                    help="'images' is the plain augmented-image pipeline of supervised training and linear eval")
    ap.add_argument("--preset", default="64px", help="the trainer preset whose task parameters the pipelines take")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config key, as for `spotart train --set` (e.g. mode=blocks)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    with open(os.path.join(args.shards, "manifest.json")) as f:
        manifest = json.load(f)
    tars = [os.path.join(args.shards, s["path"]) for s in manifest["shards"]]
    dev = torch.device("cuda" if args.device == "gpu" else "cpu")
    machine = (f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus"
               + (f", {torch.cuda.get_device_name()}" if dev.type == "cuda" else ""))
    print(f"machine: {machine}, device {args.device}, workers {args.workers}, batch {args.batch}, "
          f"image {args.image_size}px, {args.batches} batches x {args.repeats} repeats")
    results = {}
    for task in args.tasks:
        results[task] = measure_task(task, args, tars, dev)
    print("median of the per-repeat ratios:")
    for task, r in results.items():
        m = r["median"]
        print(f"  {task:11s} DALI {m['dali_img_s']:8.0f} img/s   DataLoader+PIL {m['dataloader_img_s']:8.0f} img/s   "
              f"ratio {m['ratio']:5.2f}x   CPU time per image: DataLoader / DALI {m['cpu_ratio']:5.2f}x")
    if args.json:
        out = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "machine": machine,
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "torch": torch.__version__, "args": vars(args), "num_samples": manifest.get("num_samples"),
               "tasks": results}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

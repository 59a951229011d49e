"""Benchmark: images/s of each task's DALI pipeline against a PyTorch DataLoader over webdataset
doing the same work per sample with PIL/numpy (decode, random resized crop, flip, then the
task's masks / patch pairs / tiles), with equal worker counts, in the same run.

torchvision is not used for the baseline: PyPI's torchvision does not import beside the CPU
torch 2.13 build the project pins, so its transforms are written out in PIL/numpy here.

    python tools/bench/pipeline.py --shards DIR [--device cpu|gpu] [--workers 2] [--batches 40]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import time

import numpy as np
import torch
from PIL import Image

TASKS = ("artifacts", "inpainting", "context", "jigsaw")


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
        p = max(4, s * 96 // 320)
        g, j = p // 2, max(0, p * 7 // 96)
        pos = int(rng.integers(8))
        cell = pos if pos < 4 else pos + 1
        dy, dx = cell // 3 - 1, cell % 3 - 1
        c0 = (s - p) // 2
        def patch(oy, ox):
            y = int(np.clip(c0 + oy * (p + g) + rng.integers(-j, j + 1), 0, s - p))
            x = int(np.clip(c0 + ox * (p + g) + rng.integers(-j, j + 1), 0, s - p))
            q = a[y : y + p, x : x + p].copy()
            keep = rng.integers(3)
            sd = q[..., keep].std() / 100 + 1e-3
            for ch in range(3):
                if ch != keep:
                    q[..., ch] = q[..., keep].mean() + rng.normal(0, sd, (p, p))
            return _chw(q)
        return {"patch1": patch(0, 0), "patch2": patch(dy, dx), "position": torch.tensor(pos)}

    perms = None

    def jigsaw(a, rng):
        nonlocal perms
        if perms is None:
            from spotart.pipeline.permutations import default_permutations
            perms = default_permutations(params.count)
        cell, tile = s // 3, max(4, s * params.tile // params.crop)
        k = int(rng.integers(len(perms)))
        grey = rng.random() < params.grey_prob
        tiles = []
        for c in perms[k]:
            cy, cx = divmod(int(c), 3)
            y = cy * cell + int(rng.integers(0, cell - tile + 1))
            x = cx * cell + int(rng.integers(0, cell - tile + 1))
            t = a[y : y + tile, x : x + tile].copy()
            if grey:
                t[:] = t.mean(axis=2, keepdims=True)
            t = (t - t.mean()) / (t.std() + 1e-5)
            tiles.append(torch.from_numpy(np.ascontiguousarray(t.transpose(2, 0, 1))))
        return {"tiles": torch.stack(tiles), "permutation": torch.tensor(k)}

    return {"artifacts": artifacts, "inpainting": inpainting, "context": context, "jigsaw": jigsaw}[task]


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


def rate(iterable, batches: int, batch: int, warmup: int) -> float:
    """Images/s over `batches` batches after `warmup`. The warm-up must outlast the loader's
    queue of ready batches (made while nobody was asking): counted, those would be free."""
    it = iter(iterable)
    for _ in range(warmup):
        next(it)
    t = time.perf_counter()
    n = 0
    while n < batches:
        try:
            b = next(it)
        except StopIteration:
            it = iter(iterable)
            continue
        n += 1
    for v in b.values():  # the last batch must really exist on the device before we stop the clock
        if v.is_cuda:
            torch.cuda.synchronize()
            break
    return batches * batch / (time.perf_counter() - t)


def main():
    from spotart.pipeline.loader import DaliLoader
    from spotart.trainer.config import build_config
    from spotart.trainer.data import pipeline_config
    from spotart.trainer.runtime import resolve_runtime

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--workers", type=int, default=2, help="DALI threads = DataLoader workers")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--preset", default="64px", help="the trainer preset whose task parameters the pipelines take")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config key, as for `spotart train --set` (e.g. mode=blocks)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    with open(os.path.join(args.shards, "manifest.json")) as f:
        tars = [os.path.join(args.shards, s["path"]) for s in json.load(f)["shards"]]
    dev = torch.device("cuda" if args.device == "gpu" else "cpu")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, device {args.device}, "
          f"workers {args.workers}, batch {args.batch}, image {args.image_size}px")
    results = {}
    for task in args.tasks:
        # the pipeline a `spotart train --task TASK` run builds; fp32 outputs, as the baseline's
        train = build_config(task, args.preset, [*args.overrides, f"batch_size={args.batch}", "precision=fp32",
                                                 f"image_size={args.image_size}", f"num_threads={args.workers}",
                                                 f"device={'cuda' if args.device == 'gpu' else 'cpu'}"])
        cfg = pipeline_config(train, resolve_runtime(train), shards=args.shards, shard_id=0, num_shards=1)
        dali = rate(DaliLoader(cfg, dev), args.batches, args.batch, warmup=cfg.prefetch + 3)
        params = cfg.params
        ds = BaselineDataset(tars, task, args.image_size, params)
        dl = torch.utils.data.DataLoader(ds, batch_size=args.batch, num_workers=args.workers, pin_memory=dev.type == "cuda",
                                         persistent_workers=False, prefetch_factor=2)
        base_iter = ({k: v.to(dev, non_blocking=True) for k, v in b.items()} for b in dl)
        base = rate(base_iter, args.batches, args.batch, warmup=args.workers * 2 + 3)  # workers x prefetch_factor
        results[task] = {"dali_img_s": dali, "dataloader_img_s": base, "ratio": dali / base}
        print(f"{task:11s} DALI {dali:8.0f} img/s   DataLoader+PIL {base:8.0f} img/s   ratio {dali / base:5.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

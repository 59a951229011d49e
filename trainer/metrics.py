"""Metrics: per-step scalars kept on the device and summed, read back once per log interval (one
device synchronisation per `log_every` steps), averaged over ranks, written as one JSON line per
interval to RUN/metrics.jsonl and shown on the progress bar."""

from __future__ import annotations

import json
import logging
import math
import os
import time

import torch

from .distributed import DistInfo, mean_across_ranks

log = logging.getLogger(__name__)


class Meter:
    """Running sums of a fixed set of 0-d tensors (the task's logs) within one log interval. A
    skipped step's logs (`skipped` 1, a device tensor: no sync) are left out of the means, and so
    are a rank's logs of a step it had no sample for; a window of skipped steps only reads NaN."""

    def __init__(self):
        self.names: list[str] | None = None
        self.sums: torch.Tensor | None = None
        self.count = 0
        self.kept = None

    def add(self, logs: dict, skipped: torch.Tensor | None = None):
        vec = torch.stack([v.detach().float().reshape(()) for v in logs.values()])
        keep = vec.new_ones(()) if skipped is None else 1 - skipped.to(vec)
        if skipped is not None:
            vec = torch.where(skipped.bool(), torch.zeros_like(vec), vec)
        if self.names is None:
            self.names, self.sums, self.kept = list(logs), vec, keep
        else:
            self.sums, self.kept = self.sums + vec, self.kept + keep
        self.count += 1

    def read(self, info: DistInfo) -> dict:
        """Means over the interval's kept steps of every rank; resets. The one sync point per interval."""
        if not self.count:
            return {}
        totals = mean_across_ranks(torch.cat([self.sums, self.kept.reshape(1)]), info)
        means = (totals[:-1] / totals[-1]).tolist()
        out = dict(zip(self.names, means))
        self.names, self.sums, self.count, self.kept = None, None, 0, None
        return out


class Window:
    """Throughput of the steps since the last read: images per second over all ranks, ms per
    step, and the share of the wall time spent waiting in next(loader) (host time: no device
    sync is added, so on a GPU it is the time the host could not run ahead of the device)."""

    def __init__(self):
        self._reset()

    def _reset(self):
        self.t0, self.wait, self.steps, self.images = time.perf_counter(), 0.0, 0, 0

    def add(self, wait: float, images: int):
        self.wait += wait
        self.steps += 1
        self.images += images

    def pause(self, seconds: float):
        """Leave `seconds` spent on something else (the k-NN monitor) out of the window."""
        self.t0 += seconds

    def read(self, world_size: int = 1) -> dict:
        elapsed = time.perf_counter() - self.t0
        out = {"img_per_s": self.images * world_size / elapsed, "step_ms": 1000 * elapsed / max(self.steps, 1),
               "data_wait_frac": self.wait / elapsed}
        self._reset()
        return out


class MetricsWriter:
    """Appends JSON lines; on resume, drops the records past the resumed step (they were written
    by the interrupted run after its last checkpoint and are about to be recomputed)."""

    def __init__(self, path: str, resume_step: int | None = None):
        self.path = path
        if resume_step is not None and os.path.exists(path):
            with open(path) as f:
                keep = [ln for ln in f if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            with open(path + ".tmp", "w") as f:
                f.writelines(keep)
            os.replace(path + ".tmp", path)
        self._f = open(path, "a", buffering=1)

    def write(self, record: dict):
        """A full disk costs the record (said in the log), not the run."""
        try:
            self._f.write(json.dumps(record, allow_nan=True) + "\n")
        except OSError as err:
            log.error("%s: the record of step %s was not written (%s)", self.path, record.get("step"), err)

    def close(self):
        try:
            self._f.close()
        except OSError as err:
            log.error("%s: the last records were not written (%s)", self.path, err)


def read_metrics(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def postfix(record: dict) -> dict:
    """The progress bar's short form of a record."""
    keys = ("loss_disc", "loss_repair", "acc_real", "acc_fake", "mask_auc", "knn_top1", "ae_mse", "ae_psnr",
            "loss", "acc", "loss_rec", "loss_gen", "img_per_s", "data_wait_frac", "gpu_mem_gib")
    out = {}
    for k in keys:
        v = record.get(k)
        if isinstance(v, float) and math.isfinite(v):
            out[k] = f"{v:.3g}"
    return out

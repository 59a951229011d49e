"""The training step on its own, built from the trainer's public pieces (task, runtime), and a
timed loop over any batch source with the DaliLoader interface.

`Stepper` runs the training loop's own step (`trainer.step.optimise`) for one phase. It skips what a
profile does not measure (learning-rate schedule, metrics sync, checkpoints), so its time is
the step's time. Per step the loop below records the wall time spent in `next()` (waiting for
data) and the rest (the step as the host sees it). On a GPU the host runs ahead of the device
until the caching allocator or the launch queue makes it wait, so in steady state these host
times track the device; no per-step synchronisation is added (it would serialise data and
compute and hide exactly the overlap being measured). The clock stops after a final sync."""

from __future__ import annotations

import time

import torch

from ...trainer.config import TrainConfig
from ...trainer.models import build_training
from ...trainer.runtime import Runtime
from ...trainer.step import optimise


class Stepper:
    def __init__(self, cfg: TrainConfig, rt: Runtime, phase: str = "last"):
        self.cfg, self.rt = cfg, rt
        self.training = tr = build_training(cfg, rt)
        self.task = tr.task
        phases = self.task.phases(cfg)
        names = [p.name for p in phases]
        if phase == "last":
            self.phase = phases[-1]
        elif phase in names:
            self.phase = phases[names.index(phase)]
        else:
            raise ValueError(f"task {cfg.task!r} has no phase {phase!r}; choose 'last' or one of {names}")
        runners = self.task.enter_phase(tr.models, self.phase)
        self.runners = {n: torch.compile(m) if cfg.compile else m for n, m in runners.items()}

    def __call__(self, batch: dict):
        tr = self.training
        optimise(self.task, self.runners, batch, self.phase, self.cfg, self.rt, tr.optimizers, tr.params_of, tr.scaler)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_steps(batches, step, n: int, warmup: int, device, batch_size: int) -> dict:
    """Time `n` iterations of `step(next(batches))` after `warmup`; `step=None` times the data
    alone. Returns the totals and the per-step (wait, compute) timeline in ms."""
    for _ in range(warmup):
        b = next(batches)
        if step is not None:
            step(b)
    sync(device)
    wait, compute = [], []
    t_start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        b = next(batches)
        t1 = time.perf_counter()
        if step is not None:
            step(b)
        wait.append(1000 * (t1 - t0))
        compute.append(1000 * (time.perf_counter() - t1))
    t_end = time.perf_counter()
    sync(device)  # the device's backlog: counted in the wall time, not given to any one step
    wall = time.perf_counter() - t_start
    return {"batches": n, "seconds": wall, "images_per_s": n * batch_size / wall, "ms_per_batch": 1000 * wall / n,
            "data_wait_frac": sum(wait) / (1000 * wall), "drain_ms": 1000 * (t_start + wall - t_end),
            "wait_ms": wait, "compute_ms": compute}


def merge_runs(parts: list[dict], batch_size: int) -> dict:
    """One measurement from several rounds of `run_steps`: totals summed, timelines joined."""
    wait = [w for p in parts for w in p["wait_ms"]]
    compute = [c for p in parts for c in p["compute_ms"]]
    n, wall = sum(p["batches"] for p in parts), sum(p["seconds"] for p in parts)
    return {"batches": n, "seconds": wall, "images_per_s": n * batch_size / wall, "ms_per_batch": 1000 * wall / n,
            "data_wait_frac": sum(wait) / (1000 * wall), "drain_ms": sum(p["drain_ms"] for p in parts),
            "rounds": len(parts), "wait_ms": wait, "compute_ms": compute}


def top_kernels(step, batches, n: int, device, top: int, trace_path: str | None = None) -> dict:
    """torch.profiler over `n` steps: the `top` operators/kernels by self time on the device that
    runs the step (CUDA kernels on a GPU, CPU operators otherwise)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    batch_list = [next(batches) for _ in range(n)]  # data outside the profiled window
    sync(device)
    with profile(activities=acts) as prof:
        for b in batch_list:
            step(b)
        sync(device)
    if trace_path:
        prof.export_chrome_trace(trace_path)
    on_gpu = device.type == "cuda"
    key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key) > 0]
    if on_gpu:  # the kernels themselves, not the CPU-side operators that launched them
        from torch.autograd import DeviceType

        events = [e for e in events if e.device_type == DeviceType.CUDA] or events
    total = sum(getattr(e, key) for e in events) or 1.0
    events.sort(key=lambda e: -getattr(e, key))
    rows = [{"name": e.key, "calls": int(e.count), "self_ms": getattr(e, key) / 1000,
             "self_ms_per_step": getattr(e, key) / 1000 / n, "share": getattr(e, key) / total}
            for e in events[:top]]
    return {"device": "cuda" if on_gpu else "cpu", "time": "self device time" if on_gpu else "self CPU time",
            "steps": n, "total_ms_per_step": total / 1000 / n, "kernels": rows}

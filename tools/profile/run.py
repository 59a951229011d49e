"""`profile(pc)`: one process, one run: the pipeline alone (whole, and cut into stages), the
training step alone on batches recorded from that very pipeline (replayed from the device, so
the step sees the run's exact shapes, dtypes and statistics at no data cost), and the two
together; CPU time per thread and GPU utilisation sampled throughout; torch.profiler over a few
steps; then the report (report.json, report.md, charts, report.html) in `pc.out`.

Order: the truncated pipelines first (each built, timed, dropped); then the step under
torch.profiler; then, in interleaved rounds, the loader the training run would use (pipeline
alone), the step alone, and the loader feeding the step. Every measurement has its own warm-up,
so build and compile time stay out."""

from __future__ import annotations

import datetime
import gc
import logging
import os
import platform
import statistics
from contextlib import contextmanager

import torch

from ...trainer.config import build_config
from ...trainer.data import build_loader, check_shards, endless, pipeline_config
from ...trainer.runtime import resolve_runtime
from ...trainer.synthetic import ReplayBatches
from .config import ProfileConfig, parse_pipeline_overrides
from .diagnose import diagnose
from .sampler import Sampler, is_pipeline_thread
from .stages import STAGES, marginal_ms, stage_pipeline, time_pipeline
from .steps import Stepper, merge_runs, run_steps, top_kernels

log = logging.getLogger(__name__)

SCHEMA_ID = "spotart.profile/1"


def machine_info(device) -> dict:
    cpu_model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu_model)
    except OSError:
        pass
    info = {"platform": platform.platform(), "cpu_model": cpu_model, "cpu_count": os.cpu_count() or 1,
            "cpu_affinity": len(os.sched_getaffinity(0)), "device": str(device), "gpu": None}
    try:
        with open("/proc/meminfo") as f:
            info["memory_gib"] = int(f.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": p.name, "memory_gib": p.total_memory / 2**30, "capability": f"{p.major}.{p.minor}",
                       "cuda": torch.version.cuda}
    return info


def versions() -> dict:
    import importlib.metadata as md

    import matplotlib
    import numpy
    import nvidia.dali

    try:
        spotart = md.version("spotart")
    except md.PackageNotFoundError:
        spotart = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__, "dali": nvidia.dali.__version__,
            "numpy": numpy.__version__, "matplotlib": matplotlib.__version__, "spotart": spotart}


def _pipeline_cores(groups: dict) -> float:
    return sum(g["cores"] for name, g in groups.items() if is_pipeline_thread(name))


@contextmanager
def _peak_memory(device):
    """{"torch_peak_mem_gib": ...} filled on exit: the peak of torch's allocator inside the block
    (GPU only; NVML's figure also counts DALI's and the CUDA context's memory)."""
    out = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield out
    if device.type == "cuda":
        out["torch_peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30


def profile(pc: ProfileConfig) -> dict:
    """Measure, write the report files into pc.out, return the report dict."""
    sets = list(pc.overrides) + [f"shards={pc.shards}", "data=shards", "progress=false"]
    cfg = build_config(pc.task, pc.preset, sets)
    check_shards(cfg)
    rt = resolve_runtime(cfg)
    if rt.device.type == "cpu" and cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    pcfg = pipeline_config(cfg, rt, **parse_pipeline_overrides(pc.pipeline_overrides))
    os.makedirs(pc.out, exist_ok=True)
    log.info("profiling %s (%s preset) on %s: %d timed batches per measurement", cfg.task, cfg.preset, rt.device,
             pc.batches)
    with Sampler(pc.sample_interval, rt.device) as sampler:
        stages = _time_stages(pcfg, pc, sampler)
        results, kernels, stepper = _time_runs(cfg, rt, pcfg, pc, sampler)
    for name, r in results.items():
        windows = [(s, e) for m, s, e in sampler.marks if m == name]
        r["cpu"] = sampler.cpu_by_group(windows)
        r["pipeline_cores"] = _pipeline_cores(r["cpu"])
        r["gpu"] = sampler.gpu_summary(windows)
    timeline = {"wait_ms": results["end_to_end"]["wait_ms"], "compute_ms": results["end_to_end"]["compute_ms"]}
    for r in results.values():
        # the median step is robust to bursts of other work on a shared machine
        r["median_ms_per_batch"] = statistics.median(
            w + c for w, c in zip(r.pop("wait_ms"), r.pop("compute_ms"), strict=True))
    results["train"].pop("data_wait_frac")  # replayed batches: nothing to wait for
    results["pipeline"].pop("data_wait_frac")  # all of it is data
    report = _report(pc, cfg, rt, pcfg, stepper, stages, results, timeline, kernels, sampler)
    from .report import write_report

    write_report(report, pc.out)
    return report


def _time_stages(pcfg, pc: ProfileConfig, sampler) -> dict:
    """The pipeline cut into stages, each truncated pipeline built, timed alone and dropped."""
    stages = {}
    for name in STAGES:
        pipe = stage_pipeline(pcfg, name)
        with sampler.stage(name):
            stages[name] = time_pipeline(pipe, pc.warmup, pc.batches, pcfg.batch_size)
        del pipe
        gc.collect()  # DALI's threads go with the pipeline, before the next one starts
    for name, ms in marginal_ms(stages).items():
        window = next((s, e) for m, s, e in sampler.marks if m == name)
        stages[name]["own_ms_per_batch"] = ms
        stages[name]["cpu"] = sampler.cpu_by_group([window])
    return stages


def _time_runs(cfg, rt, pcfg, pc: ProfileConfig, sampler):
    """The loader alone, the step alone and the two together, in interleaved rounds; the step's
    top kernels. -> (results by name, kernels, the Stepper)."""
    n, warm, bs = pc.batches, pc.warmup, cfg.batch_size
    loader = build_loader(cfg, pcfg, rt.device)
    data = endless(loader)
    stepper = Stepper(cfg, rt, pc.phase)
    # the step alone runs on batches recorded from this loader: no second implementation of the
    # task's inputs can misstate its cost (jitter, gaps, holes and tile sizes are the real ones)
    replay = endless(ReplayBatches.record(loader, min(n, 8)))
    # the first steps pay for optimiser state, allocator growth, oneDNN/cuDNN plans and
    # compilation; the profiler's steps come after them, and both timed runs after those
    for _ in range(warm):
        stepper(next(replay))
    kernels = top_kernels(stepper, replay, pc.profile_steps, rt.device, pc.top_kernels,
                          os.path.join(pc.out, "train_step_trace.json") if pc.trace else None)
    # Interleaved rounds (pipeline, step, together, pipeline, ...), so slow drifts in what else
    # the machine runs hit all three alike. The loader fills its prefetch queue whenever it is
    # idle (between rounds): those batches come free, so each of its rounds first drains them.
    warm_loader = max(warm, pcfg.prefetch + 1)
    parts, peak = {"pipeline": [], "train": [], "end_to_end": []}, {}
    for i in range(pc.rounds):
        k = n // pc.rounds + (i < n % pc.rounds)
        for name, source, step, w in (("pipeline", data, None, warm_loader), ("train", replay, stepper, 0),
                                      ("end_to_end", data, stepper, warm_loader)):
            with sampler.stage(name), _peak_memory(rt.device) as mem:
                parts[name].append(run_steps(source, step, k, w, rt.device, bs))
            if mem:
                peak[name] = max(peak.get(name, 0.0), mem["torch_peak_mem_gib"])
    results = {name: merge_runs(p, bs) for name, p in parts.items()}
    for name, gib in peak.items():
        results[name]["torch_peak_mem_gib"] = gib
    del data, loader, replay
    gc.collect()
    return results, kernels, stepper


def _report(pc, cfg, rt, pcfg, stepper, stages, results, timeline, kernels, sampler) -> dict:
    e2e = results["end_to_end"]["images_per_s"]
    slowest = min(results["pipeline"]["images_per_s"], results["train"]["images_per_s"])
    slowest_median = max(results["pipeline"]["median_ms_per_batch"], results["train"]["median_ms_per_batch"])
    machine = machine_info(rt.device)
    figures = {
        "pipeline_ips": results["pipeline"]["images_per_s"], "train_ips": results["train"]["images_per_s"],
        "e2e_ips": e2e, "wait_frac": results["end_to_end"]["data_wait_frac"],
        "stage_ms": {k: v["own_ms_per_batch"] for k, v in stages.items()}, "device": pcfg.device,
        "num_threads": pcfg.num_threads, "cpu_count": machine["cpu_affinity"],
        "pipeline_cores": results["pipeline"]["pipeline_cores"], "prefetch": pcfg.prefetch,
        "hw_decoder_load": pcfg.hw_decoder_load, "batch_size": cfg.batch_size, "compile": cfg.compile,
        "gpu_util": (results["end_to_end"]["gpu"] or {}).get("util_pct_mean"),
    }
    return {
        "schema": SCHEMA_ID,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "versions": versions(),
        "config": {"profile": pc.to_dict(), "train": cfg.to_dict(), "pipeline": pcfg.to_dict(),
                   "runtime": {"device": str(rt.device), "precision": rt.precision, "channels_last": rt.channels_last,
                               "phase": stepper.phase.name, "torch_threads": torch.get_num_threads()}},
        "method": {
            "pipeline_stages": "truncated pipelines built from the same config (reader; + decode; + resize/flip; "
                               "+ task generator), each timed alone; a stage's own cost is the difference of "
                               "consecutive per-batch times (DALI 2.4 exposes no per-operator timing)",
            "data_wait": "host wall time inside next() on the loader, as a fraction of the end-to-end wall time "
                         "(the trainer's data_wait_frac); no per-step device sync",
            "step_alone": "the training step on batches recorded from the run's own loader, replayed from the device",
            "rounds": f"pipeline alone, step alone and the two together measured in {pc.rounds} interleaved "
                      f"round(s) of about {pc.batches // pc.rounds} batches each, summed",
            "cpu": "CPU time per thread from /proc/self/task/*/stat, grouped by thread name; cores = CPU s / wall s",
            "gpu": "NVML utilisation and memory" if sampler.nvml is not None else
                   ("NVML unavailable (install nvidia-ml-py)" if rt.device.type == "cuda" else "no GPU (CPU run)"),
            "kernels": f"torch.profiler over {pc.profile_steps} steps of the step alone, by {kernels['time']}",
        },
        "stages": results,
        "pipeline_stages": stages,
        "data_wait_frac": results["end_to_end"]["data_wait_frac"],
        "consistency": {"end_to_end_over_slowest_alone": e2e / slowest,
                        "median_end_to_end_over_slowest_alone":
                            slowest_median / results["end_to_end"]["median_ms_per_batch"],
                        "note": "<= 1 within noise: the two together cannot beat the slower of the two alone "
                                "(first by mean rate, then by median step time)"},
        "timeline": timeline,
        "utilisation": {"cpu": sampler.cpu_timeline(), "gpu": sampler.gpu_timeline(),
                        "marks": [{"stage": m, "start": s - sampler.t0, "end": e - sampler.t0}
                                  for m, s, e in sampler.marks]},
        "kernels": kernels,
        "bottleneck": diagnose(figures),
    }

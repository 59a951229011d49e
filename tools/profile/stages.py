"""The input pipeline measured alone, and cut into stages.

DALI 2.4 exposes no per-operator timing to Python: `Pipeline.executor_statistics()` reports
output memory sizes only (and only with exec_dynamic=False), and operator traces are set by a
few operators for their own diagnostics. So the cost of each part is measured the way one would
by hand: the same config is built into truncated pipelines, each one stage longer than the
last, and each is timed alone (images/s over the same number of batches):

    read      the webdataset reader (file I/O, shuffle buffer)
    decode    + the (fused crop-window) JPEG decoder: "mixed" (nvJPEG / hardware decoder) on GPU
    augment   + resize and flip: the complete common part (`build.images_and_labels`)
    generate  + the task's generator: the full pipeline the loader runs (`build.build_pipeline`)

A stage's own cost is the difference of consecutive per-batch times. It is an estimate: DALI
overlaps CPU and GPU stages across iterations, so the differences do not add up exactly to the
full pipeline's time and a cheap stage may come out slightly negative (noise); both are
reported as measured. The truncated pipelines call build.py's own stage functions
(`read_shards`, `decode`, `images_and_labels`), so they cannot drift from the real one."""

from __future__ import annotations

import time

from nvidia.dali import pipeline_def
from nvidia.dali.backend import TensorListGPU

from ...pipeline import build
from ...pipeline.config import PipelineConfig

STAGES = ("read", "decode", "augment", "generate")
STAGE_HELP = {
    "read": "webdataset reader (file I/O, shuffle)",
    "decode": "JPEG decode of the crop window",
    "augment": "resize + flip (common part complete)",
    "generate": "task generator (full pipeline)",
}


def stage_pipeline(cfg: PipelineConfig, upto: str):
    """A built DALI pipeline running `cfg`'s pipeline up to and including stage `upto`."""
    if upto not in STAGES:
        raise ValueError(f"unknown stage {upto!r}; choose one of {STAGES}")
    if upto == "generate":
        return build.build_pipeline(cfg)[0]
    tars, idxs, _ = build.shard_files(cfg)
    shard_id, num_shards = cfg.resolved_rank()

    @pipeline_def
    def pipe():
        jpg, cls = build.read_shards(cfg, tars, idxs, shard_id, num_shards)
        if upto == "read":
            return jpg, cls
        if upto == "augment":
            return build.images_and_labels(cfg, jpg, cls)
        return build.decode(jpg, cfg), cls

    p = pipe(**build.pipeline_kwargs(cfg, shard_id))
    p.build()
    return p


def _wait(outputs):
    # run() hands back GPU outputs that may still be in flight on DALI's stream; copying one to
    # the host waits for the iteration, so the clock stops on finished work
    for o in outputs:
        if isinstance(o, TensorListGPU):
            o.as_cpu()
            return


def time_pipeline(pipe, warmup: int, batches: int, batch_size: int) -> dict:
    """Images/s of `pipe.run()` over `batches` iterations after `warmup` (readers wrap around
    epochs by themselves when run directly)."""
    out = None
    for _ in range(warmup):
        out = pipe.run()
    if out is not None:
        _wait(out)
    t = time.perf_counter()
    for _ in range(batches):
        out = pipe.run()
    _wait(out)
    wall = time.perf_counter() - t
    return {"batches": batches, "seconds": wall, "images_per_s": batches * batch_size / wall,
            "ms_per_batch": 1000 * wall / batches}


def marginal_ms(stages: dict) -> dict:
    """Each stage's own cost per batch: its time minus the previous (shorter) pipeline's."""
    out, prev = {}, 0.0
    for name in STAGES:
        if name in stages:
            ms = stages[name]["ms_per_batch"]
            out[name] = ms - prev
            prev = ms
    return out

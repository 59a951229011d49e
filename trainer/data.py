"""The run's data: the DALI pipeline over shards, or synthetic batches of the same pipeline.

`pipeline_config` is the one place a training config becomes a `PipelineConfig`: training,
pretext evaluation, linear evaluation, profiling, previews and benchmarks all call it, so the
pipeline a run saves in config.json is the pipeline every tool rebuilds. Errors name the
problem and the fix before DALI gets to fail: no --shards, a missing directory, no manifest, a
shard set too small for one batch per rank."""

from __future__ import annotations

import os

from ..pipeline.config import PipelineConfig
from .synthetic import synthetic_batches
from .tasks import get_task


class DataError(ValueError):
    pass


def pipeline_config(cfg, rt, training: bool = True, **changes) -> PipelineConfig:
    """`cfg`'s pipeline (every data parameter of the task, forwarded whole) on `rt`'s device and
    in its precision. `changes`: PipelineConfig fields to override (e.g. a rank, a seed)."""
    gpu = rt.device.type == "cuda"
    fields = dict(
        shards=cfg.shards or "", task=get_task(cfg.task).pipeline_task, batch_size=cfg.batch_size,
        image_size=cfg.image_size, device="gpu" if gpu else "cpu", device_id=rt.device.index if gpu else None,
        num_threads=cfg.num_threads, prefetch=cfg.prefetch, hw_decoder_load=cfg.hw_decoder_load,
        concurrency=cfg.dali_concurrency, seed=cfg.seed,
        dtype=rt.data_dtype, training=training, min_area=cfg.min_area, flip=cfg.flip,
        aberration=cfg.aberration, params=cfg.pipeline)
    fields.update(changes)
    return PipelineConfig(**fields)


def endless(loader):
    """Batches across epoch ends (each `iter(loader)` is one epoch)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise RuntimeError("the batch source yielded no batch in a whole epoch")


def check_shards(cfg) -> None:
    if not cfg.shards:
        raise DataError("no shards given: pass --shards DIR (made by `spotart build-shards`) or --set data=synthetic")
    if not os.path.isdir(cfg.shards):
        raise DataError(f"{cfg.shards}: shards directory does not exist; build it with "
                        f"`spotart build-shards SOURCE --out {cfg.shards}`")


def build_loader(cfg, pcfg: PipelineConfig, device, on_bad=None):
    """The loader of the run: DALI over the shards, or (data=synthetic) recorded batches of the
    same pipeline over procedural images. Before DALI opens the shards, a pre-flight compares
    them with the manifest (sizes and index files; with cfg.verify every hash, on rank 0).
    `on_bad`: told of every sample the loader leaves out (see DaliLoader)."""
    if cfg.data == "synthetic":
        return synthetic_batches(pcfg, device)
    from ..pipeline.loader import DaliLoader
    from .baddata import ShardSetError, preflight

    check_shards(cfg)
    manifest = pcfg.manifest()  # clear error when missing
    if not manifest.get("num_samples"):
        raise DataError(f"{cfg.shards}: the shard set is empty (manifest lists no samples); rebuild it")
    try:
        preflight(cfg.shards, full=cfg.verify and pcfg.resolved_rank()[0] == 0)
    except ShardSetError as err:
        raise DataError(str(err)) from None
    loader = DaliLoader(pcfg, device, on_bad=on_bad)
    if len(loader) == 0:
        _, world = pcfg.resolved_rank()
        raise DataError(f"{cfg.shards}: {manifest['num_samples']} images give no batch of {cfg.batch_size} "
                        f"on each of {world} rank(s); lower --set batch_size or add images")
    return loader

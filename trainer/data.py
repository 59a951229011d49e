"""The run's data: the DALI pipeline over shards, or synthetic on-device batches.

Errors name the problem and the fix before DALI gets to fail: no --shards, a missing directory,
no manifest, a shard set too small for one batch per rank."""

from __future__ import annotations

import os

from ..pipeline.config import PipelineConfig
from .synthetic import SyntheticBatches


class DataError(ValueError):
    pass


def pipeline_config(cfg, task, rt) -> PipelineConfig | None:
    if cfg.data == "synthetic":
        return None
    if not cfg.shards:
        raise DataError("no shards given: pass --shards DIR (made by `spotart build-shards`) or --set data=synthetic")
    if not os.path.isdir(cfg.shards):
        raise DataError(f"{cfg.shards}: shards directory does not exist; build it with "
                        f"`spotart build-shards SOURCE --out {cfg.shards}`")
    return PipelineConfig(
        shards=cfg.shards, task=task.pipeline_task, batch_size=cfg.batch_size, image_size=cfg.image_size,
        device="gpu" if rt.device.type == "cuda" else "cpu",
        device_id=rt.device.index if rt.device.type == "cuda" else None,
        num_threads=cfg.num_threads, prefetch=cfg.prefetch, hw_decoder_load=cfg.hw_decoder_load, seed=cfg.seed, dtype=rt.data_dtype, params=task.pipeline_params(cfg))


def build_loader(cfg, task, rt, pcfg: PipelineConfig | None):
    if pcfg is None:
        return SyntheticBatches(task.pipeline_task, cfg.batch_size, cfg.image_size, device=rt.device,
                                dtype=rt.data_dtype, seed=cfg.seed, params=task.pipeline_params(cfg))
    from ..pipeline.loader import DaliLoader

    manifest = pcfg.manifest()  # clear error when missing
    if not manifest.get("num_samples"):
        raise DataError(f"{cfg.shards}: the shard set is empty (manifest lists no samples); rebuild it")
    loader = DaliLoader(pcfg, rt.device)
    if len(loader) == 0:
        _, world = pcfg.resolved_rank()
        raise DataError(f"{cfg.shards}: {manifest['num_samples']} images give no batch of {cfg.batch_size} "
                        f"on each of {world} rank(s); lower --set batch_size or add images")
    return loader

"""The DALI pipeline: shards -> decoded, cropped images -> the task's inputs, all on `cfg.device`.

reader (CPU, file I/O) -> decode ("mixed" = nvJPEG on the GPU, or CPU) -> random resized crop
+ flip (training) or resize + centre crop (evaluation) -> the task generator
(`spotart.pipeline.<task>.generate`) -> CHW float tensors + int labels."""

from __future__ import annotations

import importlib
import os

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import pipeline_def

from .config import TASKS, PipelineConfig

READER = "Reader"


class ShardsError(FileNotFoundError):
    pass


def shard_files(cfg: PipelineConfig) -> tuple[list[str], list[str], dict]:
    """(tar paths, index paths, manifest) with clear errors for missing/empty shard sets."""
    m = cfg.manifest()
    if not m.get("shards") or not m.get("num_samples"):
        raise ShardsError(f"{cfg.shards}: the manifest lists no samples; rebuild with `spotart build-shards`")
    tars = [os.path.join(cfg.shards, s["path"]) for s in m["shards"]]
    idxs = [os.path.join(cfg.shards, s["index"]) for s in m["shards"]]
    for p in tars + idxs:
        if not os.path.isfile(p):
            raise ShardsError(f"{p}: listed in {cfg.shards}/manifest.json but missing; run `spotart verify-shards {cfg.shards}`")
    return tars, idxs, m


def _parse_cls(out, cls):
    # webdataset stores the class id as ASCII digits; an empty component (unlabelled) -> -1
    v = 0
    n = 0
    for c in cls:
        if c >= 48 and c <= 57:
            v = v * 10 + (c - 48)
            n += 1
    out[0] = v if n > 0 else -1


def _cls_shape(outs, ins):
    for i in range(len(ins[0])):
        outs[0][i][:] = 1


def parse_labels(cls):
    """ASCII class ids -> int64 (1,) per sample, by DALI's numba operator (CPU)."""
    from nvidia.dali.plugin.numba.fn.experimental import numba_function

    return numba_function(cls, run_fn=_parse_cls, setup_fn=_cls_shape, out_types=[types.INT64],
                          in_types=[types.UINT8], outs_ndim=[1], ins_ndim=[1], device="cpu")


def _device_id(cfg: PipelineConfig):
    if cfg.device == "cpu":
        return None
    if cfg.device_id is not None:
        return cfg.device_id
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("device='gpu' but no CUDA device is visible; use device='cpu' (DALI's CPU backend)")
    return torch.cuda.current_device()


def images_and_labels(cfg: PipelineConfig, tars, idxs, shard_id, num_shards):
    jpg, cls = fn.readers.webdataset(
        paths=tars, index_paths=idxs, ext=["jpg", "cls"], missing_component_behavior="empty",
        dtypes=[types.UINT8, types.UINT8], random_shuffle=cfg.training, initial_fill=cfg.initial_fill,
        seed=cfg.seed, shard_id=shard_id, num_shards=num_shards, pad_last_batch=True,
        stick_to_shard=True, name=READER)
    decode_dev = "mixed" if cfg.device == "gpu" else "cpu"
    hw = {"hw_decoder_load": cfg.hw_decoder_load} if cfg.device == "gpu" else {}
    s = cfg.image_size
    if cfg.training:
        # decode only the crop window: the fused operator skips most of the IDCT work
        img = fn.decoders.image_random_crop(jpg, device=decode_dev, output_type=types.RGB,
                                            random_area=[cfg.min_area, 1.0], random_aspect_ratio=[3 / 4, 4 / 3], **hw)
        img = fn.resize(img, size=[s, s], antialias=True, device=cfg.device)
        if cfg.flip:
            img = fn.flip(img, horizontal=fn.random.coin_flip(probability=0.5), device=cfg.device)
    else:
        img = fn.decoders.image(jpg, device=decode_dev, output_type=types.RGB, **hw)
        img = fn.resize(img, resize_shorter=s, antialias=True, device=cfg.device)
        img = fn.crop(img, crop=[s, s], device=cfg.device)
    return img, parse_labels(cls)


def build_pipeline(cfg: PipelineConfig, checkpoint: str | bytes | None = None):
    """-> (built DALI pipeline, output names). `checkpoint`: a DALI checkpoint to resume from."""
    tars, idxs, _ = shard_files(cfg)
    shard_id, num_shards = cfg.resolved_rank()
    gen = importlib.import_module(f"spotart.pipeline.{TASKS[cfg.task][0]}").generate
    names: list[str] = []

    @pipeline_def(enable_checkpointing=True)
    def pipe():
        img, label = images_and_labels(cfg, tars, idxs, shard_id, num_shards)
        outs = gen(img, cfg)
        names.extend(outs)
        names.append("label")
        return (*outs.values(), label)

    kwargs = dict(batch_size=cfg.batch_size, num_threads=cfg.num_threads, device_id=_device_id(cfg),
                  prefetch_queue_depth=cfg.prefetch, seed=(cfg.seed * 7919 + shard_id) % (2**31 - 1),
                  exec_dynamic=True)
    if checkpoint is not None:
        kwargs["checkpoint"] = checkpoint
    p = pipe(**kwargs)
    p.build()
    return p, list(names)

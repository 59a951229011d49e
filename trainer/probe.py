"""What every frozen-feature probe of a trunk shares (the linear evaluation and the online k-NN
monitor): the labelled images it reads, and the input statistics it feeds the trunk.

Input statistics: a trunk is probed on the input distribution it was trained on. Most tasks
train on images in [-1, 1], and so are probed. Jigsaw trains on tiles standardised one by one
(zero mean, unit variance: the per-tile normalisation countermeasure), so its trunk is probed
on images standardised one by one ("per_image"); fed [-1, 1] images, its first layers would see
a fraction of the contrast they were trained for, and its BatchNorm statistics would not fit.
The mode travels with the exported backbone (`input_norm` in its config)."""

from __future__ import annotations

import torch

INPUT_NORMS = (None, "per_image")


def normalise_input(images: torch.Tensor, mode: str | None) -> torch.Tensor:
    """Images (B, 3, H, W) as the trunk saw its training inputs."""
    if mode is None:
        return images
    if mode == "per_image":
        x = images.float()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        # the pipeline's fn.normalize epsilon: 1 grey level squared, in [-1, 1] units
        std = (x.var(dim=(1, 2, 3), keepdim=True, unbiased=False) + (1 / 127.5) ** 2).sqrt()
        return ((x - mean) / std).to(images.dtype)
    raise ValueError(f"unknown input normalisation {mode!r}; choose one of {INPUT_NORMS}")


def probe_loader(shards: str, rt, *, image_size: int, batch_size: int, num_threads: int = 4, seed: int = 0,
                 training: bool = False):
    """Labelled images of `shards` (the supervised task's pipeline: random resized crop and flip
    when training, centre crop otherwise), one rank's view of all of them, through the one place
    a training config becomes a pipeline."""
    from ..pipeline.loader import DaliLoader
    from .config import TrainConfig
    from .data import pipeline_config

    tcfg = TrainConfig(task="supervised", shards=shards, image_size=image_size, batch_size=batch_size,
                       num_threads=num_threads, seed=seed, device=str(rt.device.type), precision=rt.precision)
    return DaliLoader(pipeline_config(tcfg, rt, training=training, shard_id=0, num_shards=1), rt.device)

"""`PipelineConfig`: everything a DALI pipeline needs, validated on construction.

Task-specific parameters (drop probability, gap, jitter, tile size, ...) live in one frozen
dataclass per task, defined next to the generator that uses them (`artifacts.ArtifactParams`,
`inpainting.InpaintingParams`, `context.ContextParams`, `jigsaw.JigsawParams`). A plain dict
given as `params` is turned into that task's dataclass; unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from dataclasses import dataclass
from typing import Any

from ..configs import coerce_dataclass
from .aberration import MAX_SCALE

# task -> (module in spotart.pipeline, params dataclass name). "images" is the plain
# augmented-image pipeline used by supervised training and by linear evaluation.
TASKS = {
    "artifacts": ("artifacts", "ArtifactParams"),
    "inpainting": ("inpainting", "InpaintingParams"),
    "context": ("context", "ContextParams"),
    "jigsaw": ("jigsaw", "JigsawParams"),
    "images": ("images", "ImageParams"),
}
DTYPES = ("float32", "float16", "bfloat16")
CONCURRENCY = ("backend", "full")


def task_params_class(task: str):
    module, name = TASKS[task]
    return getattr(importlib.import_module(f"spotart.pipeline.{module}"), name)


def make_params(task: str, params: Any = None):
    """`params` as the task's frozen dataclass: from None (paper defaults), a dict, or itself."""
    return coerce_dataclass(task_params_class(task), params, f"{task} pipeline parameter")


@dataclass(frozen=True)
class PipelineConfig:
    shards: str                      # directory with manifest.json, the .tar shards and .idx files
    task: str = "artifacts"
    batch_size: int = 64
    image_size: int = 64             # side of the square image each task starts from (after crop)
    device: str = "gpu"              # "gpu": mixed decode + GPU operators; "cpu": DALI CPU backend
    device_id: int | None = None     # CUDA device; None -> current torch device (gpu) / no GPU (cpu)
    num_threads: int = 4             # DALI CPU worker threads
    prefetch: int = 2                # DALI prefetch queue depth (batches in flight)
    seed: int = 0
    shard_id: int | None = None      # this rank's part of the data; None -> torch.distributed rank or 0
    num_shards: int | None = None    # number of parts; None -> torch.distributed world size or 1
    dtype: str = "float32"           # output dtype of image tensors
    layout: str = "NCHW"
    training: bool = True            # random crops/flips/masks; False: deterministic centre crop
    min_area: float = 0.25           # random resized crop scale range (area fraction), lower end
    flip: bool = True
    aberration: float = 0.0          # synthetic lateral chromatic aberration: green scaled by 1 + s (aberration.py)
    hw_decoder_load: float = 0.65    # share of JPEG decoding given to the hardware decoder (A100/H100)
    concurrency: str = "backend"     # DALI operator concurrency: "backend" (DALI's default) or "full" (see build.py)
    initial_fill: int = 1024         # shuffle buffer of the reader, per rank
    params: Any = None               # task parameters; see module docstring

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {sorted(TASKS)}")
        if self.device not in ("gpu", "cpu"):
            raise ValueError(f"device must be 'gpu' or 'cpu', got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.layout != "NCHW":
            raise ValueError(f"only NCHW layout is produced, got {self.layout!r}")
        for name in ("batch_size", "image_size", "num_threads", "prefetch", "initial_fill"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.min_area <= 1.0:
            raise ValueError(f"min_area must be in (0, 1], got {self.min_area}")
        if not 0.0 <= self.hw_decoder_load <= 1.0:
            raise ValueError(f"hw_decoder_load must be in [0, 1], got {self.hw_decoder_load}")
        if self.concurrency not in CONCURRENCY:
            raise ValueError(f"concurrency must be one of {CONCURRENCY}, got {self.concurrency!r}")
        if not abs(self.aberration) <= MAX_SCALE:
            raise ValueError(f"aberration must be in [-{MAX_SCALE}, {MAX_SCALE}] (a radial scale of the green "
                             f"channel; 0 = off), got {self.aberration}")
        if (self.shard_id is None) != (self.num_shards is None):
            raise ValueError("give both shard_id and num_shards, or neither")
        if self.num_shards is not None and not 0 <= self.shard_id < self.num_shards:
            raise ValueError(f"shard_id {self.shard_id} out of range for num_shards {self.num_shards}")
        params = make_params(self.task, self.params)
        if hasattr(params, "resolved"):  # sizes a task derives from the image (artifacts: mask_size 0)
            params = params.resolved(self.image_size)
        object.__setattr__(self, "params", params)

    def replace(self, **changes) -> "PipelineConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["params"] = dataclasses.asdict(self.params)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PipelineConfig":
        return coerce_dataclass(cls, d, "pipeline config key")

    def resolved_rank(self) -> tuple[int, int]:
        """(shard_id, num_shards), taken from torch.distributed when it is initialised."""
        if self.num_shards is not None:
            return self.shard_id, self.num_shards
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                return dist.get_rank(), dist.get_world_size()
        except ImportError:
            pass
        return 0, 1

    def manifest(self) -> dict:
        path = os.path.join(self.shards, "manifest.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path}: no manifest; build shards first with `spotart build-shards SOURCE --out {self.shards}`"
            )
        with open(path) as f:
            return json.load(f)

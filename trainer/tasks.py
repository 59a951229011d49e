"""The task registry: what the training loop needs to know about a pretext (or supervised) task.

A task is an object with the interface of `Task` below, registered in `TASKS` by name. The loop
(`loop.py`) is the same for every task: it builds the task's models, one optimiser per name the
task declares, walks the task's phases, and per step calls `train_step`, which returns one loss
per optimiser (each loss's gradient goes only to that optimiser's parameters) plus the scalars to
log. Everything task-specific (networks, freezing, losses, metrics) stays in the task's module.

The data a task sees is its pipeline's (`pipeline_task`, with that pipeline's own parameters
dataclass as `cfg.pipeline`); a task never redefines a data parameter.

Adding a task: a module `spotart.trainer.<name>` with a `Task` subclass, an entry in `TASKS`,
and its sizes in the presets of `config.py` (optional).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torch import nn

# name -> "module:class" inside spotart.trainer, imported on first use
TASKS = {
    "artifacts": "artifacts:ArtifactsTask",
    "context": "context:ContextTask",
    "jigsaw": "jigsaw:JigsawTask",
    "inpainting": "inpainting:InpaintingTask",
    "supervised": "supervised:SupervisedTask",
}
_instances: dict = {}


@dataclass(frozen=True)
class Phase:
    name: str
    steps: int
    optimizers: tuple  # names of the optimisers that step in this phase, in backward order


class Task:
    name: str = ""
    pipeline_task: str = ""   # PipelineConfig.task feeding it
    params_class: type = object

    def validate(self, cfg) -> None:
        """Cross-checks between cfg and the task's parameters (raise ValueError)."""

    def build_models(self, cfg) -> dict[str, nn.Module]:
        """Every module whose state the checkpoint holds, by name."""
        raise NotImplementedError

    def trunk(self, models: dict) -> nn.Module:
        """The transferable trunk inside `models`."""
        raise NotImplementedError

    def pretext_input_size(self, cfg) -> int:
        """Side of what the trunk sees during pretext training (a patch, a tile, the image)."""
        return cfg.image_size

    def input_norm(self, cfg) -> str | None:
        """How a probe must normalise images for this task's trunk (probe.normalise_input): the
        statistics of the inputs it was trained on. None: [-1, 1] images as they are."""
        return None

    def phases(self, cfg) -> list[Phase]:
        raise NotImplementedError

    def optimizer_params(self, models: dict) -> dict[str, list]:
        """Optimiser name -> its parameters."""
        raise NotImplementedError

    def lr_scale(self, name: str, cfg) -> float:
        """Optimiser `name`'s learning rate as a multiple of cfg.lr (e.g. a faster discriminator)."""
        return 1.0

    def build_optimizer(self, name: str, params: list, cfg) -> torch.optim.Optimizer:
        """Default: Adam with cfg's betas/eps at cfg.lr x lr_scale(name), L2 on conv and linear
        weights only (not biases or normalisation parameters). The loop's schedule scales from
        these base rates. Fused: one kernel per step, and it can skip a non-finite step on the
        device (guard.py)."""
        decay = [p for p in params if p.ndim > 1]
        rest = [p for p in params if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        return torch.optim.Adam(groups, lr=cfg.lr * self.lr_scale(name, cfg), betas=cfg.betas, eps=cfg.eps, fused=True)

    def enter_phase(self, models: dict, phase: Phase) -> dict[str, nn.Module]:
        """Freeze/unfreeze and set train/eval modes for `phase`; return the modules the step runs
        (the loop wraps those with trainable parameters in DDP and, on request, torch.compile)."""
        raise NotImplementedError

    def model_outputs(self, models: dict, batch: dict, cfg) -> dict:
        """The networks' view of `batch` for the checkpoint pictures (visuals.py), called in eval
        mode without gradients: e.g. {"pred": class per sample}. {} draws the inputs only."""
        return {}

    def train_step(self, runners: dict, batch: dict, phase: Phase, cfg) -> tuple[dict, dict]:
        """-> ({optimiser name: loss}, {metric name: 0-d tensor}); no backward, no sync."""
        raise NotImplementedError


def task_names() -> list[str]:
    return sorted(TASKS)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {task_names()}")
    if name not in _instances:
        module, cls = TASKS[name].split(":")
        _instances[name] = getattr(importlib.import_module(f"spotart.trainer.{module}"), cls)()
    return _instances[name]

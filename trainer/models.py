"""A task's networks, built in one place: for training (on the device, with their optimisers
and the GradScaler) and from a checkpoint (evaluation, export, the profiler's step).

Every caller goes through these functions, so a run's weights, optimiser groups and learning
rates are the same whether the loop, the profiler or an evaluation builds them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checkpoint import load_checkpoint, load_weights
from .config import TrainConfig
from .tasks import Task, get_task


def build_models(cfg: TrainConfig, rt=None) -> dict:
    """The task's models with the run's initial weights (seeded: identical on every rank), on
    `rt`'s device and memory format when given, else on the CPU."""
    torch.manual_seed(cfg.seed)
    models = get_task(cfg.task).build_models(cfg)
    if rt is not None:
        for m in models.values():
            m.to(rt.device, memory_format=rt.memory_format())
    return models


def build_optimizers(task: Task, models: dict, cfg) -> tuple[dict, dict]:
    """-> (optimiser by name, the parameters each one owns)."""
    optimizers = {n: task.build_optimizer(n, ps, cfg) for n, ps in task.optimizer_params(models).items()}
    params_of = {n: [p for g in o.param_groups for p in g["params"]] for n, o in optimizers.items()}
    return optimizers, params_of


@dataclass
class Training:
    """What a training step updates and a checkpoint holds."""
    task: Task
    models: dict
    optimizers: dict
    params_of: dict          # optimiser name -> its parameters (each loss's backward goes only there)
    base_lr: dict            # optimiser name -> the learning rate of each group before the schedule
    scaler: torch.amp.GradScaler


def build_training(cfg: TrainConfig, rt) -> Training:
    task = get_task(cfg.task)
    models = build_models(cfg, rt)
    optimizers, params_of = build_optimizers(task, models, cfg)
    base_lr = {n: [g["lr"] for g in o.param_groups] for n, o in optimizers.items()}
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.fp16)
    return Training(task, models, optimizers, params_of, base_lr, scaler)


def load_models(path: str, device="cpu", changes: dict | None = None,
                hint: str | None = None) -> tuple[TrainConfig, dict, dict]:
    """(config, models with the checkpoint's weights on `device`, the checkpoint) of a run's
    checkpoint; `changes` replace config keys that do not shape the networks (the run's device,
    batch size, shards, ...)."""
    ckpt = load_checkpoint(path, "cpu", hint=hint or "train the run first (spotart train), or give --checkpoint")
    cfg = TrainConfig.from_dict({**ckpt["config"], **(changes or {})})
    models = get_task(cfg.task).build_models(cfg)
    for name, m in models.items():
        load_weights(m, ckpt, name, path)
        m.to(device)
    return cfg, models, ckpt

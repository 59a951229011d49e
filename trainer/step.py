"""One optimisation step, shared by the training loop and the profiler's step-alone timing.

Forward under autocast; one backward per optimiser into its own parameters only
(`backward(inputs=...)`), keeping the graph for the next (an adversarial pair shares one
forward); then every optimiser steps and the scaler updates. No device sync here."""

from __future__ import annotations

import torch


def optimise(task, runners: dict, batch: dict, phase, cfg, rt, optimizers: dict, params_of: dict, scaler) -> dict:
    """One step of `phase` on `batch`. -> the task's logs (device tensors, not synced)."""
    if rt.channels_last:
        batch = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}
    with rt.autocast():
        losses, logs = task.train_step(runners, batch, phase, cfg)
    last = len(phase.optimizers) - 1
    for k, n in enumerate(phase.optimizers):
        scaler.scale(losses[n]).backward(inputs=params_of[n], retain_graph=k < last)
    for n in phase.optimizers:
        scaler.step(optimizers[n])
    scaler.update()
    for n in phase.optimizers:
        optimizers[n].zero_grad(set_to_none=True)
    return logs

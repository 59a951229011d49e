"""One optimisation step, shared by the training loop and the profiler's step-alone timing.

Forward under autocast; one backward per optimiser into its own parameters only
(`backward(inputs=...)`), keeping the graph for the next (an adversarial pair shares one
forward); then, unless a loss or a gradient is not finite (guard.py), every optimiser steps and
the scaler updates. No device sync here."""

from __future__ import annotations

import torch

from .guard import nonfinite, step_unless


def optimise(task, runners: dict, batch: dict, phase, cfg, rt, optimizers: dict, params_of: dict, scaler,
             guard=None) -> dict:
    """One step of `phase` on `batch`. -> the task's logs (device tensors, not synced).
    `guard`: a StepGuard that puts the buffers back after a skipped step and counts it."""
    if rt.channels_last:
        batch = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}
    empty = next(iter(batch.values())).shape[0] == 0  # a rank's share of an epoch's end can be empty
    if guard is not None:
        guard.before()
    with rt.autocast():
        losses, logs = task.train_step(runners, batch, phase, cfg)
    last = len(phase.optimizers) - 1
    for k, n in enumerate(phase.optimizers):
        scaler.scale(losses[n]).backward(inputs=params_of[n], retain_graph=k < last)
    for n in phase.optimizers:
        scaler.unscale_(optimizers[n])  # fp16: the gradients as they are, overflow recorded for update()
    bad = nonfinite({n: losses[n] for n in phase.optimizers},
                    [p.grad for n in phase.optimizers for p in params_of[n] if p.grad is not None], empty)
    for n in phase.optimizers:
        step_unless(optimizers[n], bad)
    scaler.update()
    for n in phase.optimizers:
        optimizers[n].zero_grad(set_to_none=True)
    if guard is not None:
        guard.after(bad, empty)
    return logs

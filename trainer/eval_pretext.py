"""The pretext task's own accuracy on held-out data (`spotart eval pretext RUN`): the health
check of a run. The run's networks are loaded from its checkpoint, put in eval mode (BatchNorm
running statistics, no dropout) and fed held-out batches of the run's own pipeline with the
deterministic image decode (training=False: centre crops; the task's own randomness - patch
positions, permutations, masks, holes - stays, seeded, so two evaluations of a checkpoint see
the same inputs). The metrics are the task's training logs (`Task.train_step`, under
torch.no_grad, last phase), averaged over the held-out images:

  artifacts   mask_auc (the mask head's ROC-AUC for dropped vs kept entries of the damaged
              images, per batch, averaged), acc_real, acc_fake (real/damaged), mask_acc,
              mask_iou (predicted vs true dropped regions at the 0.5 threshold), loss_mask, ...
  context     acc (8-way position accuracy, chance 1/8), loss
  jigsaw      acc (permutation accuracy, chance 1/count), loss
  inpainting  rec_mse (MSE inside the hole, [-1, 1] units), loss_rec, acc_real / acc_fake of D
              (none with adv_weight=0: no D)
  supervised  acc (top-1), loss
"""

from __future__ import annotations

import os
import time

import torch

from .tasks import get_task

# the one number to read first, per task (and whether higher is better)
HEADLINE = {"artifacts": ("mask_auc", True), "context": ("acc", True), "jigsaw": ("acc", True),
            "inpainting": ("rec_mse", False), "supervised": ("acc", True)}


def evaluate_pretext(run_dir: str, shards: str, checkpoint: str | None = None, batch_size: int | None = None,
                     max_batches: int = 0, device: str = "auto", precision: str = "auto", num_threads: int = 4,
                     seed: int = 0, loader=None) -> dict:
    """Mean pretext metrics of RUN's checkpoint on `shards`. `loader`: any object with the
    DaliLoader interface instead of the pipeline over `shards` (tests)."""
    from .data import pipeline_config
    from .models import load_models
    from .runtime import resolve_runtime

    t0 = time.perf_counter()
    path = checkpoint or os.path.join(run_dir, "checkpoints", "last.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no checkpoint; train the run first (`spotart train {run_dir} ...`)")
    changes = dict(device=device, precision=precision, seed=seed, num_threads=num_threads, data="shards", shards=shards)
    if batch_size:
        changes["batch_size"] = batch_size
    cfg, models, ckpt = load_models(path, changes=changes)
    task = get_task(cfg.task)
    rt = resolve_runtime(cfg)
    for m in models.values():
        m.to(rt.device)
    phase = task.phases(cfg)[-1]
    runners = task.enter_phase(models, phase)
    for m in list(models.values()) + list(runners.values()):
        m.eval().requires_grad_(False)

    if loader is None:
        from ..pipeline.loader import DaliLoader

        if not os.path.isfile(os.path.join(shards, "manifest.json")):
            raise FileNotFoundError(f"{shards}: no manifest.json; pass held-out shards made by `spotart build-shards`")
        loader = DaliLoader(pipeline_config(cfg, rt, training=False, shard_id=0, num_shards=1), rt.device)

    sums, images, batches = None, 0, 0
    with torch.no_grad():
        for batch in loader:
            if max_batches and batches >= max_batches:
                break
            with rt.autocast():
                _, logs = task.train_step(runners, batch, phase, cfg)
            n = next(iter(batch.values())).shape[0]
            vec = torch.stack([v.float().reshape(()) for v in logs.values()]) * n
            sums = vec if sums is None else sums + vec
            names = list(logs)
            images += n
            batches += 1
    if not images:
        raise ValueError(f"{shards}: no batch of {cfg.batch_size} images; lower --batch-size")
    metrics = dict(zip(names, (sums / images).tolist()))
    key, higher = HEADLINE.get(cfg.task, (names[0], True))
    return {"run": run_dir, "checkpoint": os.path.abspath(path), "task": cfg.task, "step": int(ckpt["step"]),
            "phase": phase.name, "shards": shards, "images": images, "batches": batches, "metrics": metrics,
            "headline": {"metric": key, "value": metrics.get(key), "higher_is_better": higher},
            "device": str(rt.device), "seconds": time.perf_counter() - t0}


def markdown(result: dict) -> str:
    rows = ["| metric | value |", "| --- | --- |"] + [f"| {k} | {v:.4f} |" for k, v in result["metrics"].items()]
    return (f"Pretext evaluation of `{result['run']}` ({result['task']}, step {result['step']}) on "
            f"{result['images']} held-out images from `{result['shards']}`.\n\n" + "\n".join(rows) + "\n")

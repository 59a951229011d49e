"""Pretext health of an artifacts run on held-out images: can C see the damage, and where?

The training logs (acc_real, acc_fake, mask IoU) are measured in train mode at a threshold of 0
on the training batches; a mask head that answers "kept" everywhere scores IoU 0 whether or not
its logits rank the dropped entries first. Threshold-free numbers on held-out data say more:

  mask_auc      ROC-AUC of the mask head on damaged held-out images: every Omega entry is one
                sample, dropped entries are the positives, the score is minus the kept-logit
                (pooled over all entries of all images; ties count one half, as Mann-Whitney U).
                0.5: the head cannot localise; 1: every dropped entry ranks above every kept one.
  acc_real      real/fake accuracy at logit 0 on the reconstructed real images,
  acc_fake      and on the repaired damaged images (eval mode: BatchNorm running statistics);
  rf_auc        ROC-AUC of the real/fake logit (damaged = positive, score = minus the logit).
  ae_psnr       PSNR of the autoencoder's reconstructions of the held-out images ([-1, 1], peak 2).
  damage_psnr   PSNR between the repaired image and the reconstruction of the same image, over
                the pixels whose features were dropped: how far the repair moved those pixels
                (high = the damaged image is close to the real path's output there).

Everything runs on the run's last checkpoint in eval mode, on the deterministic (centre-crop)
pipeline with the run's mask size and theta; masks are drawn from the pipeline's seeded
generator, so two evaluations of one checkpoint see the same damage.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (1 = positive), tied scores
    counting one half; NaN when a class is empty. losses.roc_auc in float64 (one definition)."""
    from .losses import roc_auc as auc

    s = torch.as_tensor(np.asarray(scores, dtype=np.float64)).reshape(-1)
    y = torch.as_tensor(np.asarray(labels)).reshape(-1).bool()
    if s.shape != y.shape:
        raise ValueError(f"scores {tuple(s.shape)} and labels {tuple(y.shape)} differ in size")
    return float(auc(s, y))


def psnr(mse: float) -> float:
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def load_run(run_dir: str, checkpoint: str | None = None):
    """(cfg, models in eval mode) of an artifacts run's checkpoint."""
    from .checkpoint import load_checkpoint, load_weights
    from .config import TrainConfig
    from .tasks import get_task

    path = checkpoint or os.path.join(run_dir, "checkpoints", "last.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no checkpoint; train the run first (`spotart train {run_dir} ...`)")
    ckpt = load_checkpoint(path, "cpu")
    cfg = TrainConfig.from_dict(dict(ckpt["config"], device="cpu", precision="fp32"))
    if cfg.task != "artifacts":
        raise ValueError(f"{path}: a {cfg.task} run; the health check reads artifacts runs")
    task = get_task(cfg.task)
    models = task.build_models(cfg)
    for name, m in models.items():
        load_weights(m, ckpt, name, path)
        m.eval().requires_grad_(False)
    return cfg, models, int(ckpt["step"])


@torch.no_grad()
def artifact_health(run_dir: str, shards: str, max_images: int = 2000, batch_size: int = 100, seed: int = 0,
                    num_threads: int = 2, checkpoint: str | None = None, loader=None) -> dict:
    """The numbers in the module docstring for RUN's checkpoint on `shards` (held-out)."""
    from .damage import damage, upsample_mask
    from .data import pipeline_config
    from .nets.repair import DamagedDecoder
    from .runtime import resolve_runtime
    from .tasks import get_task

    t0 = time.perf_counter()
    cfg, models, step = load_run(run_dir, checkpoint)
    cfg = cfg.replace(shards=shards, batch_size=batch_size, seed=seed, num_threads=num_threads, data="shards")
    ae, disc = models["autoencoder"], models["disc"]
    gen = DamagedDecoder(ae.decoder, models["repair"]).eval()
    if loader is None:
        from ..pipeline.loader import DaliLoader

        task = get_task("artifacts")
        rt = resolve_runtime(cfg)
        loader = DaliLoader(pipeline_config(cfg, task, rt).replace(training=False, shard_id=0, num_shards=1), rt.device)

    mask_scores, mask_labels, rf_scores, rf_labels = [], [], [], []
    se_ae = se_dmg = n_px = n_dmg_px = 0.0
    images = 0
    for batch in loader:
        if images >= max_images:
            break
        x, omega = batch["image"].float(), batch["mask"].float()
        phi, real = ae(x, return_code=True)
        fake = gen(damage(phi, omega, cfg.params.avg_kernel), omega)
        lr, _ = disc(real)
        lf, mf = disc(fake)
        mask_scores.append(-mf.flatten())
        mask_labels.append((omega < 0.5).flatten())
        rf_scores += [-lr, -lf]
        rf_labels += [torch.zeros_like(lr), torch.ones_like(lf)]
        se_ae += float((real - x).pow(2).sum())
        n_px += x.numel()
        dropped = 1 - upsample_mask(omega, x.shape[-2:])
        se_dmg += float(((fake - real).pow(2) * dropped).sum())
        n_dmg_px += float(dropped.sum()) * x.shape[1]
        images += x.shape[0]
    if not images:
        raise ValueError(f"{shards}: no batch of {batch_size} images; lower --batch-size")
    rf_s, rf_y = torch.cat(rf_scores).numpy(), torch.cat(rf_labels).numpy()
    lr_all = -rf_s[rf_y == 0]
    lf_all = -rf_s[rf_y == 1]
    return {
        "run": run_dir, "step": step, "images": images, "seconds": time.perf_counter() - t0,
        "mask_auc": roc_auc(torch.cat(mask_scores).numpy(), torch.cat(mask_labels).numpy()),
        "acc_real": float((lr_all > 0).mean()), "acc_fake": float((lf_all < 0).mean()),
        "rf_auc": roc_auc(rf_s, rf_y), "ae_psnr": psnr(se_ae / n_px),
        "damage_psnr": psnr(se_dmg / max(n_dmg_px, 1.0)),
    }


def fresh_disc_probe(run_dir: str, train_shards: str, val_shards: str, steps: int = 200, lr: float = 1e-3,
                     batch_size: int = 32, with_cls: bool = True, max_images: int = 1000, seed: int = 0) -> dict:
    """How visible is the run's repaired damage? A freshly initialised C (same architecture) is
    trained alone for `steps` against the run's frozen E, D and R (Adam lr, beta1 0.5; mask BCE
    on the damaged half, plus the real/fake BCE when `with_cls`), then measured like the run's
    own C on held-out images. A fresh C that localises well where the run's C does not says the
    game, not the damage, is the problem."""
    import tempfile

    from . import losses as L
    from .damage import damage
    from .data import pipeline_config
    from .nets.discriminator import Discriminator
    from .nets.repair import DamagedDecoder
    from .nets.trunk import Trunk
    from .runtime import resolve_runtime
    from .tasks import get_task
    from ..pipeline.loader import DaliLoader
    from .checkpoint import save_checkpoint
    from .artifacts import mask_size

    cfg, models, step = load_run(run_dir)
    p = cfg.params
    ae, gen = models["autoencoder"], DamagedDecoder(models["autoencoder"].decoder, models["repair"]).eval()
    torch.manual_seed(seed)
    disc = Discriminator(Trunk(cfg.trunk), mask_size(cfg), hidden=p.head_hidden, pool=p.head_pool).train()
    opt = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    tcfg = cfg.replace(shards=train_shards, batch_size=batch_size, seed=seed + 1, data="shards", num_threads=2)
    rt = resolve_runtime(tcfg)
    loader = DaliLoader(pipeline_config(tcfg, get_task("artifacts"), rt), rt.device)
    it, t0 = iter(loader), time.perf_counter()
    for _ in range(steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        x, omega = batch["image"].float(), batch["mask"].float()
        with torch.no_grad():
            phi, real = ae(x, return_code=True)
            fake = gen(damage(phi, omega, p.avg_kernel), omega)
        logits, mask_logits = disc(torch.cat([real, fake]))
        b = x.shape[0]
        loss = L.bce(mask_logits[b:], omega)
        if with_cls:
            loss = loss + L.bce(logits, torch.cat([torch.ones(b), torch.zeros(b)]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t0
    # measure the fresh C exactly like the run's own: a copy of the run with C replaced
    probe_models = dict(models, disc=disc.eval())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.pt")
        save_checkpoint(path, models=probe_models, optimizers={}, scaler=torch.amp.GradScaler("cpu", enabled=False),
                        step=step, config=cfg.to_dict(), rank_states=[])
        out = artifact_health(run_dir, val_shards, max_images=max_images, checkpoint=path)
    out.update(probe_steps=steps, probe_lr=lr, probe_with_cls=with_cls, probe_train_s=train_s)
    return out

"""Real and generated images for the tasks whose discriminator judges a generator's output.

A shortcut of artifacts or inpainting is a low-level difference between the real images and the
generated ones that the discriminator can use instead of the content: the autoencoder's blur,
seams along the damaged cells or the hole. It is a property of the trained generator, so these
audits need a run of the task (`--run`): an untrained autoencoder or repair network makes
images that any statistic tells apart, which measures nothing about the method.

Views (real, generated, region whose boundary is the seam), per batch of the run's pipeline:
  artifacts   "ae"       real through the autoencoder D(E(x)) vs repaired (the method's real path)
              "raw"      the raw image x vs repaired (the real path switched off)
              "decoded"  D(E(x)) vs repaired, region = dropped cells (damage in feature space)
              "pasted"   D(E(x)) vs the same Omega applied in pixel space: each dropped cell of
                         D(E(x)) replaced by the u-average of its neighbouring cells' means (the
                         naive damage the feature-space damage replaces)
  inpainting  "overlap"  target vs the composite D sees: the prediction on the hole and its
                         overlap band, the target elsewhere; region = hole + band
              "hole"     target vs the prediction pasted on the hole only (overlap band off);
                         region = hole
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

VIEWS = {"artifacts": ("ae", "raw", "decoded", "pasted"), "inpainting": ("overlap", "hole")}


class Generator:
    """The run's generator networks in eval mode; `views(batch)` -> {"pairs": {view: (real,
    generated, region)}} on the CPU."""

    def __init__(self, cfg, models: dict, device, autocast):
        self.cfg, self.device, self.autocast = cfg, device, autocast
        self.models = {n: m.to(device).eval().requires_grad_(False) for n, m in models.items()}
        if cfg.task == "artifacts":
            from ...trainer.nets.repair import DamagedDecoder

            self.damaged = DamagedDecoder(self.models["autoencoder"].decoder, self.models["repair"]).eval()

    @torch.no_grad()
    def views(self, batch: dict) -> dict:
        with self.autocast():
            pairs = self._artifacts(batch) if self.cfg.task == "artifacts" else self._inpainting(batch)
        return {"pairs": {k: tuple(t.detach().float().cpu() for t in v) for k, v in pairs.items()}}

    def _artifacts(self, batch):
        from ...trainer.damage import damage, upsample_mask

        x, omega = batch["image"], batch["mask"]
        phi, real = self.models["autoencoder"](x, return_code=True)
        fake = self.damaged(damage(phi, omega, self.cfg.params.avg_kernel), omega)
        keep = upsample_mask(omega.to(real.dtype), x.shape[-2:])
        pasted = pixel_damage(real, omega, self.cfg.params.avg_kernel)
        region = 1 - keep
        return {"ae": (real, fake, region), "raw": (x, fake, region),
                "decoded": (real, fake, region), "pasted": (real, pasted, region)}

    def _inpainting(self, batch):
        target, hole = batch["target"], batch["mask"]
        pred = self.models["generator"](batch["image"]).to(target.dtype)
        region = (batch["weight"] > 0).to(target.dtype)
        return {"overlap": (target, region * pred + (1 - region) * target, region),
                "hole": (target, hole * pred + (1 - hole) * target, hole)}


def pixel_damage(img: torch.Tensor, omega: torch.Tensor, kernel: int) -> torch.Tensor:
    """Omega applied in pixel space: dropped cells (omega 0) get the `kernel` x `kernel`
    average of the cell means around them, as damage.py does to the features."""
    from ...trainer.damage import local_average, upsample_mask

    m = omega.shape[-1]
    cells = F.adaptive_avg_pool2d(img.float(), m)
    fill = upsample_mask(local_average(cells, kernel), img.shape[-2:])
    keep = upsample_mask(omega.float(), img.shape[-2:])
    return (keep * img.float() + (1 - keep) * fill).to(img.dtype)


def load_generator(run: str, task: str, device, autocast, checkpoint: str | None = None):
    """(run config, Generator) from RUN/checkpoints/last.pt; the run must be of `task`."""
    import os

    from ...trainer.models import load_models

    path = checkpoint or os.path.join(run, "checkpoints", "last.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no checkpoint; the {task} audit judges a trained generator: train one "
                                f"first (`spotart train {run} --task {task} --shards ...`)")
    cfg, models, _ = load_models(path, "cpu", changes={"device": str(device)})
    if cfg.task != task:
        raise ValueError(f"{run} is a {cfg.task} run; the audit was asked for {task} (pass --task {cfg.task})")
    return cfg, Generator(cfg, models, device, autocast)

"""The context-encoder task (Pathak et al., CVPR 2016): fill the hole of a masked image.
Batches from pipeline/inpainting.py: "image" (hole filled with 0, the mean), "target", "mask"
(1 = hole), "weight" (1 on the hole, overlap_weight on the overlap band, 0 elsewhere).
Networks: nets/context_encoder.py (encoder = the shared trunk, channel-wise fc bottleneck,
up-convolution decoder; DCGAN discriminator).

Joint loss, one phase, both optimisers stepping on the same forward (as artifacts.py):
  pred = G(image)
  L_rec = sum(weight * (pred - target)^2) / (3 * #pixels with weight > 0)
          (the released code's MSE over the predicted region with its gradient scaled by the
          weight map: the overlap band counts overlap_weight (10) times)
  fill  = pred on the predicted region (weight > 0), target elsewhere
  D sees [target; fill] as one batch (shared BatchNorm statistics)
  L_G = rec_weight * L_rec + adv_weight * BCE(D(fill), real)       (0.999 and 0.001, paper)
  L_D = BCE(D([target; fill]), [real; fake])

adv_weight = 0 is the paper's own feature-learning setting (section 5.2: with the AlexNet encoder
the adversarial loss did not converge, so the features come from the reconstruction loss alone;
the released code's README offers "features for context encoder trained with reconstruction loss"):
then no discriminator is built or run (at `small` D costs more than the whole generator), and
acc_real / acc_fake are not logged.

In "center" mode the generator decodes only the predicted central square (hole + overlap band,
side S / 2), as the released centre-mode code does, and the loss compares it with the same square
of the target; the random modes decode the whole image. The weight map is 0 outside that square,
so the loss is the same either way; the square skips the full-resolution up-convolution (the
step 1.8x faster at `small`, nets/context_encoder.py).

Choices where the paper is silent or its code differs:
  - D sees the whole composite image (context + prediction), not only the predicted square the
    centre-mode code crops for D, so the same D serves the "blocks" and "regions" holes.
  - The generator's adversarial term is the non-saturating -log D(fill).
  - D's learning rate is disc_lr_ratio (0.1) x the trainer's (code: 2e-4 for D, 2e-3 for G).
  - Hole shape, overlap band and its weight are the pipeline's `InpaintingParams`
    (`pipeline.mode`: "center", the paper's main setting, or blocks|regions).
Logged: loss_rec, loss_adv, loss_disc, rec_mse (plain MSE inside the hole), acc_real, acc_fake."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..pipeline.inpainting import centre_square
from . import losses as L
from .nets.context_encoder import ContextEncoder, PatchDiscriminator
from .nets.trunk import Trunk
from .tasks import Phase, Task


@dataclass(frozen=True)
class InpaintingTaskParams:
    rec_weight: float = 0.999
    adv_weight: float = 0.001
    disc_width: int = 64           # D's first layer width (DCGAN: 64)
    disc_lr_ratio: float = 0.1
    dropout: float = 0.5           # after the channel-wise fc (code)

    def __post_init__(self):
        if self.rec_weight < 0 or self.adv_weight < 0 or self.rec_weight + self.adv_weight == 0:
            raise ValueError("inpainting rec_weight and adv_weight must be >= 0 and not both 0")
        if self.disc_width < 1 or not self.disc_lr_ratio > 0 or not 0 <= self.dropout < 1:
            raise ValueError("inpainting disc_width >= 1, disc_lr_ratio > 0 and dropout in [0, 1) needed")


def weighted_l2(pred, target, weight):
    """sum(weight * (pred - target)^2) / (channels * #pixels with weight > 0), in float32."""
    pred, target, weight = pred.float(), target.float(), weight.float()
    err = ((pred - target).pow(2) * weight).sum()
    return err / ((weight > 0).sum() * pred.shape[1]).clamp(min=1)


def predicted_square(cfg) -> tuple[int, int] | None:
    """(start, side) of the square the generator decodes in "center" mode; None: the whole image."""
    if cfg.pipeline.mode != "center":
        return None
    start, side, _, _ = centre_square(cfg.image_size, cfg.pipeline.overlap)
    return start, side


def crop(x, square):
    if square is None:
        return x
    a, n = square
    return x[..., a:a + n, a:a + n]


def composite(pred, target, weight, square):
    """The image D judges: the prediction on the predicted region (weight > 0), the target elsewhere."""
    target = target.to(pred.dtype)
    region = (crop(weight, square) > 0).to(pred.dtype)
    inner = region * pred + (1 - region) * crop(target, square)
    if square is None:
        return inner
    a, n = square
    fill = target.clone()
    fill[..., a:a + n, a:a + n] = inner
    return fill


class InpaintingTask(Task):
    name = "inpainting"
    pipeline_task = "inpainting"
    params_class = InpaintingTaskParams

    def validate(self, cfg):
        if cfg.image_size % cfg.trunk.downsampling:
            raise ValueError(f"inpainting: image_size {cfg.image_size} must be a multiple of the trunk's "
                             f"downsampling {cfg.trunk.downsampling} (the decoder doubles conv5 back to it)")

    def build_models(self, cfg):
        p = cfg.params
        square = predicted_square(cfg)
        out = None if square is None else square[1]
        models = {"generator": ContextEncoder(Trunk(cfg.trunk), cfg.image_size, dropout=p.dropout, out_size=out)}
        if p.adv_weight > 0:
            models["disc"] = PatchDiscriminator(cfg.image_size, p.disc_width)
        return models

    def trunk(self, models):
        return models["generator"].trunk

    def phases(self, cfg):
        # G first: its loss goes through D
        nets = ("generator", "disc") if cfg.params.adv_weight > 0 else ("generator",)
        return [Phase("inpainting", cfg.steps, nets)]

    def optimizer_params(self, models):
        return {name: list(m.parameters()) for name, m in models.items()}

    def lr_scale(self, name, cfg):
        return cfg.params.disc_lr_ratio if name == "disc" else 1.0

    def enter_phase(self, models, phase):
        return {n: m.requires_grad_(True).train() for n, m in models.items()}

    def model_outputs(self, models, batch, cfg):
        pred = models["generator"](batch["image"])
        return {"fill": composite(pred, batch["target"], batch["weight"], predicted_square(cfg))}

    def train_step(self, runners, batch, phase, cfg):
        p = cfg.params
        x, target, weight, hole = batch["image"], batch["target"], batch["weight"], batch["mask"]
        square = predicted_square(cfg)
        pred = runners["generator"](x)
        # the loss lives where the generator predicts: the centre square, or the whole image
        region_target, region_weight, region_hole = (crop(v, square) for v in (target, weight, hole))
        rec = weighted_l2(pred, region_target, region_weight)
        logs = {"loss_rec": rec.detach(), "rec_mse": L.masked_mse(pred.detach(), region_target, region_hole)}
        if "disc" not in runners:
            return {"generator": p.rec_weight * rec}, logs
        fill = composite(pred, target, weight, square)
        logits = runners["disc"](torch.cat([target.to(fill.dtype), fill]))
        b = x.shape[0]
        is_real = torch.cat([torch.ones(b, device=x.device), torch.zeros(b, device=x.device)])
        loss_disc = L.bce(logits, is_real)
        loss_adv = L.bce(logits[b:], torch.ones(b, device=x.device))
        loss_gen = p.rec_weight * rec + p.adv_weight * loss_adv
        acc_real, acc_fake = L.real_fake_accuracy(logits[:b], logits[b:])
        logs.update(loss_gen=loss_gen.detach(), loss_adv=loss_adv.detach(), loss_disc=loss_disc.detach(),
                    acc_real=acc_real, acc_fake=acc_fake)
        return {"generator": loss_gen, "disc": loss_disc}, logs

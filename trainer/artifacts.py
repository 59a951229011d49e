"""The artifacts task: "Self-Supervised Feature Learning by Learning to Spot Artifacts" (Jenni &
Favaro, CVPR 2018). Networks: autoencoder E, D (nets/autoencoder.py), repair layers R beside the
decoder (nets/repair.py), discriminator C = trunk + real/fake head + mask head
(nets/discriminator.py). The damage is in damage.py, the losses in losses.py.

Phase 1 "autoencoder" (ae_fraction of the steps): E and D learn to reproduce real images,
loss = ae_weight * MSE(D(E(x)), x).

Phase 2 "artifacts" (the remaining steps): E and D frozen (eval-mode BatchNorm). Per step:
  phi = E(x); real = D(phi)                          real path: C must not win on AE blur
  phi_hat = Omega * phi + (1 - Omega) * (u conv phi) damage (Omega from the pipeline)
  fake = D with R (phi_hat, Omega)                   repair acts only where Omega = 0
  C sees [real; fake] as ONE batch (shared BatchNorm statistics: no batch-level shortcut)
  L_C = BCE(real/fake) + mask_weight * BCE(mask logits, Omega)
  L_R = adv_weight * BCE(real/fake, flipped labels) + rec_weight * MSE(fake, x | kept pixels)
One forward, both losses; L_R's gradient goes to R only, L_C's to C only, and both optimisers
step on the same forward (simultaneous updates, as the released code does).

Choices where the paper (docs/methods.md) is silent, taken from the authors' released code
(sjenni/LearningToSpotArtifacts on GitHub) unless said otherwise:
  - theta = 0.6: the code keeps each entry with probability 0.4 (`pixel_dropout_avg(enc, 0.4)`);
    it is the pipeline's parameter (pipeline/artifacts.py, `pipeline.theta`), defined there once.
  - u: 3 x 3 box filter, border windows average only existing entries (damage.py).
  - The mask loss is also applied to the real reconstructions with an all-kept target
    (`mask_on_real`, the code's behaviour); the paper states it for damaged images only
    (mask_on_real=false). Its weight is 0.1 (code).
  - The repair network also gets rec_weight (30, code) x MSE to the input on the pixels whose
    features were kept, so the repair does not drift the undamaged content; 0 turns it off.
  - Adversarial weight 1; C's real/fake loss weight 1 (code).
  - Phase-1 loss: 30 x MSE (code).
  - Optimiser (config.py): Adam, lr 3e-4, beta1 0.5, eps 1e-5, L2 5e-5 on weights; the learning
    rate decays linearly to 1% over 90% of each phase (code's `polynomial_decay`). The code's 2x
    bias learning rate (a Caffe habit) is not reproduced.
  - Encoder depth: M = image_size / 2^len(enc_channels), with 4 stride-2 layers (paper's
    D1..D5) at 64 and 224 px, so M = conv5's side (4 and 14); the tiny preset has 3 layers
    (32 px -> M = 4). The config refuses a trunk whose conv5 side is not M (the mask head reads
    one conv5 cell per mask entry, as the code's 3x3 conv on conv5 does), and resolves the
    pipeline's mask_size to M.
  - Schedule: the code trains the autoencoder for as many epochs as phase 2 (ae_fraction 0.5);
    the numbers of steps per preset are ours (config.py).
  - C's input is the decoder output in [-1, 1] as is (the code rescales to 0..255 minus the
    ImageNet mean); one convention for every task's trunk.
  - R's objective (`repair_objective`): "paper" is the paper's minimax above; "code" is the
    released code's, where R's loss also holds C's own loss (real-label CE + mask_weight x mask
    BCE), so R cooperates on the mask instead of hiding the damage.

Deviations at CPU scale, each measured (docs/artifacts-learning.md; held-out mask AUC, acc
real / fake, 2,000 tiny-imagenet-a val images):
  - `tiny` and `small` use repair_objective="code" with mask_weight 1 (code: 0.1). At 64 px,
    600 game steps from one 17 dB autoencoder: paper objective, weight 0.1 -> mask AUC 0.525,
    acc 0.55 / 0.59 (the collapse); code objective, weight 1 -> 0.865, 0.82 / 0.87. At 32 px the
    code objective with weight 0.1 stays at 0.548, weight 1 alone (paper objective) at 0.552,
    a 10x slower R at 0.543: the pairing is what works.
  - disc_lr_mult 4 at `tiny` and `small` (code: 1): C must get ahead of R in a short run.
  - ae_fraction 0.4 at `small` (code: 0.5): more game steps in a ten-minute budget; a 17 dB
    autoencoder was enough for health at 64 px.
  - Not reproduced from the code: the exponential moving average of the weights it keeps for
    its summaries, LRN in the discriminator (BatchNorm instead, see nets/trunk.py), and its
    grouped convolutions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from . import losses as L
from .damage import damage, upsample_mask
from .nets.autoencoder import AutoEncoder
from .nets.discriminator import Discriminator
from .nets.repair import DamagedDecoder, RepairNet
from .nets.trunk import Trunk
from .tasks import Phase, Task


@dataclass(frozen=True)
class ArtifactsTaskParams:
    """Networks, losses and schedule of the task; the data's parameters (theta, mask_size) are the
    pipeline's `ArtifactParams`."""
    enc_stem: int = 32
    enc_channels: tuple = (64, 128, 256, 512)  # encoder widths; len = number of stride-2 layers
    avg_kernel: int = 3         # side of the box filter u
    ae_fraction: float = 0.5    # share of `steps` spent on phase 1 (code: as many epochs as phase 2)
    ae_weight: float = 30.0
    adv_weight: float = 1.0
    rec_weight: float = 30.0
    mask_weight: float = 0.1
    mask_on_real: bool = True
    head_hidden: int = 1024     # width of the real/fake head's fc layer
    head_pool: int = 4          # conv5 is pooled to head_pool x head_pool for that head
    disc_lr_mult: float = 1.0   # C's learning rate = lr x this (code: 1); >1 is the two-time-scale rule
    # R's objective. "paper": swapped-label CE + rec_weight x masked MSE (the paper's minimax).
    # "code": the released code's, which also adds C's own loss (real-label CE + mask_weight x
    # mask BCE) to R's (docs/artifact-diagnostics.md section 3): R cooperates on the mask and
    # pushes C's real/fake output towards 0.5 rather than towards "real".
    repair_objective: str = "paper"
    repair_lr_mult: float = 1.0  # R's learning rate = lr x this (code: 1)
    ae_init: str | None = None  # a run's checkpoint whose autoencoder to start from (experiments)

    def __post_init__(self):
        ch = tuple(int(c) for c in self.enc_channels)
        if not ch or min(ch) < 1 or self.enc_stem < 1:
            raise ValueError(f"enc_channels must be positive widths and enc_stem >= 1, got {self.enc_channels!r}")
        object.__setattr__(self, "enc_channels", ch)
        if self.avg_kernel < 1 or self.avg_kernel % 2 == 0:
            raise ValueError(f"avg_kernel must be odd and >= 1, got {self.avg_kernel}")
        if not 0.0 <= self.ae_fraction < 1.0:
            raise ValueError(f"ae_fraction must be in [0, 1), got {self.ae_fraction}")
        for name in ("ae_weight", "adv_weight", "rec_weight", "mask_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.disc_lr_mult <= 0 or self.repair_lr_mult <= 0:
            raise ValueError(f"disc_lr_mult and repair_lr_mult must be > 0, got {self.disc_lr_mult}, {self.repair_lr_mult}")
        if self.head_hidden < 1 or self.head_pool < 1:
            raise ValueError("head_hidden and head_pool must be >= 1")
        if self.repair_objective not in ("paper", "code"):
            raise ValueError(f"repair_objective must be 'paper' or 'code', got {self.repair_objective!r}")


def mask_size(cfg) -> int:
    """M: the encoder's output side (one Omega entry per 2^L x 2^L image block)."""
    return cfg.image_size // 2 ** len(cfg.params.enc_channels)


def ae_steps(cfg) -> int:
    return int(round(cfg.steps * cfg.params.ae_fraction))


class ArtifactsTask(Task):
    name = "artifacts"
    pipeline_task = "artifacts"
    params_class = ArtifactsTaskParams

    def validate(self, cfg):
        p = cfg.params
        down = 2 ** len(p.enc_channels)
        if cfg.image_size % down:
            raise ValueError(f"image_size {cfg.image_size} must be divisible by 2**len(enc_channels) = {down}")
        if ae_steps(cfg) >= cfg.steps:
            raise ValueError(f"ae_fraction {p.ae_fraction} of {cfg.steps} steps leaves no step for phase 2")
        m, conv5 = mask_size(cfg), cfg.trunk.side(cfg.image_size, 5)
        if conv5 != m:
            raise ValueError(f"the discriminator's conv5 is {conv5}x{conv5} at {cfg.image_size} px but the mask Omega is "
                             f"{m}x{m} (image_size / 2**len(enc_channels)); the mask head reads one conv5 cell per "
                             "entry: change trunk.conv1_stride or params.enc_channels so that they agree")
        if cfg.pipeline.mask_size not in (0, m):
            raise ValueError(f"pipeline.mask_size {cfg.pipeline.mask_size} is not the encoder's output side {m}; "
                             "leave it at 0 (derived)")
        # resolved once into the config, so the saved run shows the mask its data had
        object.__setattr__(cfg, "pipeline", dataclasses.replace(cfg.pipeline, mask_size=m))

    def build_models(self, cfg):
        p = cfg.params
        ae = AutoEncoder(p.enc_stem, p.enc_channels)
        if p.ae_init:
            from .checkpoint import load_checkpoint, load_weights

            load_weights(ae, load_checkpoint(p.ae_init, "cpu"), "autoencoder", p.ae_init,
                         fix="ae_init must name an artifacts run with this run's enc_stem and enc_channels")
        return {
            "autoencoder": ae,
            "repair": RepairNet(ae.decoder),
            "disc": Discriminator(Trunk(cfg.trunk), mask_size(cfg), hidden=p.head_hidden, pool=p.head_pool),
        }

    def trunk(self, models):
        return models["disc"].trunk

    def phases(self, cfg):
        ae = ae_steps(cfg)
        out = [Phase("autoencoder", ae, ("autoencoder",))] if ae else []
        # R first: its loss is backpropagated through C with the graph kept for C's own loss
        return out + [Phase("artifacts", cfg.steps - ae, ("repair", "disc"))]

    def optimizer_params(self, models):
        return {name: list(m.parameters()) for name, m in models.items()}

    def lr_scale(self, name, cfg):
        # a short run's C must get ahead of the repair network before the game can teach it
        # anything (two-time-scale update rule, Heusel et al. 2017)
        return {"disc": cfg.params.disc_lr_mult, "repair": cfg.params.repair_lr_mult}.get(name, 1.0)

    def enter_phase(self, models, phase):
        ae, repair, disc = models["autoencoder"], models["repair"], models["disc"]
        if phase.name == "autoencoder":
            ae.requires_grad_(True).train()
            repair.requires_grad_(False)
            disc.requires_grad_(False)
            return {"autoencoder": ae}
        ae.requires_grad_(False).eval()
        repair.requires_grad_(True)
        disc.requires_grad_(True).train()
        generator = DamagedDecoder(ae.decoder, repair).train()  # keeps the decoder in eval mode
        return {"autoencoder": ae, "generator": generator, "disc": disc}

    def model_outputs(self, models, batch, cfg):
        x, omega = batch["image"], batch["mask"]
        ae = models["autoencoder"]
        phi, real = ae(x, return_code=True)
        fake = DamagedDecoder(ae.decoder, models["repair"])(damage(phi, omega, cfg.params.avg_kernel), omega)
        logits, mask_logits = models["disc"](fake)
        return {"reconstruction": real, "repaired": fake, "dropped_prob": torch.sigmoid(-mask_logits),
                "real_prob": torch.sigmoid(logits)}

    def train_step(self, runners, batch, phase, cfg):
        p = cfg.params
        x = batch["image"]
        if phase.name == "autoencoder":
            mse = torch.nn.functional.mse_loss(runners["autoencoder"](x).float(), x.float())
            psnr = 10 * torch.log10(4.0 / mse.detach().clamp(min=1e-10))  # peak-to-peak 2 in [-1, 1]
            return {"autoencoder": p.ae_weight * mse}, {"ae_mse": mse.detach(), "ae_psnr": psnr}

        omega = batch["mask"]
        with torch.no_grad():
            phi, real = runners["autoencoder"](x, return_code=True)
        fake = runners["generator"](damage(phi, omega, p.avg_kernel), omega)
        logits, mask_logits = runners["disc"](torch.cat([real, fake.to(real.dtype)]))
        b = x.shape[0]
        is_real = torch.cat([torch.ones(b, device=x.device), torch.zeros(b, device=x.device)])

        loss_cls = L.bce(logits, is_real)
        loss_adv = L.bce(logits, 1 - is_real)
        omega_f = omega.float()
        if p.mask_on_real:
            loss_mask = L.bce(mask_logits, torch.cat([torch.ones_like(omega_f), omega_f]))
        else:
            loss_mask = L.bce(mask_logits[b:], omega_f)
        rec = L.masked_mse(fake, x, upsample_mask(omega_f, x.shape[-2:]))
        loss_disc = loss_cls + p.mask_weight * loss_mask
        loss_repair = p.adv_weight * loss_adv + p.rec_weight * rec
        if p.repair_objective == "code":
            loss_repair = loss_repair + loss_disc

        acc_real, acc_fake = L.real_fake_accuracy(logits[:b], logits[b:])
        logs = {
            "loss_disc": loss_disc.detach(), "loss_repair": loss_repair.detach(),
            "loss_cls": loss_cls.detach(), "loss_mask": loss_mask.detach(), "loss_adv": loss_adv.detach(),
            "rec_mse": rec.detach(), "acc_real": acc_real, "acc_fake": acc_fake,
            "mask_acc": L.mask_accuracy(mask_logits[b:], omega_f), "mask_iou": L.mask_iou(mask_logits[b:], omega_f),
            "mask_auc": L.mask_auc(mask_logits[b:], omega_f),
        }
        return {"repair": loss_repair, "disc": loss_disc}, logs

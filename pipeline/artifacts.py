"""Learning to Spot Artifacts (Jenni & Favaro, CVPR 2018): the image and the drop mask Omega.

The damage itself happens in feature space inside the model (phi_hat = Omega * phi + (1 - Omega) *
(u conv phi), see trainer); the pipeline only supplies the real image and Omega, one binary
M x N map per image with M = N = `mask_size`, the spatial resolution of the encoder's output.
The trainer resolves it from its encoder and checks that it equals the discriminator's conv5
side (`trainer.artifacts`); on its own the pipeline takes image_size / 16 (the encoder's and
AlexNet conv5's downsampling at 64 and 224 px). Every entry is dropped independently with
probability `theta`, exactly as the paper defines Omega; the draws come from DALI's random
generator on `cfg.device`, so they are reproducible from the pipeline seed.

Evaluation pipelines (cfg.training False) still draw random masks: the pretext health check
(mask-head accuracy, real-vs-damaged accuracy on held-out images) needs damaged images. They are
deterministic for a given seed, so two evaluations of one checkpoint see identical damage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import nvidia.dali.fn as fn
import nvidia.dali.types as types

from .ops import out_dtype, to_chw


@dataclass(frozen=True)
class ArtifactParams:
    """mask_size: side M (= N) of Omega, the encoder's output resolution; 0 = image_size / 16.

    theta: probability that an entry of Omega is dropped (0). 0.6 is the released code's June
    2018 value (`pixel_dropout_avg(enc, 0.4)` keeps each entry with p = 0.4); its June 2019
    revision uses 0.7 and the paper's Fig. 3 drops "about 50%".

    No "at least k dropped" guarantee: the paper's Omega is i.i.d. Bernoulli, and forcing a
    minimum would bias small masks. The chance that a sample is left undamaged is
    (1 - theta) ** (M * N) (3e-7 at theta 0.6 with M = 4); the mask loss stays correct for such
    a sample (an all-ones target), only its real-vs-damaged label is then wrong.
    """

    mask_size: int = 0
    theta: float = 0.6

    def __post_init__(self):
        if int(self.mask_size) != self.mask_size or self.mask_size < 0:
            raise ValueError(f"mask_size must be the encoder's output side (an integer >= 1) or 0 for "
                             f"image_size / 16, got {self.mask_size!r}")
        if not 0.0 < float(self.theta) < 1.0:
            raise ValueError(f"theta (drop probability) must be in (0, 1), got {self.theta!r}")

    def resolved(self, image_size: int) -> "ArtifactParams":
        """A copy with mask_size set (0 -> image_size / 16)."""
        if self.mask_size:
            return self
        return dataclasses.replace(self, mask_size=max(1, image_size // 16))


def generate(images, cfg) -> dict:
    p = cfg.params
    m = int(p.mask_size)
    if m > cfg.image_size:
        raise ValueError(f"mask_size {m} exceeds image_size {cfg.image_size}; it is the encoder's output side")
    # coin_flip yields 1 with `probability`: 1 = kept, so P(1) = 1 - theta. It emits integer
    # types only; the float cast is exact for 0/1 in every output dtype.
    keep = fn.random.coin_flip(probability=1.0 - float(p.theta), shape=[1, m, m], dtype=types.UINT8, device=cfg.device)
    mask = fn.cast(keep, dtype=out_dtype(cfg), device=cfg.device)
    return {"image": to_chw(images, cfg), "mask": mask}

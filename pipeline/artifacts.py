"""Learning to Spot Artifacts (Jenni & Favaro, CVPR 2018): the image and the drop mask Omega.

The damage itself happens in feature space inside the model (phi_hat = Omega * phi + (1 - Omega) *
(u conv phi), see trainer); the pipeline only supplies the real image and Omega, one binary
M x N map per image with M = N = `mask_size`, the spatial resolution of the encoder's output.
The trainer sets it from its encoder (`trainer.artifacts.mask_size`: image_size / 2^depth, so 4
for the `64px` preset's 16x-downsampling encoder, matching conv5 of the discriminator); the
default 8 suits a 64 px input through an 8x-downsampling encoder. Every entry is dropped independently
with probability `theta`, exactly as the paper defines Omega; the draws come from DALI's random
generator on `cfg.device`, so they are reproducible from the pipeline seed.

Evaluation pipelines (cfg.training False) still draw random masks: the pretext health check
(mask-head accuracy, real-vs-damaged accuracy on held-out images) needs damaged images. They are
deterministic for a given seed, so two evaluations of one checkpoint see identical damage.
"""

from __future__ import annotations

from dataclasses import dataclass

import nvidia.dali.fn as fn
import nvidia.dali.types as types

from .ops import out_dtype, to_chw


@dataclass(frozen=True)
class ArtifactParams:
    """mask_size: side M (= N) of Omega, equal to the encoder's output resolution.

    theta: probability that an entry of Omega is dropped (0). The value used in the paper is not
    recorded in docs/methods.md; 0.5 is our default (each entry is a fair coin, so the mask
    carries the most information per entry and damaged regions of every size occur).

    No "at least k dropped" guarantee: the paper's Omega is i.i.d. Bernoulli, and forcing a
    minimum would bias small masks. The chance that a sample is left undamaged is
    (1 - theta) ** (M * N) (5e-20 at the defaults, 1e-3 at theta = 0.1 with M = 8); the mask
    loss stays correct for such a sample (an all-ones target), only its real-vs-damaged label
    is then wrong, which the trainer can detect from `mask.amin() == 1` if it ever matters.
    """

    mask_size: int = 8
    theta: float = 0.5

    def __post_init__(self):
        if int(self.mask_size) != self.mask_size or self.mask_size < 1:
            raise ValueError(f"mask_size must be a positive integer (the encoder's output side), got {self.mask_size!r}")
        if not 0.0 < float(self.theta) < 1.0:
            raise ValueError(f"theta (drop probability) must be in (0, 1), got {self.theta!r}")


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

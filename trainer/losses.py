"""Losses and pretext metrics of Learning to Spot Artifacts. All computed in float32.

Real-vs-damaged: binary cross-entropy on one logit per image (positive = real), averaged over
the joint batch [reconstructed real images; damaged images], exactly the mean the released code
takes over its 2B-sample softmax. The repair network's adversarial loss is the same cross-entropy
with the labels flipped (the non-saturating GAN loss; only the damaged half carries gradient
into R, so over 2B it equals half of -log C(fake) averaged over the damaged images, as in the code).
Mask: per-location binary cross-entropy, target Omega (1 = kept).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pixels where weight is 1 (weight (B, 1, H, W), broadcast over
    channels): the released code's weighted MSE, normalised by the weighted pixel count."""
    pred, target, weight = pred.float(), target.float(), weight.float()
    err = (pred - target).pow(2) * weight
    return err.sum() / (weight.sum() * pred.shape[1]).clamp(min=1.0)


@torch.no_grad()
def real_fake_accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (real_logits > 0).float().mean(), (fake_logits < 0).float().mean()


@torch.no_grad()
def mask_accuracy(mask_logits: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """Fraction of mask entries whose kept/dropped call (logit > 0 = kept) is right."""
    return ((mask_logits > 0) == (omega > 0.5)).float().mean()


@torch.no_grad()
def mask_iou(mask_logits: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """Intersection over union of the predicted and the true dropped regions, pooled over the
    batch (1 when both are empty)."""
    pred, true = mask_logits < 0, omega < 0.5
    inter = (pred & true).sum().float()
    union = (pred | true).sum().float()
    return torch.where(union > 0, inter / union.clamp(min=1.0), torch.ones_like(union))


@torch.no_grad()
def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """ROC-AUC of `scores` for telling `positive` entries from the rest: the probability that a
    random positive scores above a random negative, ties counting one half (Mann-Whitney U with
    mid-ranks). Fixed-size device operations only (sort, searchsorted), so it never syncs; NaN
    when either class is empty."""
    s, y = scores.detach().reshape(-1), positive.reshape(-1).bool()
    s = s if s.dtype == torch.float64 else s.float()  # float64 in, exact sums out (offline checks)
    ordered, _ = torch.sort(s)
    # mid-rank (1-based) of each score: the average position of its group of equal values
    lo = torch.searchsorted(ordered, s, right=False)
    hi = torch.searchsorted(ordered, s, right=True)
    rank = (lo + hi + 1).to(s.dtype) / 2
    p = y.sum().to(s.dtype)
    n = y.numel() - p
    u = (rank * y).sum() - p * (p + 1) / 2
    return torch.where((p > 0) & (n > 0), u / (p * n).clamp(min=1.0), torch.full_like(u, float("nan")))


@torch.no_grad()
def mask_auc(mask_logits: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """How well the mask head ranks dropped entries above kept ones (1 = perfect, 0.5 = chance):
    ROC-AUC of -logit (the head's evidence for "dropped") against the true dropped entries. A head
    that ranks correctly but sits on one side of the 0.5 threshold has IoU 0 and a high AUC."""
    return roc_auc(-mask_logits, omega < 0.5)

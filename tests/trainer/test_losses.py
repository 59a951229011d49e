"""Pretext metrics against brute-force references: ROC-AUC (ties, planted rankings, empty classes)."""

import math

import pytest
import torch

from spotart.trainer import losses as L


def brute_auc(scores, positive):
    """P(score of a random positive > score of a random negative) + 0.5 P(equal), by all pairs."""
    pos = [s for s, y in zip(scores.tolist(), positive.tolist(), strict=True) if y]
    neg = [s for s, y in zip(scores.tolist(), positive.tolist(), strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_roc_auc_equals_the_pairwise_definition_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 200, (1,), generator=g))
    scores = torch.randint(0, 6, (n,), generator=g).float()  # few values: many ties
    if seed % 2:
        scores = scores + torch.rand(n, generator=g)  # or none
    positive = torch.rand(n, generator=g) < 0.4
    positive[0], positive[1] = True, False
    assert L.roc_auc(scores, positive).item() == pytest.approx(brute_auc(scores, positive), abs=1e-6)


def test_roc_auc_on_planted_rankings_and_degenerate_cases():
    y = torch.tensor([1, 1, 0, 0, 0], dtype=torch.bool)
    assert L.roc_auc(torch.tensor([5.0, 4, 3, 2, 1]), y).item() == 1.0
    assert L.roc_auc(torch.tensor([1.0, 2, 3, 4, 5]), y).item() == 0.0
    assert L.roc_auc(torch.zeros(5), y).item() == 0.5  # a constant (collapsed) head is chance
    assert math.isnan(L.roc_auc(torch.arange(5.0), torch.zeros(5, dtype=torch.bool)).item())


def test_mask_auc_scores_dropped_entries_and_sees_what_iou_hides():
    omega = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # 1 = kept
    # a head that ranks every dropped entry below every kept one, but says "kept" everywhere
    logits = torch.tensor([[[[3.0, 1.0], [1.5, 4.0]]]])
    assert L.mask_auc(logits, omega).item() == 1.0
    assert L.mask_iou(logits, omega).item() == 0.0  # the threshold hides it
    assert L.mask_auc(-logits, omega).item() == 0.0

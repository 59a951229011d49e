import itertools

import numpy as np
import pytest

from spotart.trainer.health import roc_auc


def brute_auc(scores, labels):
    """P(score of a positive > score of a negative) + 0.5 P(tie), over all pairs."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.4
    # planted signal, rounded so many scores tie across and within classes
    scores = np.round(rng.normal(size=300) + 1.2 * labels, 1)
    assert roc_auc(scores, labels) == pytest.approx(brute_auc(scores, labels), abs=1e-12)


def test_roc_auc_extremes_and_constant():
    y = np.array([0, 0, 1, 1, 1])
    assert roc_auc([0.1, 0.2, 0.3, 0.4, 0.5], y) == 1.0
    assert roc_auc([0.5, 0.4, 0.3, 0.2, 0.1], y) == 0.0
    assert roc_auc(np.zeros(5), y) == 0.5  # a collapsed head: every score tied
    assert np.isnan(roc_auc([1, 2], [1, 1]))
    with pytest.raises(ValueError):
        roc_auc([1, 2, 3], [0, 1])

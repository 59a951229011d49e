"""Weak classifiers on one cue's features, and how each task's labels are scored.

A cheater is a softmax regression (or, with `hidden` > 0, a one-hidden-layer MLP) on
standardised features, fitted full-batch by L-BFGS with an L2 penalty and class weights that
make every class count alike. It is scored by balanced accuracy (the mean of the per-class
recalls) on held-out images: a cheater that knows nothing scores exactly 1 / classes whatever
the label frequencies (artifacts drops 60% of the mask cells), so chance is one number per task.

Jigsaw is scored on its own label, the permutation: a per-tile cheater gives each tile a
distribution over the 9 grid cells it may have come from; an edge cheater scores, for every
ordered pair of tiles, whether the second lies right of (below) the first. The puzzle's answer is
the permutation of the task's set that maximises the summed log-probabilities (log-odds for
pairs), exactly as a solver would; we report the share of tiles it puts in their cell (9-way,
chance about 1/9) and of whole permutations it gets right (chance 1/count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

L2 = 1e-3          # penalty on the weights (standardised features): weak on purpose
MAX_ITER = 100     # L-BFGS iterations, full batch


def balanced_accuracy(pred: torch.Tensor, y: torch.Tensor, classes: int) -> float:
    recalls = [(pred[y == c] == c).float().mean().item() for c in range(classes) if (y == c).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


@dataclass
class Cheater:
    """Fitted: feature mean/std and the model. `predict_logp` gives log-probabilities."""
    mean: torch.Tensor
    std: torch.Tensor
    model: nn.Module
    classes: int

    def predict_logp(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(self.model((x - self.mean) / self.std), -1)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return balanced_accuracy(self.predict_logp(x).argmax(-1), y, self.classes)


def fit(x: torch.Tensor, y: torch.Tensor, classes: int, hidden: int = 0, seed: int = 0) -> Cheater:
    """Softmax regression (hidden 0) or an MLP with `hidden` ReLU units, class-balanced."""
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"features {tuple(x.shape)} and labels {tuple(y.shape)} do not pair up")
    x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mean) / std
    torch.manual_seed(seed)
    d = z.shape[1]
    model = nn.Linear(d, classes) if hidden <= 0 else nn.Sequential(nn.Linear(d, hidden), nn.ReLU(),
                                                                   nn.Linear(hidden, classes))
    counts = torch.bincount(y, minlength=classes).float()
    weight = torch.where(counts > 0, counts.sum() / (classes * counts.clamp(min=1)), torch.zeros_like(counts))
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=MAX_ITER, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(z), y) + 0.5 * L2 * sum(w.pow(2).sum() for w in weights)
        loss.backward()
        return loss

    opt.step(closure)
    return Cheater(mean, std, model.eval(), classes)


def clean(x: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)


# ---- jigsaw: per-tile cells and pairwise adjacency, decoded over the permutation set --------

def tile_cells(perm_idx: torch.Tensor, perms: np.ndarray) -> torch.Tensor:
    """(N,) permutation labels -> (N, 9): the grid cell each output tile was cut from."""
    return torch.from_numpy(perms.astype(np.int64))[perm_idx]


def adjacency_labels(cells: torch.Tensor) -> torch.Tensor:
    """(N, 9) cells -> (N, 9, 9, 2) int: [i, j, 0] tile j's cell is right of tile i's in the
    same row, [i, j, 1] directly below it."""
    ri, ci = (cells // 3)[:, :, None], (cells % 3)[:, :, None]
    rj, cj = (cells // 3)[:, None, :], (cells % 3)[:, None, :]
    right = (ri == rj) & (cj == ci + 1)
    below = (ci == cj) & (rj == ri + 1)
    return torch.stack([right, below], -1).long()


NEGATIVES = 18  # non-adjacent pairs kept per puzzle for fitting (of 66; all 6 adjacent ones are kept)


def subsample_negatives(x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 72, F) pair features and (N, 72) adjacency labels -> every adjacent pair and NEGATIVES
    random others per puzzle, flattened: a quarter of the fitting cost, the same classifier
    (the fit weights both classes alike anyway)."""
    g = torch.Generator().manual_seed(seed)
    rank = torch.rand(y.shape, generator=g) + 2.0 * y  # adjacent pairs first, then a random order
    keep = rank.argsort(1, descending=True)[:, : int(y[0].sum()) + NEGATIVES]
    return (x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1])).flatten(0, 1), y.gather(1, keep).flatten())


def _pairs_of(perms: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """For each permutation, the (tile i, tile j) pairs that it puts side by side: (count, 6, 2)
    horizontally (j right of i) and (count, 6, 2) vertically (j below i)."""
    tile_at = np.argsort(perms, axis=1)  # tile_at[p, cell] = output tile holding that cell
    h = [(r * 3 + c, r * 3 + c + 1) for r in range(3) for c in range(2)]
    v = [(r * 3 + c, (r + 1) * 3 + c) for r in range(2) for c in range(3)]
    return (torch.from_numpy(np.stack([tile_at[:, [a for a, _ in h]], tile_at[:, [b for _, b in h]]], -1)),
            torch.from_numpy(np.stack([tile_at[:, [a for a, _ in v]], tile_at[:, [b for _, b in v]]], -1)))


def decode(perms: np.ndarray, unary: torch.Tensor | None, pair: torch.Tensor | None) -> torch.Tensor:
    """Best permutation index per puzzle. unary (N, 9, 9): log p(cell | tile); pair (N, 9, 9, 2):
    log-odds that tile j is right of / below tile i."""
    n = (unary if unary is not None else pair).shape[0]
    score = torch.zeros(n, len(perms))
    idx = torch.from_numpy(perms.astype(np.int64))
    if unary is not None:  # sum_i log p(perm[i] | tile i)
        score += unary.gather(2, idx.T[None].expand(n, 9, len(perms))).sum(1)
    if pair is not None:
        for rel, pairs in enumerate(_pairs_of(perms)):
            flat = pair[..., rel].reshape(n, 81)
            score += flat[:, pairs[..., 0] * 9 + pairs[..., 1]].sum(-1)
    return score.argmax(1)


def jigsaw_scores(pred: torch.Tensor, truth: torch.Tensor, perms: np.ndarray) -> tuple[float, float]:
    """(share of tiles placed in their cell, share of permutations right)."""
    idx = torch.from_numpy(perms.astype(np.int64))
    return (idx[pred] == idx[truth]).float().mean().item(), (pred == truth).float().mean().item()


def jigsaw_chance(perms: np.ndarray) -> float:
    """Per-tile accuracy of the best blind guess: the one permutation of the set that agrees with
    the most (label, tile) pairs, labels uniform over the set (1/9 for a balanced set)."""
    p = perms.astype(np.int64)
    freq = np.zeros((9, 9))
    for i in range(9):
        freq[i] = np.bincount(p[:, i], minlength=9) / len(p)
    return float(freq[np.arange(9), p].sum(1).max() / 9)

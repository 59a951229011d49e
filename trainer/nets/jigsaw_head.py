"""The context-free network of jigsaw puzzles (Noroozi & Favaro, ECCV 2016).

One `Trunk` shared by the 9 tiles (run as one batch of B * 9 tiles), conv5 pooled adaptively to
`pool` x `pool`, a per-tile fc6 (`tile_hidden`, paper 1024) with shared weights, the 9 fc6
outputs concatenated in the order the tiles arrive, fc7 (`hidden`, paper 4096) and fc8 -> one
logit per permutation of the set. The paper's pretext conv1 has stride 2 on 64 px tiles; here
the trunk is the one every task shares (its preset's conv1 stride), so the features compare."""

from __future__ import annotations

import torch
from torch import nn

from .deterministic import avg_pool_to
from .pair import fc
from .trunk import Trunk


class JigsawNet(nn.Module):
    def __init__(self, trunk: Trunk, permutations: int, tile_hidden: int, hidden: int, pool: int, tiles: int = 9,
                 dropout: float = 0.5):
        super().__init__()
        self.trunk, self.pool, self.tiles = trunk, pool, tiles
        self.fc6 = fc(trunk.out_channels * pool * pool, tile_hidden, dropout)
        self.fc7 = fc(tiles * tile_hidden, hidden, dropout)
        self.fc8 = nn.Linear(hidden, permutations)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """tiles (B, 9, 3, T, T) -> (B, permutations) logits."""
        b, n = tiles.shape[:2]
        if n != self.tiles:
            raise ValueError(f"expected {self.tiles} tiles per puzzle, got {n}")
        f = self.trunk(tiles.flatten(0, 1))
        f = self.fc6(avg_pool_to(f, self.pool).flatten(1))
        return self.fc8(self.fc7(f.reshape(b, n * f.shape[1])))

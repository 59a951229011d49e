"""The jigsaw task (Noroozi & Favaro, ECCV 2016): given 9 shuffled tiles (pipeline/jigsaw.py:
"tiles" (B, 9, 3, T, T), "permutation"), say which permutation of the set shuffled them.
Network: nets/jigsaw_head.py (shared trunk per tile, per-tile fc6, concatenation of 9, fc7, fc8).

The permutation set, tile geometry and shortcut countermeasures (random gap, 30% greyscale,
channel jitter, per-tile normalisation) are the pipeline's `JigsawParams` (paper defaults),
reached as `pipeline.<key>`: the greedy maximal-average-Hamming set of `count` permutations
(paper: 1000; the classifier's outputs) or a file made by `spotart permutations`
(`permutations=PATH`). Logged: loss, acc (chance 1 / count)."""

from __future__ import annotations

from dataclasses import dataclass

from .classify import ClassificationTask
from .nets.jigsaw_head import JigsawNet
from .nets.trunk import Trunk


@dataclass(frozen=True)
class JigsawTaskParams:
    tile_hidden: int = 1024     # per-tile fc6 (paper: 1024)
    hidden: int = 4096          # fc7 (paper: 4096)
    pool: int = 2               # conv5 of each tile pooled to pool x pool before fc6
    # Dropout after each fc (AlexNet's and the paper's 0.5). The `small` preset sets 0: a ten-minute
    # run underfits, and dropout halves how fast the head learns (docs/artifacts-learning.md).
    dropout: float = 0.5

    def __post_init__(self):
        if min(self.tile_hidden, self.hidden, self.pool) < 1 or not 0 <= self.dropout < 1:
            raise ValueError("jigsaw tile_hidden, hidden and pool must be >= 1, dropout in [0, 1)")


class JigsawTask(ClassificationTask):
    name = "jigsaw"
    pipeline_task = "jigsaw"
    params_class = JigsawTaskParams
    target_key = "permutation"

    def validate(self, cfg):
        if cfg.pipeline.count < 2:
            raise ValueError(f"jigsaw needs at least 2 permutations (pipeline.count), got {cfg.pipeline.count}")
        cfg.pipeline.geometry(cfg.image_size)

    def pretext_input_size(self, cfg):
        return cfg.pipeline.geometry(cfg.image_size).tile

    def input_norm(self, cfg):
        # trained on tiles standardised one by one: probed on images standardised one by one
        return "per_image" if cfg.pipeline.tile_norm else None

    def build_net(self, cfg):
        p = cfg.params
        return JigsawNet(Trunk(cfg.trunk), cfg.pipeline.count, tile_hidden=p.tile_hidden, hidden=p.hidden, pool=p.pool,
                         dropout=p.dropout)

    def logits(self, net, batch):
        return net(batch["tiles"])

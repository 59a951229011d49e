"""The jigsaw task (Noroozi & Favaro, ECCV 2016): given 9 shuffled tiles (pipeline/jigsaw.py:
"tiles" (B, 9, 3, T, T), "permutation"), say which permutation of the set shuffled them.
Network: nets/jigsaw_head.py (shared trunk per tile, per-tile fc6, concatenation of 9, fc7, fc8).

The permutation set is the pipeline's greedy maximal-average-Hamming set of `count`
permutations (paper: 1000), or a file made by `spotart permutations` (`permutations=PATH`).
Tile geometry and shortcut countermeasures (random gap, 30% greyscale, channel jitter, per-tile
normalisation) are the pipeline's paper defaults. Logged: loss, acc (chance 1 / count)."""

from __future__ import annotations

from dataclasses import dataclass

from .classify import ClassificationTask
from .nets.jigsaw_head import JigsawNet
from .nets.trunk import Trunk


@dataclass(frozen=True)
class JigsawTaskParams:
    count: int = 1000           # permutations in the set = classes (paper: 1000)
    permutations: str | None = None
    tile_hidden: int = 1024     # per-tile fc6 (paper: 1024)
    hidden: int = 4096          # fc7 (paper: 4096)
    pool: int = 2               # conv5 of each tile pooled to pool x pool before fc6

    def __post_init__(self):
        if self.count < 2:
            raise ValueError(f"jigsaw count must be >= 2 permutations, got {self.count}")
        if min(self.tile_hidden, self.hidden, self.pool) < 1:
            raise ValueError("jigsaw tile_hidden, hidden and pool must be >= 1")


class JigsawTask(ClassificationTask):
    name = "jigsaw"
    pipeline_task = "jigsaw"
    params_class = JigsawTaskParams
    target_key = "permutation"

    def validate(self, cfg):
        from ..pipeline.jigsaw import JigsawParams

        JigsawParams(**self.pipeline_params(cfg)).geometry(cfg.image_size)

    def pipeline_params(self, cfg):
        return {"count": cfg.params.count, "permutations": cfg.params.permutations}

    def build_net(self, cfg):
        p = cfg.params
        return JigsawNet(Trunk(cfg.trunk), p.count, tile_hidden=p.tile_hidden, hidden=p.hidden, pool=p.pool)

    def logits(self, net, batch):
        return net(batch["tiles"])

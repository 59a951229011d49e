"""The context-prediction task (Doersch, Gupta & Efros, ICCV 2015): given a centre patch and one
of its 8 neighbours (pipeline/context.py: "patch1", "patch2", "position"), say which neighbour
it is. Network: nets/pair.py (tied trunks on both patches, fc6 each, concatenated, fc7, fc8 -> 8).

Patch geometry and shortcut countermeasures are the pipeline's `ContextParams` (paper defaults
scaled to the image: 96 px patches, 48 px gap, +-7 px jitter at ~400 px; pixelation 1/3, colour
dropping on, projection off), reached as `pipeline.<key>` (e.g. `--set color_drop=false`).
Logged: loss, acc (8-way accuracy; chance 0.125)."""

from __future__ import annotations

from dataclasses import dataclass

from .classify import ClassificationTask
from .nets.pair import PairNet
from .nets.trunk import Trunk


@dataclass(frozen=True)
class ContextTaskParams:
    hidden: int = 4096          # fc6 / fc7 width (paper: 4096)
    pool: int = 2               # conv5 pooled to pool x pool before fc6
    # Dropout after each fc (AlexNet's and the paper's 0.5). The `small` preset sets 0: a ten-minute
    # run underfits, and dropout halves how fast the head learns (docs/artifacts-learning.md).
    dropout: float = 0.5

    def __post_init__(self):
        if self.hidden < 1 or self.pool < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"context hidden and pool must be >= 1 and dropout in [0, 1), got {self.hidden}, "
                             f"{self.pool}, {self.dropout}")


class ContextTask(ClassificationTask):
    name = "context"
    pipeline_task = "context"
    params_class = ContextTaskParams
    target_key = "position"

    def validate(self, cfg):
        cfg.pipeline.geometry(cfg.image_size)  # too small an image: say so now

    def pretext_input_size(self, cfg):
        return cfg.pipeline.geometry(cfg.image_size).patch

    def build_net(self, cfg):
        return PairNet(Trunk(cfg.trunk), hidden=cfg.params.hidden, pool=cfg.params.pool, dropout=cfg.params.dropout)

    def logits(self, net, batch):
        return net(batch["patch1"], batch["patch2"])

"""The supervised task: the class labels stored in the shards, the upper bound of the
comparison. Same trunk, same pipeline ("images": random resized crop and flip, [-1, 1]), same
optimiser as the pretext tasks; the head is `heads.ClassifierHead` (conv5 pooled to pool x pool,
one fc with BatchNorm and dropout, then the classes). Unlabelled samples (label -1) are ignored
by the loss. Logged: loss, acc (top-1 on the training batches)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from torch import nn

from .classify import ClassificationTask
from .nets.heads import ClassifierHead
from .nets.trunk import Trunk


@dataclass(frozen=True)
class SupervisedTaskParams:
    num_classes: int = 0        # 0: the number of classes in the shards' manifest (resolved once, saved)
    hidden: int = 4096
    pool: int = 4
    # Dropout after each fc (AlexNet's and the paper's 0.5). The `small` preset sets 0: a ten-minute
    # run underfits, and dropout halves how fast the head learns (docs/artifacts-learning.md).
    dropout: float = 0.5

    def __post_init__(self):
        if self.num_classes < 0 or self.hidden < 1 or self.pool < 1 or not 0 <= self.dropout < 1:
            raise ValueError("supervised num_classes must be >= 0 (0: from the shards), hidden and pool >= 1")


class SupervisedNet(nn.Module):
    def __init__(self, trunk: Trunk, classes: int, hidden: int, pool: int, dropout: float = 0.5):
        super().__init__()
        self.trunk = trunk
        self.head = ClassifierHead(trunk.out_channels, classes, hidden=hidden, pool=pool, dropout=dropout)

    def forward(self, x):
        return self.head(self.trunk(x))


def manifest_classes(shards: str) -> tuple[int, int]:
    """(number of classes, number of labelled samples) of a shard set."""
    path = os.path.join(shards, "manifest.json")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no manifest; the supervised task reads its classes from the shards "
                         "(build them with `spotart build-shards`) or takes params.num_classes=N")
    with open(path) as f:
        m = json.load(f)
    return len(m.get("classes") or []), int(m.get("num_labelled", 0))


class SupervisedTask(ClassificationTask):
    name = "supervised"
    pipeline_task = "images"
    params_class = SupervisedTaskParams
    target_key = "label"

    def validate(self, cfg):
        if cfg.params.num_classes or cfg.data != "shards" or not cfg.shards:
            return  # nothing to resolve (yet): a preset's defaults are built before --shards is applied
        classes, labelled = manifest_classes(cfg.shards)
        if classes < 2 or labelled == 0:
            raise ValueError(f"{cfg.shards}: {labelled} labelled images in {classes} classes; the supervised task "
                             "needs labels (build the shards from class folders)")
        # resolved once into the config, so the saved run rebuilds its head without the shards
        object.__setattr__(cfg, "params", dataclasses.replace(cfg.params, num_classes=classes))

    def build_net(self, cfg):
        p = cfg.params
        if not p.num_classes:
            raise ValueError("the supervised task needs labelled shards (--shards DIR) or params.num_classes=N")
        return SupervisedNet(Trunk(cfg.trunk), p.num_classes, hidden=p.hidden, pool=p.pool, dropout=p.dropout)

    def logits(self, net, batch):
        return net(batch["image"])

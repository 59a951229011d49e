"""`AuditConfig`: one shortcut audit, validated on construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...pipeline.aberration import MAX_SCALE
from .probes import CUES, PROBES

GENERATOR_TASKS = ("artifacts", "inpainting")


@dataclass(frozen=True)
class AuditConfig:
    task: str
    shards: str                       # images the cheaters train on (spotart build-shards)
    out: str                          # report directory
    preset: str = "64px"              # sizes, as for `spotart train` (ignored with `run`: the run's own)
    overrides: tuple = ()             # "key=value" exactly as `spotart train --set`
    test_shards: str | None = None    # held-out images; None: the second half of `shards`
    run: str | None = None            # a run of the task: its pipeline, its network's accuracy, its generator
    images: int = 4096                # training images per cheater (each fit sees this many samples)
    test_images: int = 2048           # held-out images per score
    batch_size: int = 256
    strip: int = 2                    # k: width of the border strips / band, px
    aberration: float = 0.05          # strength of the planted-aberration probes; 0: none
    hidden: int = 0                   # 0: softmax regression; > 0: an MLP with this many hidden units
    cues: tuple = ()                  # only these cues (default: all of the task's)
    countermeasures: tuple = ()       # only the probes of these countermeasures (default: all)
    fail_above: float | None = None   # points above chance that fail the audit (default probes only)
    seed: int = 0
    device: str = "auto"              # generator networks (and the DALI pipeline on a GPU)
    num_threads: int = 2              # DALI CPU threads

    def __post_init__(self):
        if self.task not in PROBES:
            raise ValueError(f"the audit covers {sorted(PROBES)}, not {self.task!r}")
        if self.task in GENERATOR_TASKS and not self.run:
            raise ValueError(f"the {self.task} audit judges a trained generator's images: pass --run RUN "
                             f"(made by `spotart train RUN --task {self.task} --shards ...`)")
        for name in ("images", "test_images", "batch_size", "strip", "num_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not abs(self.aberration) <= MAX_SCALE:
            raise ValueError(f"aberration must be in [-{MAX_SCALE}, {MAX_SCALE}], got {self.aberration}")
        if self.hidden < 0:
            raise ValueError(f"hidden must be >= 0, got {self.hidden}")
        if self.fail_above is not None and self.fail_above < 0:
            raise ValueError(f"fail_above is in points above chance and must be >= 0, got {self.fail_above}")
        unknown = sorted(set(self.cues) - set(CUES))
        if unknown:
            raise ValueError(f"unknown cue(s) {unknown}; known: {sorted(CUES)}")
        object.__setattr__(self, "overrides", tuple(self.overrides))
        object.__setattr__(self, "cues", tuple(self.cues))
        object.__setattr__(self, "countermeasures", tuple(self.countermeasures))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

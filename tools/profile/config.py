"""`ProfileConfig`: what `spotart profile` measures and where it writes, validated on construction.

The training side is a `TrainConfig` (task, preset, `--set` overrides, the shards): the profile runs
the very pipeline and training step a `spotart train` with the same arguments would run. The
pipeline knobs the trainer does not expose (prefetch depth, hardware decoder share) are
`pipeline_overrides` on top of the pipeline config the trainer derives."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# PipelineConfig fields a profile may change: the throughput knobs, nothing that changes what
# the task computes (so before/after reports stay comparable).
PIPELINE_KNOBS = ("num_threads", "prefetch", "hw_decoder_load", "initial_fill")


@dataclass(frozen=True)
class ProfileConfig:
    shards: str
    out: str
    task: str = "artifacts"
    preset: str = "64px"
    overrides: tuple = ()              # TrainConfig "key=value" overrides (as `spotart train --set`)
    pipeline_overrides: tuple = ()     # "key=value" for PIPELINE_KNOBS
    warmup: int = 5                    # untimed batches/steps before each measurement
    batches: int = 50                  # timed batches/steps per measurement
    rounds: int = 3                    # interleaved rounds the batches of pipeline/step/together are split in
    profile_steps: int = 5             # training steps under torch.profiler (separate from the timed ones)
    phase: str = "last"                # the task's phase whose step is profiled ("last": the main one)
    sample_interval: float = 0.1       # seconds between CPU/GPU utilisation samples
    top_kernels: int = 10
    trace: bool = True                 # also write the torch.profiler Chrome trace of the step

    def __post_init__(self):
        object.__setattr__(self, "overrides", tuple(self.overrides))
        object.__setattr__(self, "pipeline_overrides", tuple(self.pipeline_overrides))
        for name, low in (("warmup", 0), ("batches", 2), ("rounds", 1), ("profile_steps", 1), ("top_kernels", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.batches < self.rounds:
            raise ValueError(f"batches ({self.batches}) must be at least rounds ({self.rounds}): one batch per round")
        if not 0.005 <= self.sample_interval <= 10:
            raise ValueError(f"sample_interval must be in [0.005, 10] seconds, got {self.sample_interval}")
        for item in self.pipeline_overrides:
            key = str(item).partition("=")[0].strip()
            if "=" not in str(item) or key not in PIPELINE_KNOBS:
                raise ValueError(f"pipeline override {item!r} must be KEY=VALUE with KEY one of {PIPELINE_KNOBS}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["overrides"], d["pipeline_overrides"] = list(self.overrides), list(self.pipeline_overrides)
        return d


def parse_pipeline_overrides(items) -> dict:
    """["prefetch=3", "hw_decoder_load=0.9"] -> {"prefetch": 3, "hw_decoder_load": 0.9}."""
    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        key = key.strip()
        out[key] = float(value) if key == "hw_decoder_load" else int(value)
    return out

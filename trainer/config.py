"""`TrainConfig`: one frozen, validated description of a training run, built from a preset plus
`key=value` overrides. Unknown keys are errors.

Presets (sizes, not methods; every task reads the same preset):
  tiny     32 px images, a small trunk (conv1 5x5/2), batch 16, one torch CPU thread: CPU tests
           and smoke runs; both phases of the artifacts task (300 steps) in about a minute or two
           on two CPU cores with DALI's CPU backend.
  64px     64 px images (tiny-imagenet-a, STL-10 downscaled), the AlexNet trunk with conv5 at 4x4,
           batch 256 per GPU: sized for one H100 in bf16.
  alexnet  224 px images, AlexNet as in the paper's ImageNet experiments (conv5 14x14), batch 128.

Keys: the top-level fields below; `trunk.<key>` for the trunk (`TrunkConfig`); the task's network
and loss parameters as `params.<key>` (the task module's `*TaskParams`); the parameters that shape
its data as `pipeline.<key>` (the pipeline's own dataclass, e.g. `pipeline.artifacts.ArtifactParams`:
theta, or the context countermeasures; defined there once, forwarded whole). A bare key that is
not a top-level field is looked up in params, then pipeline (`theta=0.7`, `color_drop=false`).
Values are parsed after the type of the value they replace (ints, floats, true/false,
comma-separated tuples, none).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ..configs import coerce_dataclass
from ..pipeline.config import CONCURRENCY, make_params
from .nets.trunk import TRUNK_PRESETS, TrunkConfig, trunk_config

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DATA = ("shards", "synthetic")
SCHEDULES = ("linear", "constant")

# Keys that may differ between a run and its resumption: they change how the run is watched and
# cut, never what it computes.
RUNTIME_KEYS = frozenset({"log_every", "ckpt_every", "keep_checkpoints", "stop_after", "progress", "compile",
                          "cpu_threads", "max_bad_samples", "max_nonfinite_steps", "verify",
                          "monitor_shards", "monitor_every", "monitor_k", "monitor_images"})

# preset -> top-level values, trunk preset name, per-task parameter values
PRESETS: dict[str, dict] = {
    "tiny": {
        "image_size": 32, "batch_size": 16, "steps": 300, "log_every": 10, "ckpt_every": 100, "num_threads": 2,
        "cpu_threads": 1,  # 2 shared cores: one torch thread beside DALI's workers beats OpenMP spinning
        "trunk": "tiny",
        # disc_lr_mult 4: in a few hundred steps C never gets ahead of the repair network at the
        # code's equal rates (real/fake stays at chance); 4x lets it (docs/benchmarks.md, demo)
        # repair_objective "code" + mask_weight 1: as at `small` (the paper's objective collapses the
        # mask head at this scale, docs/artifacts-learning.md); in the 300-step demo it lifts the
        # held-out real/fake accuracy from 0.71 / 0.68 to 0.92 / 0.96
        "params": {"artifacts": {"enc_stem": 16, "enc_channels": (16, 32, 64),
                                 "head_hidden": 64, "head_pool": 4, "disc_lr_mult": 4.0,
                                 "repair_objective": "code", "mask_weight": 1.0},
                   "context": {"hidden": 64}, "jigsaw": {"tile_hidden": 32, "hidden": 128},
                   "inpainting": {"disc_width": 16}, "supervised": {"hidden": 64}},
        "pipeline": {"jigsaw": {"count": 100}},
    },
    # small: 64 px (tiny-imagenet-a's own size), a narrow AlexNet-shaped trunk (conv5 4x4 = M),
    # about ten minutes of training per task on 2 CPU cores (docs/artifacts-learning.md). "tasks"
    # holds per-task top-level values: steps that fit the budget, and the pretext input size of the
    # tasks that cut the image into parts: their source crop is upscaled to 128 px so a context
    # patch / jigsaw tile (31 / 32 px) still leaves conv5 2x2 (at 64 px: 15 / 16 px, conv5 1x1).
    # The comparison table probes every trunk at one size, the largest of these (128).
    # Artifacts runs the released code's repair objective with mask weight 1: the paper's
    # objective collapses the mask head at this scale (ArtifactsTaskParams, measured).
    "small": {
        "image_size": 64, "batch_size": 32, "steps": 1200, "log_every": 50, "ckpt_every": 500, "num_threads": 2,
        "cpu_threads": 1, "channels_last": True,
        "trunk": "small",
        "tasks": {"artifacts": {"steps": 1300}, "context": {"image_size": 128, "batch_size": 128, "steps": 8000},
                  "jigsaw": {"image_size": 128, "steps": 7500},
                  "inpainting": {"batch_size": 64, "steps": 8400, "lr": 0.002, "cpu_threads": 2},
                  "supervised": {"steps": 3000}},
        "params": {"artifacts": {"enc_stem": 16, "enc_channels": (32, 64, 128, 256), "head_hidden": 256,
                                 "head_pool": 4, "disc_lr_mult": 4.0, "ae_fraction": 0.4,
                                 "repair_objective": "code", "mask_weight": 1.0},
                   "context": {"hidden": 256, "dropout": 0.0}, "jigsaw": {"tile_hidden": 128, "hidden": 512, "dropout": 0.0},
                   "inpainting": {"adv_weight": 0.0, "rec_weight": 1.0, "dropout": 0.0, "disc_width": 32},
                   "supervised": {"hidden": 256, "dropout": 0.0}},
        # jigsaw: 100 permutations (a 4,000-step budget cannot separate 1,000) and the released
        # Caffe layer's 255/85/64 geometry, as at 64px (the audit's edge-continuity fix).
        # context: the paper's projection against chromatic aberration instead of colour dropping:
        # a trunk trained on one colour channel and noise probes full-colour images badly (seed 0,
        # 26,000 steps, the table's probe: best layer 18.8 with projection, 14.3 with colour
        # dropping; docs/artifacts-learning.md). Batches of 128 pairs: a 31 px patch pair is too
        # little work for one CPU thread at 32 (1,512 img/s against 1,871 at 128, medians of 3),
        # so the same ten minutes see 1.0 M pairs instead of 0.83 M, with 8,000 less noisy steps
        # (best layer 19.8 +- 0.1 over 2 seeds, conv4 / conv5 17.6 / 15.7, against 18.7 / 14.6 /
        # 12.6 at 32 x 26,000: the deep layers gain most)
        # inpainting: the reconstruction loss alone (the paper's own feature-learning setting, sec.
        # 5.2; D cost more than the whole generator here), decoded to the centre square only (the
        # released code's output), two torch threads (its pipeline decodes 64 px JPEGs, ~2% data
        # wait), batches of 64, lr 2e-3 (the code's G rate), no dropout: 8,400 steps in ten
        # minutes (935 img/s, medians of 3), 8.8x the images of the joint loss at 1,900 x 32. A 2 px
        # overlap band, the released code's 4 of 128 px scaled to 64: a 28 px hole in the 32 px
        # square, the band 75% of the loss (code: 75%) instead of 89%. Best layer 20.0 +- 0.3 over
        # 2 seeds, random 16.7 (+3.3; with 4 px 18.9 +- 0.5, with the joint loss 16.0 +- 1.1;
        # docs/artifacts-learning.md, section 3)
        "pipeline": {"jigsaw": {"count": 100, "crop": 255, "cell": 85},
                     "context": {"color_drop": False, "projection": True},
                     "inpainting": {"overlap": 2}},
    },
    "64px": {
        "image_size": 64, "batch_size": 256, "steps": 60_000, "log_every": 50, "ckpt_every": 2000, "num_threads": 4,
        "trunk": "64px",
        # as at `small`: context and jigsaw cut a 128 px upscaled crop, so their 31 / 32 px
        # patches and tiles leave conv5 2x2 (1x1 from a 64 px crop)
        "tasks": {"context": {"image_size": 128}, "jigsaw": {"image_size": 128}},
        # inpainting: the reconstruction loss alone, the paper's own feature-learning setting (sec.
        # 5.2: with an AlexNet encoder its adversarial loss did not converge); at `small` it also
        # made the step 2.7x faster and the trunk beat random (docs/artifacts-learning.md)
        "params": {"artifacts": {"enc_stem": 32, "enc_channels": (64, 128, 256, 512),
                                 "head_hidden": 1024, "head_pool": 4},
                   "inpainting": {"adv_weight": 0.0, "rec_weight": 1.0}},
        # the released Caffe layer's 255/85/64 jigsaw geometry: 16 px tiles with 5 px of random gap
        # instead of the paper's 18 px with 3 px, which `spotart audit` finds lets edge continuity
        # place 45% of the tiles (docs/benchmarks.md, shortcut audit). Context: projection instead of
        # colour dropping, as at `small`, whose 31 px patches these are: there a trunk trained on one
        # channel and noise probed full-colour images at 14.3 against 18.8 (seed 0, 26,000 steps)
        "pipeline": {"jigsaw": {"crop": 255, "cell": 85}, "context": {"color_drop": False, "projection": True}},
    },
    "alexnet": {
        "image_size": 224, "batch_size": 128, "steps": 300_000, "log_every": 100, "ckpt_every": 5000, "num_threads": 8,
        "trunk": "alexnet",
        # every JPEG on the hardware decoder (DALI's default sends 35% through CUDA + the CPU): the
        # whole pipeline ran 1.35-1.43x faster for every task on the H200 at 224 px (2026-11-28) and
        # decode alone 1.47x on the H100 (docs/benchmarks.md, GPU results); a GPU without the
        # hardware decoder ignores it. 64 px JPEGs are unmeasured that way and keep DALI's 0.65.
        "hw_decoder_load": 1.0,
        "params": {"artifacts": {"enc_stem": 32, "enc_channels": (64, 128, 256, 512),
                                 "head_hidden": 4096, "head_pool": 6},
                   "inpainting": {"adv_weight": 0.0, "rec_weight": 1.0}},  # as at 64px (paper, sec. 5.2)
    },
}


@dataclass(frozen=True)
class TrainConfig:
    task: str = "artifacts"
    preset: str = "64px"
    # data
    data: str = "shards"               # "shards" (DALI) or "synthetic" (on-device batches, tests/benchmarks)
    shards: str | None = None          # directory made by `spotart build-shards`
    image_size: int = 64
    batch_size: int = 256              # per rank
    num_threads: int = 4               # DALI CPU threads per rank
    prefetch: int = 2                  # DALI prefetch queue depth (batches in flight)
    hw_decoder_load: float = 0.65      # share of JPEGs for the GPU's hardware decoder (A100/H100)
    dali_concurrency: str = "backend"  # "full": independent DALI operators run at once (pipeline/build.py)
    min_area: float = 0.25             # random resized crop: smallest share of the image's area kept
    flip: bool = True                  # random horizontal flips
    aberration: float = 0.0            # synthetic chromatic aberration for audits (pipeline/aberration.py), 0 = off
    seed: int = 0
    # model
    trunk: Any = "64px"                # TrunkConfig, a dict or a trunk preset name
    # optimisation: Adam with beta1 0.5, eps 1e-5, lr 3e-4, L2 5e-5 (released code, both phases)
    steps: int = 60_000                # optimisation steps of the run, all phases together
    lr: float = 3e-4
    betas: tuple = (0.5, 0.999)
    eps: float = 1e-5
    weight_decay: float = 5e-5         # coupled L2 on conv/linear weights (TF l2_regularizer)
    lr_schedule: str = "linear"        # per phase: linear decay to lr_final * lr over lr_decay_frac of it
    lr_final: float = 0.01
    lr_decay_frac: float = 0.9
    # runtime
    device: str = "auto"               # auto: cuda when available
    precision: str = "auto"            # auto: bf16 autocast on GPU, fp32 on CPU; fp16 uses GradScaler
    channels_last: bool | None = None  # None: on for GPU
    compile: bool = False
    log_every: int = 50
    ckpt_every: int = 2000
    keep_checkpoints: int = 0          # step-numbered checkpoints kept beside last.pt
    stop_after: int = 0                # stop (with a checkpoint) after this many steps of this invocation
    progress: bool = True
    cpu_threads: int = 0               # torch CPU threads, 0: torch's default (see the CLI help)
    deterministic: bool = False        # deterministic GPU kernels (cuDNN, cuBLAS, torch): bitwise resume, slower
    # reliability (docs/benchmarks.md, "Reliability")
    max_bad_samples: int = 10          # undecodable samples left out before the run stops (all ranks together)
    max_nonfinite_steps: int = 32      # non-finite steps in a row before the run stops (fp16: 2^16 -> 2^-16 scale)
    verify: bool = False               # hash every shard against the manifest before training (else sizes only)
    # online k-NN monitor (monitor.py): conv5 k-NN top-1 on a labelled shard set every N steps
    monitor_shards: str | None = None
    monitor_every: int = 500
    monitor_k: int = 20
    monitor_images: int = 2000
    params: Any = None                 # the task's network/loss parameters (its *TaskParams)
    pipeline: Any = None               # the task's data parameters (its pipeline params dataclass)

    def __post_init__(self):
        from .tasks import get_task  # late: tasks import this module

        task = get_task(self.task)
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        if self.data not in DATA:
            raise ValueError(f"data must be one of {DATA}, got {self.data!r}")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be one of {DEVICES} or cuda:N, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if not 0.0 <= self.hw_decoder_load <= 1.0:
            raise ValueError(f"hw_decoder_load must be in [0, 1], got {self.hw_decoder_load}")
        if self.dali_concurrency not in CONCURRENCY:
            raise ValueError(f"dali_concurrency must be one of {CONCURRENCY}, got {self.dali_concurrency!r}")
        for name, low in (("image_size", 16), ("batch_size", 1), ("num_threads", 1), ("prefetch", 1), ("steps", 1),
                          ("log_every", 1), ("ckpt_every", 1), ("keep_checkpoints", 0), ("stop_after", 0),
                          ("cpu_threads", 0), ("max_bad_samples", 0), ("max_nonfinite_steps", 1),
                          ("monitor_every", 1), ("monitor_k", 1), ("monitor_images", 2)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        betas = tuple(float(b) for b in self.betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", betas)
        if not self.lr > 0 or self.eps <= 0 or self.weight_decay < 0:
            raise ValueError("lr and eps must be > 0 and weight_decay >= 0")
        if not 0 < self.lr_final <= 1 or not 0 < self.lr_decay_frac <= 1:
            raise ValueError("lr_final and lr_decay_frac must be in (0, 1]")
        object.__setattr__(self, "trunk", trunk_config(self.trunk))
        if not 0.0 < self.min_area <= 1.0:
            raise ValueError(f"min_area must be in (0, 1], got {self.min_area}")
        object.__setattr__(self, "params", coerce_dataclass(task.params_class, self.params, f"{self.task} parameter"))
        object.__setattr__(self, "pipeline", make_params(task.pipeline_task, self.pipeline))
        task.validate(self)  # cross-checks; may resolve derived sizes (e.g. artifacts' mask_size)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["trunk"] = self.trunk.to_dict()
        d["params"] = dataclasses.asdict(self.params)
        d["pipeline"] = dataclasses.asdict(self.pipeline)
        return json.loads(json.dumps(d))  # tuples -> lists: plain JSON types throughout

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return coerce_dataclass(cls, d, "train config key")


# ----------------------------------------------------------------------------------------------
# building a config from a preset / a saved config and `key=value` overrides

def parse_overrides(items) -> dict[str, str]:
    """["a=1", "trunk.norm=none"] -> {"a": "1", "trunk.norm": "none"}."""
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def parse_value(text, like):
    """Parse `text` to the type of `like` (the value it replaces)."""
    if not isinstance(text, str):
        return text
    low = text.lower()
    if low in ("none", "null", "auto") and (like is None or isinstance(like, bool)):
        return None
    if isinstance(like, bool) or (like is None and low in ("true", "false", "yes", "no", "on", "off")):
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if isinstance(like, (tuple, list)):
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        proto = like[0] if len(like) else 0
        return tuple(parse_value(p.strip(), proto) for p in parts)
    if isinstance(like, int):
        return int(text)
    if isinstance(like, float):
        return float(text)
    if like is None:
        for conv in (int, float):
            try:
                return conv(text)
            except ValueError:
                pass
    return text


def preset_dict(task: str, preset: str) -> dict:
    """The plain-dict config of `preset` for `task` (defaults filled in)."""
    from .tasks import get_task

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    get_task(task)  # an unknown task is named before anything else
    p = PRESETS[preset]
    pipeline_task = get_task(task).pipeline_task
    top = {k: v for k, v in p.items() if k not in ("trunk", "params", "pipeline", "tasks")}
    top.update(p.get("tasks", {}).get(task, {}))  # per-task top-level values (steps, pretext input size)
    return TrainConfig(task=task, preset=preset, trunk=p["trunk"], params=p["params"].get(task),
                       pipeline=p.get("pipeline", {}).get(pipeline_task), **top).to_dict()


def apply_overrides(base: dict, overrides: dict[str, str]) -> dict:
    """Overrides onto a plain config dict; unknown keys are errors naming the known ones."""
    d = json.loads(json.dumps(base))
    nested = ("trunk", "params", "pipeline")
    top = {f.name for f in dataclasses.fields(TrainConfig)} - set(nested)
    for key, text in overrides.items():
        if key in nested or key in ("task", "preset"):
            raise ValueError(f"{key!r} cannot be overridden with --set; use --task/--preset or {key}.<key>=VALUE")
        prefix, dot, rest = key.partition(".")
        if dot and prefix in nested:
            sub, name = d[prefix], rest
        elif key in top:
            sub, name = d, key
        else:
            owners = [n for n in ("params", "pipeline") if key in d[n]]
            if len(owners) > 1:
                raise ValueError(f"config key {key!r} is ambiguous; write params.{key} or pipeline.{key}")
            if not owners:
                raise ValueError(f"unknown config key {key!r}; known: {sorted(top)}, " + ", ".join(
                    f"{n}.{{{','.join(sorted(d[n]))}}}" for n in nested))
            sub, name = d[owners[0]], key
        if name not in sub:
            raise ValueError(f"unknown config key {key!r}; known here: {sorted(sub)}")
        sub[name] = parse_value(text, sub[name])
    return d


def build_config(task: str = "artifacts", preset: str = "64px", overrides=None, base: dict | None = None) -> TrainConfig:
    """TrainConfig from `base` (a saved config dict) or the preset, plus overrides (dict or list of
    "key=value")."""
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(overrides)
    d = base if base is not None else preset_dict(task, preset)
    return TrainConfig.from_dict(apply_overrides(d, overrides or {}))


def config_diff(a: dict, b: dict, ignore=RUNTIME_KEYS) -> list[str]:
    """Keys whose values differ between two config dicts (nested as a.b), ignoring runtime keys."""
    out = []
    for k in sorted(set(a) | set(b)):
        if k in ignore:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += [f"{k}.{s}" for s in config_diff(va, vb, ignore=())]
        elif va != vb:
            out.append(k)
    return out


__all__ = ["TrainConfig", "PRESETS", "TRUNK_PRESETS", "TrunkConfig", "build_config", "parse_overrides",
           "apply_overrides", "preset_dict", "config_diff", "config_for_run", "RUNTIME_KEYS"]


def config_for_run(run_dir: str, task: str | None = None, preset: str | None = None, overrides=(),
                   resume: bool = False) -> TrainConfig:
    """The config of a run: with --resume and neither task nor preset given, the run's saved
    config (RUN/config.json) plus overrides; otherwise the preset plus overrides."""
    import os

    saved = os.path.join(run_dir, "config.json")
    if resume and task is None and preset is None and os.path.isfile(saved):
        with open(saved) as f:
            return build_config(base=json.load(f)["train"], overrides=overrides)
    return build_config(task or "artifacts", preset or "64px", overrides)

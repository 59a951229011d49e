"""Linear evaluation of a frozen trunk: one linear classifier per conv layer, top-1 / top-5 on a
held-out shard set (`spotart eval linear`).

Protocol (Zhang, Isola & Efros's per-layer ImageNet protocol, the one the Spot-Artifacts paper
reports): the trunk is frozen in eval mode; each of conv1..conv5 (after ReLU) is average-pooled
adaptively to p x p cells, p chosen per layer so that channels * p^2 is about `dims` (9216 in
that protocol: AlexNet's conv1 96 x 10 x 10, conv2 256 x 6 x 6, conv3/4 384 x 5 x 5, conv5
256 x 6 x 6), never above the layer's own side (no upsampling; at 64 px the AlexNet trunk's
conv3..conv5 are 4 x 4, so they give fewer dims); `pool_sizes` lists them. A linear classifier
(softmax regression) is trained on each layer's pooled features.

Per epoch the training features are computed once, under torch.no_grad and autocast, from the
DALI "images" pipeline with its training augmentation (random resized crop, flip); all five
classifiers train on the same batch, each on its own features (one optimiser, independent
parameters, summed losses). `cache=True` instead computes the features once from the
deterministic pipeline (centre crop) and reuses them every epoch: much faster on a CPU, no
augmentation. Validation: the deterministic pipeline (training=False), every sample once.

Choices the protocol leaves open: the features are standardised by a BatchNorm without learned
scale or shift in front of each classifier (a fixed affine map at test time, so the classifier
stays linear; it makes one learning rate fit layers whose activations differ by orders of
magnitude); Adam, lr 1e-3, cosine decay to 0 over the run, no weight decay; unlabelled samples
(label -1) are skipped. Results: JSON and a Markdown table (`write_results`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from .nets.trunk import Trunk, TrunkConfig
from .probe import normalise_input, probe_loader

log = logging.getLogger(__name__)
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class LinearEvalConfig:
    train_shards: str
    val_shards: str
    image_size: int | None = None    # None: the image size the backbone was trained at
    batch_size: int = 128
    epochs: int = 10
    optimizer: str = "adam"
    lr: float = 1e-3                 # adam; sgd (momentum 0.9) wants ~0.1 on standardised features
    weight_decay: float = 0.0
    dims: int = 9216                 # target features per layer after pooling (Zhang et al.: ~9K)
    cache: bool = False              # features once, centre crops, reused every epoch
    device: str = "auto"
    precision: str = "auto"          # autocast of the frozen trunk: bf16 on GPU, fp32 on CPU
    num_threads: int = 4             # DALI CPU threads
    seed: int = 0
    max_train_batches: int = 0       # 0: whole epochs; N: at most N batches per epoch (smoke runs)

    def __post_init__(self):
        for name in ("train_shards", "val_shards"):
            path = getattr(self, name)
            if not os.path.isfile(os.path.join(str(path), "manifest.json")):
                raise ValueError(f"--{name.replace('_', '-')} {path}: no manifest.json there; build the shard "
                                 f"set with `spotart build-shards SOURCE --out {path}`")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name, low in (("batch_size", 1), ("epochs", 1), ("dims", 1), ("num_threads", 1),
                          ("max_train_batches", 0)):
            if int(getattr(self, name)) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.image_size is not None and self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0 and weight_decay >= 0")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {self.precision!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- pure parts ----------------------------------------------------------------------------------

def pool_size(channels: int, side: int, dims: int) -> int:
    """p with channels * p^2 closest to dims, 1 <= p <= side."""
    return max(1, min(side, round(math.sqrt(dims / channels))))


def pool_features(feats: list[torch.Tensor], pools: list[int]) -> list[torch.Tensor]:
    return [F.adaptive_avg_pool2d(f, p).flatten(1).float() for f, p in zip(feats, pools)]


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, int]:
    """Number of samples whose label is among the k highest logits, per k (k capped at the
    number of classes); samples labelled -1 are not counted."""
    valid = labels >= 0
    logits, labels = logits[valid], labels[valid]
    kmax = min(max(ks), logits.shape[1])
    hit = logits.topk(kmax, dim=1, sorted=True).indices == labels[:, None]
    return {k: int(hit[:, :min(k, kmax)].any(1).sum()) for k in ks}


class LinearProbe(nn.Module):
    """Standardisation (BatchNorm without learned affine: fixed at test time) and a linear layer."""

    def __init__(self, dims: int, classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dims, affine=False)
        self.fc = nn.Linear(dims, classes)

    def forward(self, x):
        return self.fc(self.norm(x))


# ---- backbone and data ---------------------------------------------------------------------------

def open_backbone(spec: str) -> tuple[Trunk, dict]:
    """(trunk in eval mode, its config dict) from a backbone file or `random:PRESET[:SEED]`."""
    from .export import FORMAT
    from .random_backbone import parse_random_spec, random_backbone

    rnd = parse_random_spec(spec)
    if rnd is not None:
        d = random_backbone(*rnd)
    else:
        if not os.path.isfile(spec):
            raise ValueError(f"{spec}: no such backbone file (write one with `spotart export-backbone RUN --out FILE`, "
                             "or pass random:PRESET for an untrained trunk)")
        d = torch.load(spec, map_location="cpu", weights_only=True)
        if not isinstance(d, dict) or d.get("config", {}).get("format") != FORMAT:
            raise ValueError(f"{spec}: not a spotart backbone (write one with `spotart export-backbone RUN --out FILE`)")
    trunk = Trunk(TrunkConfig(**d["config"]["trunk"]))
    trunk.load_state_dict(d["state_dict"], strict=True)
    return trunk.eval().requires_grad_(False), d["config"]


def read_classes(shards: str) -> list[str]:
    with open(os.path.join(shards, "manifest.json")) as f:
        return list(json.load(f).get("classes") or [])


def _runtime(cfg: LinearEvalConfig):
    from .runtime import resolve_runtime

    return resolve_runtime(SimpleNamespace(device=cfg.device, precision=cfg.precision, channels_last=None))


def _loader(cfg: LinearEvalConfig, shards: str, image_size: int, training: bool, rt):
    return probe_loader(shards, rt, image_size=image_size, batch_size=cfg.batch_size, num_threads=cfg.num_threads,
                        seed=cfg.seed, training=training)


@torch.no_grad()
def extract(trunk: Trunk, images: torch.Tensor, pools: list[int], rt, input_norm: str | None = None) -> list[torch.Tensor]:
    with rt.autocast():
        feats = trunk.features(normalise_input(images, input_norm))
    return pool_features(feats, pools)


# ---- the evaluation ------------------------------------------------------------------------------

def linear_eval(backbone: str, cfg: LinearEvalConfig, on_epoch=None) -> dict:
    """Evaluate `backbone` (a file from export-backbone, or random:PRESET[:SEED]); `on_epoch` is
    called with each epoch's record (epoch, mean train loss per layer)."""
    t_start = time.perf_counter()
    rt = _runtime(cfg)
    trunk, info = open_backbone(backbone)
    trunk.to(rt.device)
    size = cfg.image_size or int(info.get("image_size") or 64)
    classes = _check_classes(cfg)
    with torch.no_grad():  # the geometry of each layer at this image size
        probe = trunk.features(torch.zeros(1, 3, size, size, device=rt.device))
    channels = [f.shape[1] for f in probe]
    sides = [f.shape[-1] for f in probe]
    pools = [pool_size(c, s, cfg.dims) for c, s in zip(channels, sides, strict=True)]
    dims = [c * p * p for c, p in zip(channels, pools, strict=True)]
    log.info("linear eval of %s at %d px: pooled dims %s", backbone, size, dict(zip(LAYERS, dims, strict=True)))

    torch.manual_seed(cfg.seed)
    heads = nn.ModuleList([LinearProbe(d, len(classes)) for d in dims]).to(rt.device)
    t_feat = time.perf_counter()
    norm = info.get("input_norm")  # the input statistics the trunk was trained on (probe.py)
    history = _fit(heads, TrainFeatures(trunk, cfg, size, pools, rt, norm), cfg, on_epoch)
    train_seconds = time.perf_counter() - t_feat
    hits, n_val = _validate(heads, trunk, cfg, size, pools, rt, norm)
    layers = [{"layer": name, "channels": c, "side": s, "pool": p, "dims": d,
               "top1": hits[1][i] / n_val, "top5": hits[5][i] / n_val,
               "train_loss": history[-1]["train_loss"][name]}
              for i, (name, c, s, p, d) in enumerate(zip(LAYERS, channels, sides, pools, dims, strict=True))]
    return {"backbone": backbone, "backbone_config": info, "config": cfg.to_dict(), "image_size": size,
            "num_classes": len(classes), "val_samples": n_val, "device": str(rt.device),
            "precision": rt.precision, "history": history, "layers": layers,
            "train_seconds": train_seconds, "seconds": time.perf_counter() - t_start}


def _check_classes(cfg: LinearEvalConfig) -> list[str]:
    classes = read_classes(cfg.train_shards)
    if len(classes) < 2:
        raise ValueError(f"{cfg.train_shards}: {len(classes)} classes in the manifest; linear evaluation needs "
                         "labelled shards (build them from class folders)")
    if read_classes(cfg.val_shards) != classes:
        raise ValueError(f"{cfg.val_shards}: its classes differ from {cfg.train_shards}'s (ids are positions in "
                         "each manifest's class list); build both splits with the same class folders")
    return classes


class TrainFeatures:
    """The classifiers' training data, one epoch per iteration: features cached once from centre
    crops (kept in float16: half the memory, standardised before the classifier anyway) and
    shuffled per epoch, or computed afresh from the augmented pipeline."""

    def __init__(self, trunk, cfg: LinearEvalConfig, size: int, pools, rt, norm: str | None):
        self.trunk, self.cfg, self.pools, self.rt, self.norm = trunk, cfg, pools, rt, norm
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.cache, self.loader = None, None
        if cfg.cache:
            loader = _loader(cfg, cfg.train_shards, size, False, rt)
            parts, labels = [[] for _ in LAYERS], []
            for batch in self._limited(loader):
                keep = batch["label"] >= 0
                for acc, f in zip(parts, extract(trunk, batch["image"], pools, rt, norm), strict=True):
                    acc.append(f[keep].half())
                labels.append(batch["label"][keep])
            self.cache = ([torch.cat(p) for p in parts], torch.cat(labels))
            self.steps_per_epoch = math.ceil(len(self.cache[1]) / cfg.batch_size)
        else:
            self.loader = _loader(cfg, cfg.train_shards, size, True, rt)
            n = len(self.loader)
            self.steps_per_epoch = min(n, cfg.max_train_batches) if cfg.max_train_batches else n

    def _limited(self, loader):
        for n, batch in enumerate(loader):
            if self.cfg.max_train_batches and n >= self.cfg.max_train_batches:
                break
            yield batch

    def __iter__(self):
        if self.cache is not None:
            feats, labels = self.cache
            order = torch.randperm(len(labels), generator=self.gen, device="cpu").to(labels.device)
            for i in range(0, len(order), self.cfg.batch_size):
                idx = order[i:i + self.cfg.batch_size]
                yield [f[idx].float() for f in feats], labels[idx]
            return
        for batch in self._limited(self.loader):
            yield extract(self.trunk, batch["image"], self.pools, self.rt, self.norm), batch["label"]


def _fit(heads, batches: "TrainFeatures", cfg: LinearEvalConfig, on_epoch) -> list[dict]:
    """All five classifiers on the same batches (one optimiser, independent parameters, summed
    losses), cosine decay over the run. -> per-epoch mean train loss per layer."""
    params = list(heads.parameters())
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    total = max(1, cfg.epochs * batches.steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    history = []
    heads.train()
    for epoch in range(cfg.epochs):
        sums, seen = None, 0
        for feats, labels in batches:
            keep = labels >= 0
            if int(keep.sum()) < 2:  # BatchNorm needs two samples
                continue
            losses = torch.stack([F.cross_entropy(h(f[keep]), labels[keep]) for h, f in zip(heads, feats, strict=True)])
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            sched.step()
            sums = losses.detach() if sums is None else sums + losses.detach()
            seen += 1
        mean = (sums / seen).tolist() if seen else [float("nan")] * len(LAYERS)
        history.append({"epoch": epoch + 1, "train_loss": dict(zip(LAYERS, mean, strict=True))})
        log.info("epoch %d/%d: train loss %s", epoch + 1, cfg.epochs, " ".join(f"{v:.3f}" for v in mean))
        if on_epoch is not None:
            on_epoch(history[-1])
    batches.loader = None  # frees the DALI pipeline before the validation one is built
    return history


@torch.no_grad()
def _validate(heads, trunk, cfg: LinearEvalConfig, size: int, pools, rt, norm: str | None) -> tuple[dict, int]:
    """Top-1/top-5 hits per layer on every labelled validation sample (centre crops)."""
    heads.eval()
    hits = {k: [0] * len(LAYERS) for k in (1, 5)}
    n_val = 0
    for batch in _loader(cfg, cfg.val_shards, size, False, rt):
        labels = batch["label"]
        for i, (h, f) in enumerate(zip(heads, extract(trunk, batch["image"], pools, rt, norm), strict=True)):
            for k, v in topk_correct(h(f), labels).items():
                hits[k][i] += v
        n_val += int((labels >= 0).sum())
    if n_val == 0:
        raise ValueError(f"{cfg.val_shards}: no labelled images to evaluate on")
    return hits, n_val


def markdown_table(result: dict) -> str:
    rows = ["| layer | pooled | dims | top-1 | top-5 |", "| --- | --- | --- | --- | --- |"]
    for r in result["layers"]:
        rows.append(f"| {r['layer']} | {r['channels']}x{r['pool']}x{r['pool']} | {r['dims']} | "
                    f"{100 * r['top1']:.1f} | {100 * r['top5']:.1f} |")
    task = result["backbone_config"].get("task", "?")
    head = (f"Linear evaluation of `{result['backbone']}` ({task} trunk), {result['image_size']} px, "
            f"{result['num_classes']} classes, {result['val_samples']} validation images, "
            f"{result['config']['epochs']} epochs on {result['device']}; top-1/top-5 in %.\n\n")
    return head + "\n".join(rows) + "\n"


def write_results(result: dict, prefix: str) -> tuple[str, str]:
    """PREFIX.json and PREFIX.md (written atomically)."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    paths = (prefix + ".json", prefix + ".md")
    for path, text in zip(paths, (json.dumps(result, indent=2) + "\n", markdown_table(result))):
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    return paths

"""Online k-NN monitor: feature quality during pretraining, without a separate evaluation.

Every `monitor_every` steps the trunk's conv5 features (global average pooled, in eval mode) of
a fixed labelled image set (`--monitor-shards`, centre crops, read once and kept on the device)
are classified by weighted k-NN, as DINO and solo-learn monitor self-supervised runs: cosine
similarity, the k = 20 nearest neighbours vote with weight exp(similarity / 0.07). The set is
its own bank: each image is classified by the others (leave-one-out), so one labelled split
serves and no image votes for itself. Top-1 goes to metrics.jsonl as `knn_top1`."""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F

from .probe import normalise_input, probe_loader

log = logging.getLogger(__name__)
TEMPERATURE = 0.07  # DINO's and solo-learn's vote temperature


@torch.no_grad()
def knn_top1(features: torch.Tensor, labels: torch.Tensor, k: int = 20, temperature: float = TEMPERATURE,
             chunk: int = 1024) -> float:
    """Leave-one-out weighted k-NN top-1 over `features` (N, D) with `labels` (N,) in [0, C)."""
    n = features.shape[0]
    if n < 2:
        raise ValueError("k-NN needs at least two labelled images")
    k = min(k, n - 1)
    f = F.normalize(features.float(), dim=1)
    classes = int(labels.max()) + 1
    hits = 0
    for start in range(0, n, chunk):
        sim = f[start:start + chunk] @ f.T                                   # (b, N) cosine
        rows = torch.arange(sim.shape[0], device=f.device)
        sim[rows, rows + start] = -float("inf")                              # not its own neighbour
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], classes, device=f.device)
        votes.scatter_add_(1, labels[idx], (top / temperature).exp())
        hits += int((votes.argmax(1) == labels[start:start + chunk]).sum())
    return hits / n


class KnnMonitor:
    def __init__(self, shards: str, rt, image_size: int, k: int = 20, max_images: int = 2000,
                 input_norm: str | None = None, batch_size: int = 256, num_threads: int = 2):
        self.rt, self.k, self.input_norm = rt, k, input_norm
        images, labels = [], []
        for batch in probe_loader(shards, rt, image_size=image_size, batch_size=batch_size, num_threads=num_threads):
            keep = batch["label"] >= 0
            images.append(batch["image"][keep])
            labels.append(batch["label"][keep])
            if sum(len(x) for x in labels) >= max_images:
                break
        self.images = torch.cat(images)[:max_images]
        self.labels = torch.cat(labels)[:max_images]
        if len(self.labels) < 2 or len(self.labels.unique()) < 2:
            raise ValueError(f"--monitor-shards {shards}: the k-NN monitor needs labelled images of at least two "
                             "classes (build the shards from class folders)")
        self.batch_size = batch_size
        log.info("k-NN monitor: %d images of %d classes from %s", len(self.labels), len(self.labels.unique()), shards)

    @torch.no_grad()
    def __call__(self, trunk: torch.nn.Module) -> dict:
        t0 = time.perf_counter()
        was_training = trunk.training
        trunk.eval()
        feats = []
        for i in range(0, len(self.images), self.batch_size):
            x = normalise_input(self.images[i:i + self.batch_size], self.input_norm)
            with self.rt.autocast():
                feats.append(trunk(x).float().mean(dim=(2, 3)))  # conv5, global average pool
        trunk.train(was_training)
        top1 = knn_top1(torch.cat(feats), self.labels, self.k)
        return {"knn_top1": top1, "knn_seconds": time.perf_counter() - t0}

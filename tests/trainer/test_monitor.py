"""The online k-NN monitor: its classifier against a brute-force computation, and in a run."""

import os

import pytest
import torch

from spotart.trainer.config import build_config
from spotart.trainer.loop import train
from spotart.trainer.metrics import read_metrics
from spotart.trainer.monitor import knn_top1


def brute_knn_top1(features, labels, k, temperature):
    f = torch.nn.functional.normalize(features.double(), dim=1)
    hits = 0
    for i in range(len(f)):
        sims = sorted(((float(f[i] @ f[j]), j) for j in range(len(f)) if j != i), reverse=True)[:k]
        votes = {}
        for s, j in sims:
            votes[int(labels[j])] = votes.get(int(labels[j]), 0.0) + torch.tensor(s / temperature).exp().item()
        best = max(votes.values())
        pred = min(c for c, v in votes.items() if v == best)
        hits += pred == int(labels[i])
    return hits / len(f)


@pytest.mark.parametrize("seed,k,chunk", [(0, 20, 1024), (1, 3, 7), (2, 1, 5)])
def test_knn_matches_brute_force(seed, k, chunk):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (60,), generator=g)
    centres = torch.randn(4, 8, generator=g)
    feats = centres[labels] + 0.8 * torch.randn(60, 8, generator=g)  # clusters with overlap
    got = knn_top1(feats, labels, k=k, temperature=0.07, chunk=chunk)
    assert got == pytest.approx(brute_knn_top1(feats, labels, k, 0.07))
    assert 0.25 < got <= 1.0


def test_knn_leaves_each_image_out():
    # every image alone in its class: leave-one-out can never find its own label
    feats = torch.eye(5)
    assert knn_top1(feats, torch.arange(5), k=1) == 0.0
    assert knn_top1(torch.cat([feats, feats]), torch.cat([torch.arange(5)] * 2), k=1) == 1.0  # its twin does


def test_run_logs_knn_top1_every_n_steps(sample_shards, tmp_path):
    cfg = build_config("artifacts", "tiny", ["data=synthetic", "progress=false", "device=cpu", "batch_size=4",
                                             "steps=6", "log_every=3", f"monitor_shards={sample_shards}",
                                             "monitor_every=2"])
    train(cfg, str(tmp_path / "run"))
    knn = [r for r in read_metrics(os.path.join(tmp_path, "run", "metrics.jsonl")) if "knn_top1" in r]
    assert [r["step"] for r in knn] == [2, 4, 6]
    assert all(0.0 <= r["knn_top1"] <= 1.0 and r["knn_seconds"] > 0 for r in knn)
    with pytest.raises(ValueError, match="monitor_every"):
        build_config("artifacts", "tiny", ["monitor_every=0"])

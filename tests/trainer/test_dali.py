"""The trainer fed by the real DALI pipeline (CPU backend) over shards built in the test."""

import math
import os

import pytest

from spotart.trainer.config import build_config
from spotart.trainer.loop import train
from spotart.trainer.metrics import read_metrics


def dali_cfg(shards, *extra):
    return build_config("artifacts", "tiny", ["shards=" + shards, "device=cpu", "batch_size=8", "num_threads=1",
                                              "progress=false", "log_every=1", "ckpt_every=100", *extra])


def recs(run):
    return [r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if "event" not in r]


def test_dali_fed_training_crosses_epochs_and_resumes_exactly(sample_shards, tmp_path):
    # 96 images / batch 8 = 12 batches per epoch: 14 steps cross an epoch end, the cut at 7 does not
    args = ("steps=14", "ae_fraction=0.5")
    straight = train(dali_cfg(sample_shards, *args), str(tmp_path / "a"))
    assert straight["finished"]
    a = recs(tmp_path / "a")
    assert a[-1]["epoch"] == 1 and a[0]["epoch"] == 0
    assert all(math.isfinite(v) for r in a for v in r.values() if isinstance(v, float))
    assert 0 <= a[-1]["data_wait_frac"] <= 1
    train(dali_cfg(sample_shards, *args, "stop_after=7"), str(tmp_path / "b"))
    train(dali_cfg(sample_shards, *args), str(tmp_path / "b"), resume=True)
    b = recs(tmp_path / "b")
    assert [r["step"] for r in b] == list(range(1, 15))
    assert len(a) == len(b) == 14
    for ra, rb in zip(a, b, strict=True):
        for k in ("ae_mse", "loss_disc", "loss_repair", "mask_acc"):
            if k in ra:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), (ra["step"], k)
    with open(os.path.join(tmp_path, "a", "config.json")) as f:
        import json

        saved = json.load(f)
    assert saved["pipeline"]["params"] == {"mask_size": 4, "theta": 0.6}
    assert saved["pipeline"]["task"] == "artifacts" and saved["pipeline"]["image_size"] == 32

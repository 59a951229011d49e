"""On the GPU: bf16 autocast + channels_last (the defaults), fp16 with GradScaler, torch.compile,
and the DALI GPU pipeline feeding the trainer. Skipped without CUDA (tests/conftest.py)."""

import json
import math
import os

import pytest

from spotart.trainer.checkpoint import load_checkpoint
from spotart.trainer.config import build_config
from spotart.trainer.loop import train
from spotart.trainer.metrics import read_metrics

pytestmark = pytest.mark.gpu


def run_tiny(tmp_path, name, *extra):
    cfg = build_config("artifacts", "tiny", ["data=synthetic", "progress=false", "log_every=1", "steps=8",
                                             "ae_fraction=0.5", *extra])
    run = str(tmp_path / name)
    summary = train(cfg, run)
    recs = [r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if "event" not in r]
    return run, summary, recs


def finite(recs):
    return all(math.isfinite(v) for r in recs for v in r.values() if isinstance(v, float))


def test_bf16_channels_last_by_default(tmp_path):
    run, summary, recs = run_tiny(tmp_path, "bf16")
    saved = json.load(open(os.path.join(run, "config.json")))
    assert saved["precision"] == "bf16" and saved["channels_last"] is True and saved["device"].startswith("cuda")
    assert summary["finished"] and finite(recs)
    assert all(r["gpu_mem_gib"] > 0 for r in recs)


def test_fp16_uses_the_grad_scaler(tmp_path):
    run, summary, recs = run_tiny(tmp_path, "fp16", "precision=fp16")
    assert summary["finished"] and finite(recs)
    scaler = load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))["scaler"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler


def test_compiled_training_matches_shapes_and_stays_finite(tmp_path):
    _, summary, recs = run_tiny(tmp_path, "compiled", "compile=true")
    assert summary["finished"] and finite(recs)


def test_gpu_resume_is_exact_in_fp32(tmp_path):
    args = ("precision=fp32", "channels_last=false", "ckpt_every=100")
    _, _, a = run_tiny(tmp_path, "a", *args)
    run_tiny(tmp_path, "b", *args, "stop_after=4")
    cfg = build_config("artifacts", "tiny", ["data=synthetic", "progress=false", "log_every=1", "steps=8",
                                             "ae_fraction=0.5", *args])
    train(cfg, str(tmp_path / "b"), resume=True)
    b = [r for r in read_metrics(str(tmp_path / "b" / "metrics.jsonl")) if "event" not in r]
    for ra, rb in zip(a, b):
        for k in ("ae_mse", "loss_disc", "loss_repair"):
            if k in ra:
                # cuDNN may pick other algorithms after a restart: equal to float tolerance
                assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-5), (ra["step"], k)


def test_dali_gpu_pipeline_feeds_the_trainer(sample_shards, tmp_path):
    cfg = build_config("artifacts", "tiny", ["shards=" + sample_shards, "progress=false", "log_every=2", "steps=6",
                                             "ae_fraction=0.5", "batch_size=8"])
    run = str(tmp_path / "dali")
    assert train(cfg, run)["finished"]
    saved = json.load(open(os.path.join(run, "config.json")))
    assert saved["pipeline"]["device"] == "gpu" and saved["pipeline"]["dtype"] == "bfloat16"
    assert finite([r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if "event" not in r])

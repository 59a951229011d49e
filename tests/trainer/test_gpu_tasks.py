"""Every task trained for a few steps on the GPU, fed by the DALI GPU pipeline; `eval pretext`
and `eval linear` on the GPU through the CLI; DDP over NCCL with one rank (torchrun). Skipped
without CUDA (tests/conftest.py); tools/bench/gpu_session.sh runs them on the device machine."""

import json
import math
import os
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from spotart.tools.cli import main
from spotart.trainer.config import build_config
from spotart.trainer.loop import train
from spotart.trainer.metrics import read_metrics

pytestmark = pytest.mark.gpu

TASKS = ["artifacts", "context", "jigsaw", "inpainting", "supervised"]


def gpu_cfg(task, shards, *extra):
    sets = [f"shards={shards}", "device=cuda", "progress=false", "log_every=1", "steps=4", "batch_size=8",
            "num_threads=2", "ckpt_every=100", *extra]
    if task == "artifacts":
        sets.append("ae_fraction=0.5")  # both phases
    return build_config(task, "tiny", sets)


def records(run):
    return [r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if "event" not in r]


@pytest.mark.parametrize("task", TASKS)
def test_task_trains_on_the_gpu_pipeline(sample_shards, tmp_path, task):
    run = str(tmp_path / task)
    summary = train(gpu_cfg(task, sample_shards), run)
    assert summary["finished"] and summary["step"] == 4
    saved = json.load(open(os.path.join(run, "config.json")))
    assert saved["device"].startswith("cuda") and saved["precision"] == "bf16" and saved["channels_last"] is True
    assert saved["pipeline"]["device"] == "gpu" and saved["pipeline"]["dtype"] == "bfloat16"
    recs = records(run)
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert all(math.isfinite(v) for r in recs for v in r.values() if isinstance(v, float))
    assert all(r["gpu_mem_gib"] > 0 for r in recs)


def test_eval_pretext_and_linear_on_the_gpu(sample_shards, tmp_path):
    run, backbone = str(tmp_path / "run"), str(tmp_path / "context.pt")
    train(gpu_cfg("context", sample_shards), run)
    cli = CliRunner()
    r = cli.invoke(main, ["eval", "pretext", run, "--shards", sample_shards, "--max-batches", "2",
                          "--batch-size", "8", "--num-threads", "2", "--device", "cuda"])
    assert r.exit_code == 0, r.output
    res = json.load(open(os.path.join(run, "pretext_eval.json")))
    assert res["device"].startswith("cuda") and res["images"] == 16 and 0 <= res["metrics"]["acc"] <= 1
    r = cli.invoke(main, ["export-backbone", run, "--out", backbone])
    assert r.exit_code == 0, r.output
    for cache in ([], ["--cache-features"]):  # features recomputed each epoch (augmented), and cached
        out = str(tmp_path / f"lin{len(cache)}")
        r = cli.invoke(main, ["eval", "linear", backbone, "--train-shards", sample_shards, "--val-shards",
                              sample_shards, "--epochs", "1", "--batch-size", "16", "--num-threads", "2",
                              "--device", "cuda", "--dims", "256", "--out", out, *cache])
        assert r.exit_code == 0, r.output
        lin = json.load(open(out + ".json"))
        assert lin["device"].startswith("cuda") and lin["val_samples"] == 96
        assert [x["layer"] for x in lin["layers"]] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
        assert all(0 <= x["top1"] <= x["top5"] <= 1 for x in lin["layers"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_over_nccl_with_one_rank(sample_shards, tmp_path):
    """torchrun with one process on the GPU: NCCL process group, DDP-wrapped networks, each
    rank's DALI shard; the run ends with its rank digest, and resumes from its checkpoint."""
    run = str(tmp_path / "ddp")
    args = ["-m", "torch.distributed.run", "--nproc_per_node=1", f"--master_port={free_port()}",
            "-m", "spotart.tools.cli", "train", run, "--preset", "tiny", "--shards", sample_shards,
            "--device", "cuda", "--batch-size", "8", "--set", "ae_fraction=0.5", "--set", "log_every=1",
            "--set", "progress=false", "--set", "num_threads=2", "--set", "ckpt_every=100"]
    res = subprocess.run([sys.executable, *args, "--steps", "6", "--set", "stop_after=3"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run([sys.executable, *args, "--steps", "6", "--resume"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [json.loads(ln) for ln in open(os.path.join(run, "metrics.jsonl"))]
    end = lines[-1]
    assert end["event"] == "end" and end["finished"] and len(end["rank_digests"]) == 1
    assert [r["step"] for r in lines if "event" not in r] == [1, 2, 3, 4, 5, 6]
    saved = json.load(open(os.path.join(run, "config.json")))
    assert saved["world_size"] == 1 and saved["device"] == "cuda:0" and saved["pipeline"]["device"] == "gpu"

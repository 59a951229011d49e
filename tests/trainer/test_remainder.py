"""An epoch's last batch of one sample, on one rank or several: every task trains through it.

9 labelled images at batch 4 leave one sample for the last batch of each epoch; under two
ranks (DALI's shard_id/num_shards, the parts torchrun's ranks read) one rank's last batch holds
that one sample and the other's nothing."""

import math
import os

import pytest
import torch

from spotart.pipeline.loader import DaliLoader
from spotart.trainer.config import build_config
from spotart.trainer.data import pipeline_config
from spotart.trainer.loop import train
from spotart.trainer.metrics import read_metrics
from spotart.trainer.runtime import resolve_runtime

TASKS = ["artifacts", "context", "jigsaw", "inpainting", "supervised"]


@pytest.fixture(scope="module")
def nine(tmp_path_factory):
    from spotart.shards.build import build_shards
    from spotart.shards.sample import make_sample
    from spotart.shards.spec import ShardSpec

    d = tmp_path_factory.mktemp("nine")
    make_sample(str(d / "src"), count=9, size=40, seed=2)
    build_shards([str(d / "src")], str(d / "out"), ShardSpec(), progress=False)
    return str(d / "out")


def config(task, shards, *extra):
    args = ["shards=" + shards, "device=cpu", "batch_size=4", "num_threads=1", "progress=false", "log_every=1",
            "ckpt_every=100", "steps=6", *extra]
    if task == "artifacts":
        args.append("ae_fraction=0.5")
    return build_config(task, "tiny", args)


def finite_run(run, cfg):
    recs = [r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if "event" not in r]
    assert len(recs) == cfg.steps
    ckpt = torch.load(os.path.join(run, "checkpoints", "last.pt"), weights_only=True)
    assert all(torch.isfinite(v).all() for m in ckpt["models"].values() for v in m.values() if v.is_floating_point())
    return recs


@pytest.mark.parametrize("task", TASKS)
def test_a_last_batch_of_one_sample(task, nine, tmp_path):
    cfg = config(task, nine)
    run = str(tmp_path / "run")
    summary = train(cfg, run)
    assert summary["finished"] and summary["step"] == 6
    recs = finite_run(run, cfg)
    assert [r["epoch"] for r in recs] == [0, 0, 0, 1, 1, 1]  # 4 + 4 + 1 samples per epoch
    assert sum(r["skipped_steps"] for r in recs) == 0
    assert all(math.isfinite(v) for r in recs for k, v in r.items() if k.startswith("loss"))


@pytest.mark.parametrize("task", TASKS)
def test_each_ranks_share_of_two(task, nine, tmp_path):
    """Each rank's own part, as that rank's loader yields it: one rank ends its epochs on one
    sample, the other on an empty batch (the step is then skipped: alone, no rank has data)."""
    cfg = config(task, nine)
    rt = resolve_runtime(cfg)
    for rank in range(2):
        loader = DaliLoader(pipeline_config(cfg, rt, shard_id=rank, num_shards=2), rt.device)
        sizes = [b[next(iter(b))].shape[0] for b in loader]
        assert sorted(sizes) == ([0, 4] if rank == 0 else [1, 4])
        run = str(tmp_path / f"rank{rank}")
        assert train(cfg, run, loader=loader)["finished"]
        recs = finite_run(run, cfg)
        assert sum(r["skipped_steps"] for r in recs) == (3 if rank == 0 else 0)  # 2 batches an epoch: 3 epochs


def test_two_torchrun_ranks_train_through_a_one_and_an_empty_last_batch(nine, tmp_path):
    """DDP with gloo: rank 1's last batch holds one sample, rank 0's none. The step goes on with
    rank 1's sample (rank 0 adds zero gradients), BatchNorm statistics stay finite, and both ranks
    end with the same weights."""
    import json
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = str(tmp_path / "ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                          "-m", "spotart.tools.cli", "train", run, "--task", "context", "--preset", "tiny",
                          "--shards", nine, "--device", "cpu", "--steps", "4", "--batch-size", "4",
                          "--set", "num_threads=1", "--set", "log_every=1", "--set", "progress=false"],
                         env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [json.loads(ln) for ln in open(os.path.join(run, "metrics.jsonl"))]
    recs, end = lines[:-1], lines[-1]
    assert end["finished"] and len(set(end["rank_digests"])) == 1
    assert [r["skipped_steps"] for r in recs] == [0, 0, 0, 0]
    assert all(math.isfinite(r["loss"]) for r in recs)
    finite_run(run, config("context", nine, "steps=4"))

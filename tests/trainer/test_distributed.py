"""torchrun with two gloo processes on the CPU: DDP keeps both ranks' weights identical."""

import json
import os
import socket
import subprocess
import sys

import torch

from spotart.trainer.checkpoint import load_checkpoint


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run_ends_with_identical_weights(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["--preset", "tiny", "--synthetic", "--device", "cpu", "--steps", "6", "--batch-size", "4",
            "--set", "ae_fraction=0.5", "--set", "log_every=1", "--set", "progress=false"]
    run2 = str(tmp_path / "ddp")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}", "-m", "spotart.tools.cli", "train", run2, *args],
                         env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [json.loads(ln) for ln in open(os.path.join(run2, "metrics.jsonl"))]
    end = lines[-1]
    assert end["event"] == "end" and end["finished"]
    digests = end["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # parameters and BN statistics
    assert json.load(open(os.path.join(run2, "config.json")))["world_size"] == 2

    # the ranks did see different data (each its own synthetic seed): one process alone, with
    # rank 0's data only, ends elsewhere
    run1 = str(tmp_path / "single")
    res = subprocess.run([sys.executable, "-m", "spotart.tools.cli", "train", run1, *args], env=env,
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    w2 = load_checkpoint(os.path.join(run2, "checkpoints", "last.pt"))["models"]["disc"]
    w1 = load_checkpoint(os.path.join(run1, "checkpoints", "last.pt"))["models"]["disc"]
    assert not torch.equal(w1["trunk.conv1.conv.weight"], w2["trunk.conv1.conv.weight"])


def test_one_process_under_torchrun_runs_the_ddp_path(tmp_path):
    """torchrun with a single process still starts a process group and wraps the networks in
    DDP (how the NCCL path is tested on a one-GPU machine): the run records one rank digest."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = str(tmp_path / "one")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1",
                          f"--master_port={free_port()}", "-m", "spotart.tools.cli", "train", run, "--preset", "tiny",
                          "--synthetic", "--device", "cpu", "--steps", "3", "--batch-size", "4",
                          "--set", "ae_fraction=0.5", "--set", "progress=false"],
                         env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    end = [json.loads(ln) for ln in open(os.path.join(run, "metrics.jsonl"))][-1]
    assert end["event"] == "end" and end["finished"] and len(end["rank_digests"]) == 1

"""Helpers and the longer scenarios of tools/bench/faults.py (see its docstring)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time


# ---- helpers -------------------------------------------------------------------------------------

def cli() -> list[str]:
    return [sys.executable, "-m", "spotart.tools.cli"]


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TQDM_DISABLE="1")


def run_cli(args, timeout=None) -> subprocess.CompletedProcess:
    return subprocess.run([*cli(), *args], capture_output=True, text=True, env=env(), timeout=timeout)


def tail(text: str, n: int = 1) -> str:
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def tiny_train_args(batch_size: int) -> list[str]:
    return ["--preset", "tiny", "--device", "cpu", "--set", f"batch_size={batch_size}", "--set", "progress=false",
            "--set", "num_threads=2"]


def read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def last_step(run: str) -> int:
    recs = [r for r in read_jsonl(os.path.join(run, "metrics.jsonl")) if "event" not in r]
    return recs[-1]["step"] if recs else 0


def wait_for(pred, timeout: float, every: float = 0.2) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(every)
    return False


def digest_dir(d: str) -> dict:
    import hashlib

    return {n: hashlib.sha256(open(os.path.join(d, n), "rb").read()).hexdigest() for n in sorted(os.listdir(d))
            if n.endswith((".tar", ".idx")) or n in ("manifest.json", "skipped.jsonl", "duplicates.jsonl")}


def damage_samples(shards: str, count: int, seed: int) -> list[dict]:
    """Damage `count` random images in place, four ways in turn: "zeroed" (every byte 0, a
    flaky copy's hole), "header" (the first 256 bytes random: start marker and tables gone),
    "tables" (256 random bytes after the start marker), "truncated" (the second half zeroed:
    the end of the scan and the end marker gone)."""
    from spotart.pipeline.badsamples import jpg_members

    rng, out = random.Random(seed), []
    for i, (shard, off, size, key) in enumerate(rng.sample(jpg_members(shards), count)):
        kind = ("zeroed", "header", "tables", "truncated")[i % 4]
        start, data = {"zeroed": (0, b"\0" * size), "header": (0, rng.randbytes(min(256, size))),
                       "tables": (3, rng.randbytes(min(256, size - 3))),
                       "truncated": (size // 2, b"\0" * (size - size // 2))}[kind]
        with open(os.path.join(shards, shard), "r+b") as f:
            f.seek(off + start)
            f.write(data)
        out.append({"shard": shard, "key": key, "kind": kind})
    return out


# ---- a full disk ---------------------------------------------------------------------------------

def _fill(mnt: str, leave: int) -> str:
    """A filler file taking all but `leave` bytes of the mount."""
    path = os.path.join(mnt, "filler")
    free = shutil.disk_usage(mnt).free
    with open(path, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return path


def disk(a) -> dict:
    """A tmpfs mount (root) filled up during build-shards and during training."""
    mnt = os.path.join(a.work, "mnt")
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", mnt], check=True)
    try:
        return {"fault": "a disk that fills (96 MiB tmpfs, a filler file)", "build": _disk_build(a, mnt),
                "train": _disk_train(a, mnt)}
    finally:
        subprocess.run(["umount", mnt], check=False)


def _disk_build(a, mnt) -> dict:
    straight = os.path.join(a.work, "straight")
    assert run_cli(["build-shards", a.source, "--out", straight, "--no-progress"]).returncode == 0
    size = sum(os.path.getsize(os.path.join(straight, n)) for n in os.listdir(straight) if n.endswith(".tar"))
    out = os.path.join(mnt, "shards")
    filler = _fill(mnt, size // 2)
    first = run_cli(["build-shards", a.source, "--out", out, "--no-progress"])
    state = {"shards_kept": len([n for n in os.listdir(out) if n.endswith(".tar")]) if os.path.isdir(out) else 0,
             "leftover_tmp_files": [n for n in os.listdir(out) if n.endswith(".tmp")] if os.path.isdir(out) else []}
    os.remove(filler)
    second = run_cli(["build-shards", a.source, "--out", out, "--no-progress"])
    return {"shards_bytes": size, "free_at_start": size // 2, "first_exit": first.returncode,
            "user_saw": tail(first.stderr, 1), **state, "after_freeing_exit": second.returncode,
            "after_freeing": tail(second.stdout, 1), "byte_identical": digest_dir(out) == digest_dir(straight)}


def _disk_train(a, mnt) -> dict:
    shards = os.path.join(a.work, "straight")  # the build above: 5,050 images
    args = [*tiny_train_args(a.batch_size), "--shards", shards, "--set", "log_every=5", "--set", "ckpt_every=20"]
    probe = os.path.join(a.work, "probe")
    assert run_cli(["train", probe, *args, "--steps", "1"]).returncode == 0
    ckpt = os.path.getsize(os.path.join(probe, "checkpoints", "last.pt"))
    # periodic checkpoints find the disk full; space is freed while the run goes on
    run = os.path.join(mnt, "run")
    filler = _fill(mnt, int(1.5 * ckpt) + (1 << 20))
    console = os.path.join(a.work, "console.txt")  # on a disk with room: what the user saw
    with open(console, "w") as out:
        proc = subprocess.Popen([*cli(), "train", run, *args, "--steps", "120"], stdout=out, stderr=out, text=True,
                                env=env())
        saw = wait_for(lambda: "not written" in open(console).read() or proc.poll() is not None, timeout=900)
        os.remove(filler)
        proc.wait()
    lines = [ln for ln in open(console).read().splitlines() if "not written" in ln]
    periodic = {"exit": proc.returncode, "checkpoints_not_written": len(lines),
                "user_saw": lines[0].split(": ", 1)[-1] if saw and lines else tail(open(console).read(), 2),
                "final_step": last_step(run), "last_pt_step": _step(run)}
    # the final checkpoint finds the disk full: the run says so, --resume finishes it
    shutil.rmtree(run)
    filler = _fill(mnt, int(1.5 * ckpt) + (1 << 20))
    first = run_cli(["train", run, *args, "--steps", "60"])  # the third checkpoint, the last, finds no room
    kept = _step(run)
    os.remove(filler)
    second = run_cli(["train", run, "--resume"])
    final = {"exit": first.returncode, "user_saw": tail(first.stderr, 1), "last_pt_step": kept,
             "resume_exit": second.returncode, "resumed_to": _step(run)}
    return {"checkpoint_bytes": ckpt, "periodic": periodic, "final": final}


def _step(run):
    import torch

    p = os.path.join(run, "checkpoints", "last.pt")
    return int(torch.load(p, weights_only=True)["step"]) if os.path.exists(p) else None


# ---- a last batch of one sample ------------------------------------------------------------------

def remainder(a) -> dict:
    """Every task over 4 x 16 + 1 images at batch 16: one rank (a last batch of 1) and two torchrun
    ranks (one ends on 1 sample, the other on none)."""
    from spotart.shards.build import build_shards
    from spotart.shards.sample import make_sample
    from spotart.shards.spec import ShardSpec

    src, shards = os.path.join(a.work, "src"), os.path.join(a.work, "shards")
    make_sample(src, count=65, size=48, seed=3)
    build_shards([src], shards, ShardSpec(), progress=False)
    out = {}
    for task in ("artifacts", "context", "jigsaw", "inpainting", "supervised"):
        row = {}
        for ranks in (1, 2):
            run = os.path.join(a.work, f"{task}-{ranks}")
            launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
                      f"--master_port={29500 + ranks}", "-m", "spotart.tools.cli"] if ranks > 1 else cli()
            res = subprocess.run([*launch, "train", run, "--task", task, *tiny_train_args(16), "--shards", shards,
                                  "--steps", "10", "--set", "log_every=1"], capture_output=True, text=True, env=env())
            recs = [r for r in read_jsonl(os.path.join(run, "metrics.jsonl")) if "event" not in r]
            row[f"{ranks}_rank"] = {"exit": res.returncode, "steps": len(recs),
                                    "skipped_steps": sum(r.get("skipped_steps", 0) for r in recs),
                                    "error": tail(res.stderr, 1) if res.returncode else None}
        out[task] = row
    return {"fault": "a last batch of one sample (65 images, batch 16)", "tasks": out}


# ---- forced NaN ----------------------------------------------------------------------------------

def nan(a) -> dict:
    """The artifacts task on real shards with its losses made NaN at steps 31-33 (then finite
    again) and from step 121 on (a divergence): what the run does."""
    import torch

    from spotart.trainer.config import build_config
    from spotart.trainer.loop import train
    from spotart.trainer.tasks import get_task

    task, calls = get_task("artifacts"), [0]
    real = task.train_step

    def poisoned(runners, batch, phase, cfg):
        calls[0] += 1
        losses, logs = real(runners, batch, phase, cfg)
        if 31 <= calls[0] <= 33 or calls[0] >= 121:
            losses = {n: v * float("nan") for n, v in losses.items()}
        return losses, logs

    task.train_step = poisoned
    run = os.path.join(a.work, "run")
    cfg = build_config("artifacts", "tiny", ["shards=" + a.shards, "device=cpu", f"batch_size={a.batch_size}",
                                             "progress=false", "num_threads=2", "steps=400", "ckpt_every=120",
                                             "keep_checkpoints=5", "log_every=10"])
    try:
        summary = train(cfg, run)
    finally:
        task.train_step = real
    recs = [r for r in read_jsonl(os.path.join(run, "metrics.jsonl")) if "event" not in r]
    last = torch.load(os.path.join(run, "checkpoints", "last.pt"), weights_only=True)
    good = torch.load(os.path.join(run, "checkpoints", "step_00000120.pt"), weights_only=True)
    same = all(torch.equal(v, good["models"][n][k]) for n in last["models"] for k, v in last["models"][n].items())
    tensors = [v for m in last["models"].values() for v in m.values() if v.is_floating_point()]
    nonfinite = sum(not bool(torch.isfinite(v).all()) for v in tensors)
    # .get: the same scenario also runs against the code before issue 12 (no halts, no counts)
    return {"fault": "losses NaN at steps 31-33, then from step 121 on", "stopped_at": summary["step"],
            "finished": summary["finished"], "skipped_steps": sum(r.get("skipped_steps", 0) for r in recs),
            "nonfinite_weight_tensors": f"{nonfinite} of {len(tensors)}", "last_pt_equals_step_120": bool(same),
            "nan_loss_records": sum(1 for r in recs if any(v != v for v in r.values() if isinstance(v, float))),
            "user_saw": summary.get("halted")}


# ---- the good path's price -----------------------------------------------------------------------

def cost(a) -> dict:
    """What reliability costs when nothing goes wrong, against the code before it, in the same
    run, rounds interleaved: the loader (guard ops, sample origins, a checkpoint per batch) and the
    training step (the non-finite check, buffer snapshot, fused Adam)."""
    from costlib import loader_rates, step_times

    loader = [loader_rates(a.shards, bs, rounds=7, batches=40 if bs == 64 else 15) for bs in (64, 256)]
    if a.shards224:
        loader.append(loader_rates(a.shards224, 64, rounds=7, batches=30, image_size=224))
    return {"fault": "none (the good path)", "loader": loader,
            "step": {p: step_times(p, 32, rounds=7, steps=3 if p == "64px" else 10) for p in ("tiny", "64px")}}


# ---- DALI's decoder on a damaged JPEG ------------------------------------------------------------

_CRASH = """
import random, sys, tarfile
import numpy as np
import nvidia.dali.fn as fn, nvidia.dali.types as types
from nvidia.dali import pipeline_def
from spotart.pipeline.build import guard
tar, seed, guarded = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
with tarfile.open(tar) as tf:
    jpgs = [bytearray(tf.extractfile(m).read()) for m in tf if m.name.endswith(".jpg")][:64]
rng = random.Random(seed)
jpgs[31][3:259] = rng.randbytes(256)  # the tables after the start marker
batch = [np.frombuffer(bytes(j), np.uint8) for j in jpgs]

@pipeline_def(batch_size=64, num_threads=2, device_id=None, exec_dynamic=True)
def pipe():
    j = fn.external_source(source=lambda: batch, batch=True, dtype=types.UINT8)
    return fn.decoders.image_random_crop(guard(j) if guarded else j, device="cpu", output_type=types.RGB)

p = pipe()
p.build()
try:
    p.run()
    print("decoded")
except RuntimeError:
    print("error")
"""


def decoder_crash(a) -> dict:
    """One JPEG with damaged tables in a batch of 64 good ones, decoded by DALI's CPU decoder
    (the pipeline's settings: exec_dynamic, 2 threads) in a child process, `kills` times each:
    straight into the decoder, and behind the pipeline's guard (header parsed first)."""
    tar = sorted(glob_tars(a.shards))[-1]
    out = {}
    for guarded in (False, True):
        ends = []
        for seed in range(a.kills):
            res = subprocess.run([sys.executable, "-c", _CRASH, tar, str(seed), str(int(guarded))],
                                 capture_output=True, text=True, env=env())
            ends.append("SIGSEGV" if res.returncode == -11 else (res.stdout.strip() or f"exit {res.returncode}"))
        name = "behind the guard" if guarded else "straight into the decoder"
        out[name] = {k: ends.count(k) for k in sorted(set(ends))}
    return {"fault": "a JPEG with damaged tables in a batch of 64 (DALI 2.4 CPU decoder)", "trials": a.kills, **out}


def glob_tars(shards: str) -> list[str]:
    import glob

    return glob.glob(os.path.join(shards, "*.tar"))

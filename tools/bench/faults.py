"""Fault injection: each fault the reliability work (issue 12) must survive, injected for real,
with what became of the run. Every subcommand prints one JSON object (and appends it to --json).

    python tools/bench/faults.py bad-samples --shards DIR [--count 20]   # bad bytes, a full epoch
    python tools/bench/faults.py kill-build  --source ARCHIVE [--kills 10] # kill -9, resume
    python tools/bench/faults.py kill-train  --shards DIR [--kills 10]
    python tools/bench/faults.py disk                                    # a full tmpfs (root)
    python tools/bench/faults.py remainder                               # a last batch of one
    python tools/bench/faults.py nan         --shards DIR                # forced NaN losses
    python tools/bench/faults.py cost        --shards DIR [--shards224 DIR]  # the good path's price
    python tools/bench/faults.py decoder-crash --shards DIR [--kills 10]  # DALI's decoder on damage

The shard set given is copied before anything is damaged (to --work, default a temporary
directory). Training runs use the `tiny` preset on DALI's CPU backend, so they fit a 2-core
machine; the faults do not depend on the model's size. The same subcommands measure older code
with a checkout of it first on PYTHONPATH (`git archive REV | tar -x -C OLD/spotart`,
`PYTHONPATH=OLD python tools/bench/faults.py ...`): docs/benchmarks.md's "before" rows."""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from faultlib import (cli, damage_samples, digest_dir, env, last_step, read_jsonl, run_cli,  # noqa: E402
                      tail, tiny_train_args)


def bad_samples(a) -> dict:
    """`count` samples of a real shard set damaged four ways, then: a run over one epoch with the
    default limit (it stops), --resume with a higher limit to the end of the epoch, the repair;
    and one epoch of the loader alone over the damaged and the clean set (what finding costs)."""
    shards = os.path.join(a.work, "shards")
    shutil.copytree(a.shards, shards)
    damaged = damage_samples(shards, a.count, a.seed)
    kinds = sorted({d["kind"] for d in damaged})
    with open(os.path.join(shards, "manifest.json")) as f:
        total = json.load(f)["num_samples"]
    epoch = -(-total // a.batch_size)
    loader = {"clean_s": loader_epoch(a.shards, a.batch_size), "damaged_s": loader_epoch(shards, a.batch_size)}
    run = os.path.join(a.work, "run")
    t0 = time.perf_counter()
    first = run_cli(["train", run, "--shards", shards, *tiny_train_args(a.batch_size), "--steps", str(epoch),
                     "--set", "log_every=1"])
    t1 = time.perf_counter()
    halted = {"exit": first.returncode, "at_step": last_step(run), "checkpoint": _ckpt_step(run),
              "seconds": round(t1 - t0, 1), "user_saw": tail(first.stderr, 1)}
    second = run_cli(["train", run, "--resume", "--max-bad-samples", str(a.count + 10)])
    resumed = {"exit": second.returncode, "at_step": last_step(run), "seconds": round(time.perf_counter() - t1, 1),
               "user_saw": tail(second.stderr, 1)}
    lines = read_jsonl(os.path.join(run, "skipped.jsonl"))
    found = {(ln["shard"], ln["key"]) for ln in lines}
    recs = [r for r in read_jsonl(os.path.join(run, "metrics.jsonl")) if "event" not in r]
    repair = run_cli(["verify-shards", shards, "--repair"])
    after = run_cli(["verify-shards", shards])
    return {
        "fault": f"bad bytes in {a.count} of {total} samples", "epoch_steps": epoch, "batch_size": a.batch_size,
        "damaged": {k: sum(d["kind"] == k for d in damaged) for k in kinds},
        "left_out": {k: sum((d["shard"], d["key"]) in found for d in damaged if d["kind"] == k) for k in kinds},
        "first_run": halted, "resumed_run": resumed, "kept": total - len(lines),
        "steps_lost": halted["at_step"] - (halted["checkpoint"] or 0), "metrics_bad_samples": recs[-1].get("bad_samples") if recs else None,
        "loader_epoch": loader,
        "repair": {"exit": repair.returncode, "summary": tail(repair.stdout, 1), "verify_after": tail(after.stdout, 1)},
    }


def loader_epoch(shards: str, batch_size: int) -> float:
    """Seconds for one epoch of the training loader (tiny preset's pipeline) over `shards`."""
    code = ("import time\nfrom spotart.pipeline.config import PipelineConfig\n"
            "from spotart.pipeline.loader import DaliLoader\n"
            f"c = PipelineConfig(shards={shards!r}, task='artifacts', batch_size={batch_size}, image_size=32, "
            "device='cpu', num_threads=2)\n"
            "t = time.perf_counter(); n = sum(b['image'].shape[0] for b in DaliLoader(c))\n"
            "print(time.perf_counter() - t)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env())
    return round(float(res.stdout.strip().splitlines()[-1]), 1) if res.returncode == 0 else None


def kill_build(a) -> dict:
    """A straight build, then one killed with SIGKILL at `kills` random points of its progress
    (images converted, then shards written: polled from the catalog and the directory), resumed
    each time; the result must be byte-identical to the straight build."""
    straight = os.path.join(a.work, "straight")
    build = ["build-shards", a.source, "--max-count", "2000", "--no-progress"]
    t0 = time.perf_counter()
    assert run_cli([*build, "--out", straight]).returncode == 0
    wall = time.perf_counter() - t0
    with open(os.path.join(straight, "manifest.json")) as f:
        m = json.load(f)
    images, shards = m["listed"], len(m["shards"])
    out, rng, kills = os.path.join(a.work, "killed"), random.Random(a.seed), []

    def progress():  # 0..0.8 converting, 0.8..1 writing
        tars = len(glob.glob(os.path.join(out, "*.tar")))
        return 0.8 + 0.2 * tars / shards if tars else 0.8 * (_staged(out) or 0) / images

    for target in sorted(rng.uniform(0.02, 0.98) for _ in range(a.kills)):
        t0 = time.perf_counter()
        proc = subprocess.Popen([*cli(), *build, "--out", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env())
        while proc.poll() is None and progress() < target:
            time.sleep(0.05)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.communicate()
        kills.append({"target": round(target, 3), "after_s": round(time.perf_counter() - t0, 2), "killed": killed,
                      "progress": round(progress(), 3), "shards_on_disk": len(glob.glob(os.path.join(out, "*.tar")))})
    final = run_cli([*build, "--out", out])
    return {"fault": f"kill -9 at {a.kills} random moments of build-shards", "source": a.source,
            "straight_s": round(wall, 1), "kills": kills, "final_exit": final.returncode,
            "final": tail(final.stdout, 1),
            "byte_identical": digest_dir(out) == digest_dir(straight)}


def _staged(out: str) -> int | None:
    try:
        from spotart.shards import catalog as cat

        c = cat.Catalog(os.path.join(out, "catalog.lmdb"), readonly=True)
        try:
            return c.count(c.staged)
        finally:
            c.close()
    except Exception:  # noqa: BLE001 - not there yet, or mid-creation
        return None


def kill_train(a) -> dict:
    """A straight run, then one killed with SIGKILL at `kills` random moments (a random step, then
    a random fraction of a step's time, so some kills land inside a checkpoint write) and resumed
    each time; the two must end with the same weights (CPU: bitwise)."""
    args = [*tiny_train_args(a.batch_size), "--shards", a.shards, "--steps", str(a.steps),
            "--set", f"ckpt_every={a.ckpt_every}", "--set", "log_every=1"]
    straight = os.path.join(a.work, "straight")
    t0 = time.perf_counter()
    assert run_cli(["train", straight, *args]).returncode == 0
    step_s = (time.perf_counter() - t0) / a.steps
    run, rng, kills = os.path.join(a.work, "killed"), random.Random(a.seed), []
    metrics = os.path.join(run, "metrics.jsonl")

    def done():
        return max([r["step"] for r in read_jsonl(metrics) if "event" not in r] or [0])

    for target in sorted(rng.sample(range(1, a.steps), a.kills)):
        resume = ["--resume"] if os.path.exists(os.path.join(run, "checkpoints", "last.pt")) else []
        proc = subprocess.Popen([*cli(), "train", run, *args, *resume], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env())
        while proc.poll() is None and done() < target:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, step_s))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.communicate()
        ckpt = _ckpt_step(run)
        kills.append({"target_step": target, "steps_done": done(), "checkpoint": ckpt,
                      "steps_lost": done() - ckpt if isinstance(ckpt, int) else None})
    final = run_cli(["train", run, *args, "--resume"])
    return {"fault": f"kill -9 at {a.kills} random moments of a training run", "steps": a.steps,
            "ckpt_every": a.ckpt_every, "step_s": round(step_s, 3), "kills": kills, "final_exit": final.returncode,
            "steps_recomputed": sum(k["steps_lost"] or 0 for k in kills),
            "same_weights": _weights(straight) == _weights(run)}


def _ckpt_step(run):
    import torch

    p = os.path.join(run, "checkpoints", "last.pt")
    try:
        return int(torch.load(p, weights_only=True)["step"]) if os.path.exists(p) else None
    except Exception:  # noqa: BLE001 - the kill may have come mid-write: what --resume would do next
        return "unreadable"


def _weights(run) -> str:
    import torch

    ckpt = torch.load(os.path.join(run, "checkpoints", "last.pt"), weights_only=True)
    h = hashlib.sha256()
    for name in sorted(ckpt["models"]):
        for k, v in sorted(ckpt["models"][name].items()):
            h.update(k.encode() + v.cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def main():
    from faultlib import cost, decoder_crash, disk, nan, remainder  # the longer scenarios

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fault", choices=["bad-samples", "kill-build", "kill-train", "disk", "remainder", "nan", "cost",
                                      "decoder-crash"])
    ap.add_argument("--shards", default="/work/data/tin/train")
    ap.add_argument("--shards224", default=None, help="cost: also a shard set of 224 px-class JPEGs")
    ap.add_argument("--source", default="/work/shared/datasets/tiny-imagenet-a/val.tar.gz")
    ap.add_argument("--work", default=None, help="scratch directory (default: a new temporary one, removed)")
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument("--ckpt-every", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    scratch = a.work is None
    a.work = a.work or tempfile.mkdtemp(prefix="spotart-faults-")
    os.makedirs(a.work, exist_ok=True)
    fn = {"bad-samples": bad_samples, "kill-build": kill_build, "kill-train": kill_train, "disk": disk,
          "remainder": remainder, "nan": nan, "cost": cost, "decoder-crash": decoder_crash}[a.fault]
    try:
        out = {"fault_id": a.fault, "date": time.strftime("%Y-%m-%d"), "load": os.getloadavg()[0], **fn(a)}
    finally:
        if scratch:
            shutil.rmtree(a.work, ignore_errors=True)
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()

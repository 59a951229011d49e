"""Benchmark: phase-2 training images/s of the artifacts task (repair + discriminator steps, the
expensive phase) fed by the DALI pipeline versus fed by replayed batches already on the device
(recorded from the same pipeline first, so the step's inputs are identical), in the same run. The difference is what the input pipeline costs the trainer; `data_wait_frac`
is the share of step time the loop spent waiting in next(loader).

Runs the real training loop (`spotart.trainer.loop.train`) with ae_fraction=0 (phase 2 only, a
random autoencoder: the cost per step is the same), `warmup` steps then a measured window of
`steps` steps (one device sync per window). On a GPU: bf16 autocast and channels_last (the
trainer's defaults), with and without torch.compile.

    python tools/bench/train.py --shards DIR [--preset 64px] [--steps 50] [--warmup 20]
                                [--batch-size N] [--compile off|on|both] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile

import torch

from spotart.pipeline.loader import DaliLoader
from spotart.trainer.config import PRESETS, build_config
from spotart.trainer.data import pipeline_config
from spotart.trainer.loop import train
from spotart.trainer.metrics import read_metrics
from spotart.trainer.runtime import resolve_runtime
from spotart.trainer.synthetic import ReplayBatches


def measure(preset: str, source: str, shards: str | None, steps: int, warmup: int, batch_size: int,
            compile_: bool, device: str, num_threads: int, precision: str, cpu_threads: int = 0) -> dict:
    windows = max(1, math.ceil(warmup / steps))  # warm-up windows of `steps` steps before the measured one
    sets = [f"steps={(windows + 1) * steps}", f"log_every={steps}", "ckpt_every=1000000000", "ae_fraction=0",
            f"batch_size={batch_size}", f"compile={str(compile_).lower()}", f"device={device}", "progress=false",
            f"num_threads={num_threads}", f"precision={precision}", f"cpu_threads={cpu_threads}"]
    cfg = build_config("artifacts", preset, sets + [f"shards={shards}"])
    loader = None
    if source == "replay":  # 8 batches of the real pipeline, kept on the device and cycled
        rt = resolve_runtime(cfg)
        loader = ReplayBatches.record(DaliLoader(pipeline_config(cfg, rt), rt.device), 8)
    with tempfile.TemporaryDirectory() as run:
        train(cfg, run, loader=loader)
        recs = [r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if "event" not in r]
        with open(os.path.join(run, "config.json")) as f:
            resolved = json.load(f)
    last = recs[-1]
    return {"source": source, "compile": compile_, "img_per_s": last["img_per_s"], "step_ms": last["step_ms"],
            "data_wait_frac": last["data_wait_frac"], "gpu_mem_gib": last.get("gpu_mem_gib"),
            "precision": resolved["precision"], "channels_last": resolved["channels_last"],
            "device": resolved["device"], "batch_size": batch_size, "measured_steps": steps}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", required=True, help="shard directory (spotart build-shards)")
    ap.add_argument("--preset", default="64px", choices=sorted(PRESETS))
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--steps", type=int, default=50, help="measured steps per configuration")
    ap.add_argument("--warmup", type=int, default=20, help="steps before the measured window (compile, cuDNN autotune)")
    ap.add_argument("--batch-size", type=int, default=None, help="per step; default: the preset's on GPU, 32 on CPU")
    ap.add_argument("--compile", default=None, choices=["off", "on", "both"], help="default: both on GPU, off on CPU")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    ap.add_argument("--num-threads", type=int, default=None, help="DALI CPU threads (default: the preset's)")
    ap.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    gpu = args.device != "cpu" and torch.cuda.is_available()
    device = args.device if args.device != "auto" else ("cuda" if gpu else "cpu")
    batch = args.batch_size or (PRESETS[args.preset]["batch_size"] if gpu else 32)
    threads = args.num_threads or PRESETS[args.preset]["num_threads"]
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile or ("both" if gpu else "off")]
    results = []
    for compile_ in modes:
        for source in ("replay", "dali"):
            r = measure(args.preset, source, args.shards, args.steps, args.warmup, batch, compile_, device,
                        threads, args.precision, args.cpu_threads)
            results.append(r)
            print(f"{source:9s} compile={str(compile_):5s} {r['img_per_s']:9.1f} img/s  {r['step_ms']:8.2f} ms/step  "
                  f"data wait {100 * r['data_wait_frac']:5.1f}%  "
                  + (f"peak {r['gpu_mem_gib']:.2f} GiB" if r["gpu_mem_gib"] is not None else ""), flush=True)
    summary = []
    for compile_ in modes:
        syn = next(r for r in results if r["source"] == "replay" and r["compile"] == compile_)
        dali = next(r for r in results if r["source"] == "dali" and r["compile"] == compile_)
        ratio = dali["img_per_s"] / syn["img_per_s"]
        cost_us = 1e6 * (1 / dali["img_per_s"] - 1 / syn["img_per_s"])
        summary.append({"compile": compile_, "dali_over_replay": ratio, "pipeline_cost_us_per_image": cost_us})
        print(f"compile={compile_}: DALI-fed / replayed = {ratio:.3f}; the pipeline costs the trainer "
              f"{cost_us:.1f} us per image; data wait {100 * dali['data_wait_frac']:.1f}% of step time")
    out = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "preset": args.preset, "num_threads": threads, "device": results[0]["device"],
           "device_name": torch.cuda.get_device_name() if gpu else platform.processor() or platform.machine(),
           "torch": torch.__version__, "cpu_count": os.cpu_count(), "results": results, "summary": summary}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()

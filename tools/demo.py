"""The main job on a built-in default: sample collection -> shards -> `tiny` artifact-spotting
training (both phases) through the DALI CPU pipeline -> exported backbone. No GPU, no data."""

from __future__ import annotations

import json
import logging
import os
import time

log = logging.getLogger(__name__)


def run_demo(out: str, count: int = 512, steps: int = 300, overrides=(), echo=print) -> dict:
    from spotart.shards.build import build_shards
    from spotart.shards.sample import make_sample
    from spotart.shards.spec import ShardSpec
    from spotart.trainer.config import build_config
    from spotart.trainer.export import export_backbone
    from spotart.trainer.loop import train

    t0 = time.perf_counter()
    images, shards, run = (os.path.join(out, n) for n in ("images", "shards", "run"))
    if os.path.exists(os.path.join(run, "checkpoints", "last.pt")):
        raise FileExistsError(f"{out} already holds a demo run; remove it or pass another --out")
    echo(f"[1/4] sample collection: {count} procedural images -> {images}")
    make_sample(images, count=count, size=48, seed=0)
    echo(f"[2/4] shards -> {shards}")
    res = build_shards([images], shards, ShardSpec(max_count=128), progress=False)
    echo("      " + res.summary())
    cfg = build_config("artifacts", "tiny", [f"steps={steps}", "device=cpu", *overrides, f"shards={shards}"])
    echo(f"[3/4] training `tiny` artifact spotting ({cfg.steps} steps, both phases) on DALI's CPU backend -> {run}")
    summary = train(cfg, run)
    backbone = os.path.join(out, "backbone.pt")
    echo(f"[4/4] exporting the discriminator's trunk -> {backbone}")
    export_backbone(run, backbone)
    last = {}
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "img_per_s" in rec:  # a training record, not the closing one
                last = rec
    echo(f"done in {time.perf_counter() - t0:.0f} s")
    echo(f"  run:        {run}")
    echo(f"  metrics:    {os.path.join(run, 'metrics.jsonl')}")
    echo(f"  checkpoint: {os.path.join(run, 'checkpoints', 'last.pt')}")
    echo(f"  backbone:   {backbone}  (torch.load(..., weights_only=True))")
    shown = {k: v for k, v in last.items() if isinstance(v, (int, float)) and k not in ("epoch", "lr")}
    echo("  last metrics: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    return {"run": run, "backbone": backbone, "shards": shards, "summary": summary}

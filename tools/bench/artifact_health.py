"""Pretext health of artifacts runs on held-out shards (trainer/health.py): held-out mask ROC-AUC,
real/fake accuracy and AUC, autoencoder PSNR, how far the repair moved the dropped pixels.

    python tools/bench/artifact_health.py RUN [RUN ...] --shards /work/data/tin/val
Prints one JSON line per run (and appends it to RUN/health.jsonl)."""

from __future__ import annotations

import argparse
import json
import os

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--shards", required=True, help="held-out shards (spotart build-shards)")
    ap.add_argument("--max-images", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--probe-steps", type=int, default=0,
                    help="also train a fresh C for this many steps against the run's frozen E, D, R")
    ap.add_argument("--probe-train-shards", default=None, help="shards for the fresh-C probe's training")
    ap.add_argument("--probe-mask-only", action="store_true", help="fresh-C probe without the real/fake loss")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from spotart.trainer.health import artifact_health, fresh_disc_probe

    for run in args.runs:
        r = artifact_health(run, args.shards, max_images=args.max_images, batch_size=args.batch_size, seed=args.seed)
        line = json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
        print(line, flush=True)
        with open(os.path.join(run, "health.jsonl"), "a") as f:
            f.write(line + "\n")
        if args.probe_steps:
            r = fresh_disc_probe(run, args.probe_train_shards, args.shards, steps=args.probe_steps,
                                 with_cls=not args.probe_mask_only, max_images=args.max_images, seed=args.seed)
            line = json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
            print(line, flush=True)
            with open(os.path.join(run, "health.jsonl"), "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()

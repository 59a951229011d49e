"""Diagnostic: does a trunk probe badly because its BatchNorm statistics come from its pretext
inputs (patches, tiles, colour-dropped or standardised images) rather than from the images the
probe feeds it? Re-estimates every BatchNorm's running mean and variance on the probe's own
images (cumulative average over N training-mode forward passes, no weights change) and writes a
new backbone file to probe with `spotart eval linear` as usual. Apply it to every row of a
comparison, the random trunk included, or to none.

    python tools/bench/bn_recalibrate.py BACKBONE.pt --shards TRAIN --image-size 128 --out OUT.pt
"""

from __future__ import annotations

import argparse
import os

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("backbone")
    ap.add_argument("--shards", required=True, help="the probe's training shards")
    ap.add_argument("--image-size", type=int, required=True)
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from types import SimpleNamespace

    from spotart.trainer.eval_linear import open_backbone
    from spotart.trainer.probe import normalise_input, probe_loader
    from spotart.trainer.runtime import resolve_runtime

    rt = resolve_runtime(SimpleNamespace(device="auto", precision="fp32", channels_last=None))
    trunk, info = open_backbone(args.backbone)
    trunk.to(rt.device)
    norms = [m for m in trunk.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
    trunk.train()
    loader = probe_loader(args.shards, rt, image_size=args.image_size, batch_size=args.batch_size, training=False)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i == args.batches:
                break
            trunk.features(normalise_input(batch["image"], info.get("input_norm")))
    trunk.eval()
    payload = {"state_dict": {k: v.detach().cpu().clone() for k, v in trunk.state_dict().items()},
               "config": {**info, "bn_recalibrated": f"{args.batches} x {args.batch_size} images of {args.shards}"}}
    tmp = f"{args.out}.tmp.{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, args.out)
    print(f"{args.out}: {len(norms)} BatchNorm layers re-estimated on {min(i, args.batches)} batches")


if __name__ == "__main__":
    main()

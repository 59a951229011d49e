"""Benchmark: one context-encoder training step (forward, L2 loss on the predicted square,
backward, Adam) with the decoder up to the whole image against up to the centre square only,
in the same run, on the preset's trunk, image size and batch.

The centre hole's loss lives on the central S/2 square (weight 0 elsewhere), so both decoders
train the same thing; the whole-image one pays for the last, full-resolution up-convolution.
Random input (the step's cost does not depend on the pixels). Each variant: `--warmup` steps,
then `--repeats` windows of `--steps` steps; the median window's ms per step is reported.

    python tools/bench/inpainting_step.py [--preset small] [--batch-size N] [--threads 1]
                                          [--steps 20] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time

import torch

from spotart.trainer.config import PRESETS, build_config
from spotart.trainer.inpainting import crop, predicted_square, weighted_l2
from spotart.trainer.nets.context_encoder import ContextEncoder
from spotart.trainer.nets.trunk import Trunk


def step_ms(cfg, out_size: int | None, steps: int, warmup: int, repeats: int) -> float:
    size, batch = cfg.image_size, cfg.batch_size
    torch.manual_seed(0)
    gen = ContextEncoder(Trunk(cfg.trunk), size, out_size=out_size).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(gen.parameters(), 1e-4)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    a, n = predicted_square(cfg)
    target = torch.randn(batch, 3, size, size).clamp(-1, 1)
    weight = torch.zeros(batch, 1, size, size)
    weight[..., a:a + n, a:a + n] = 1.0

    square = None if out_size is None else (a, n)

    def one():
        loss = weighted_l2(gen(x), crop(target, square), crop(weight, square))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        one()
    windows = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            one()
        windows.append((time.perf_counter() - t) / steps * 1000)
    return statistics.median(windows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--batch-size", type=int, default=0, help="0: the preset's inpainting batch")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    cfg = build_config("inpainting", args.preset,
                       ["data=synthetic"] + ([f"batch_size={args.batch_size}"] if args.batch_size else []))
    size, batch = cfg.image_size, cfg.batch_size
    torch.set_num_threads(args.threads)
    run = lambda out: step_ms(cfg, out, args.steps, args.warmup, args.repeats)  # noqa: E731
    whole, square = run(None), run(predicted_square(cfg)[1])
    res = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{platform.node()} {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)",
           "preset": args.preset, "image_size": size, "batch": batch,
           "ms_whole_image": round(whole, 1), "ms_centre_square": round(square, 1),
           "speedup": round(whole / square, 2)}
    print(f"{args.preset} inpainting step, batch {batch} of {size} px, {args.threads} thread(s): "
          f"decoder to the whole image {whole:.1f} ms, to the centre square {square:.1f} ms "
          f"({whole / square:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()

"""The comparison table: every task trained for the same wall-clock budget on the tiny-imagenet-a
train split, each trunk evaluated with the linear protocol (spotart eval linear) on its val
split; a per-layer top-1 table written to docs/benchmarks.md with the machine and the budget.

    python tools/bench/pretext_table.py --budget-minutes 10                     # GPU, 64px preset
    python tools/bench/pretext_table.py --budget-minutes 0.3 --preset tiny \\
        --per-class 4 --val-per-class 2 --eval-epochs 1 --cache-features        # CPU: the wiring

Rows: random (untrained trunk, the floor), context, inpainting, jigsaw, artifacts, supervised
(the shards' labels, the upper bound). Same preset (trunk, image size, batch size), same
optimiser, same pipeline and the same linear protocol for every row.

Equal budget: each task is first timed for a few steps (a calibration run, not counted), then
trained for steps = (budget - its start-up time) / its seconds per step, so its learning-rate
schedule runs to its end inside the budget (start-up included); the table lists the steps and
the wall time each run really took (it can exceed tiny budgets: at least 2 steps are run).
The shards are built once under --workdir (kept between invocations: the build resumes).
--per-class K extracts K images per class first (small CPU demos); 0 uses every image.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import tarfile
import time

from spotart.tools.comparison import ROWS, table, write_section

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "datasets", "tiny-imagenet-a"))
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, "..", "..", "docs", "benchmarks.md"))
log = logging.getLogger("pretext_table")


def subset(archives: list[str], out: str, per_class: int) -> str:
    """The first `per_class` images of every class folder in `archives`, extracted to `out`."""
    done = os.path.join(out, ".done")
    if os.path.exists(done):
        return out
    counts: dict[str, int] = {}
    for a in archives:
        with tarfile.open(a, "r|*") as tf:
            for m in tf:
                parts = m.name.lstrip("./").split("/")
                if not m.isfile() or len(parts) < 3 or not parts[-1].lower().endswith((".jpeg", ".jpg", ".png")):
                    continue
                cls = parts[-2]
                if counts.get(cls, 0) >= per_class:
                    continue
                counts[cls] = counts.get(cls, 0) + 1
                os.makedirs(os.path.join(out, cls), exist_ok=True)
                with open(os.path.join(out, cls, parts[-1]), "wb") as f:
                    f.write(tf.extractfile(m).read())
    open(done, "w").close()
    return out


def shards(data: str, work: str, split: str, archives: list[str], per_class: int) -> str:
    from spotart.shards.build import build_shards
    from spotart.shards.spec import ShardSpec

    paths = [os.path.join(data, a) for a in archives]
    for p in paths:
        if not os.path.isfile(p):
            raise SystemExit(f"{p}: missing; pass --data DIR with the tiny-imagenet-a archives")
    sources = [subset(paths, os.path.join(work, f"{split}-{per_class}-per-class"), per_class)] if per_class else paths
    out = os.path.join(work, f"shards-{split}-{per_class or 'all'}")
    r = build_shards(sources, out, ShardSpec(max_count=10_000, workers=2), progress=False)
    log.info("%s shards: %d images in %s", split, r.num_samples, out)
    return out


def calibrate(task: str, args, train_shards: str) -> tuple[float, float]:
    """(seconds per step, fixed start-up seconds) from a short timing run: the step time is the
    mean over its steps (the first step of each phase dropped: warm-up), the start-up is what
    the run's wall time holds beyond its steps (pipeline build, first batches, checkpoint)."""
    from spotart.trainer.config import build_config
    from spotart.trainer.loop import train
    from spotart.trainer.metrics import read_metrics

    run = os.path.join(args.workdir, "runs", f"calibrate-{task}-{time.time_ns()}")
    cfg = build_config(task, args.preset, overrides(args, train_shards, steps=2 * args.calibration_steps,
                                                    extra=["log_every=1", "ckpt_every=1000000"]))
    t0 = time.perf_counter()
    train(cfg, run)
    wall = time.perf_counter() - t0
    recs = [r for r in read_metrics(os.path.join(run, "metrics.jsonl")) if "step_ms" in r]
    times, last_phase = [], None
    for r in recs:
        if r["phase"] == last_phase:
            times.append(r["step_ms"] / 1000)
        last_phase = r["phase"]
    step = statistics.mean(times or [r["step_ms"] / 1000 for r in recs])
    return step, max(0.0, wall - step * len(recs))


def overrides(args, train_shards, steps, extra=()):
    return [f"shards={train_shards}", f"steps={steps}", "progress=false", f"device={args.device}",
            f"num_threads={args.num_threads}", *args.set, *extra]


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.node()}: {os.cpu_count()} CPU cores ({cpu}){gpu}, torch {torch.__version__}"


def command_line() -> str:
    """This invocation's arguments, shell-quoted, without the --note text."""
    argv, out = sys.argv[1:], []
    while argv:
        a = argv.pop(0)
        if a == "--note":
            argv = argv[1:]
        elif not a.startswith("--note="):
            out.append(a)
    return shlex.join(out)


def train_and_probe(task: str, args, train_shards: str, eval_cfg, stamp: str) -> dict:
    """One row: train `task` for the budget (or take the random trunk), export, linear-probe."""
    from spotart.trainer.config import build_config
    from spotart.trainer.eval_linear import linear_eval, write_results
    from spotart.trainer.export import export_backbone
    from spotart.trainer.loop import train
    from spotart.trainer.random_backbone import export_random_backbone

    backbone = os.path.join(args.workdir, "backbones", f"{task}-{args.preset}-{stamp}.pt")
    if task == "random":
        export_random_backbone(backbone, args.preset)
        steps, train_seconds = 0, 0.0
    else:
        step_s, startup = calibrate(task, args, train_shards)
        steps = max(2, int((60 * args.budget_minutes - startup) / step_s))
        log.info("%s: %.3f s/step, %.1f s start-up -> %d steps in %.2f min", task, step_s, startup, steps,
                 args.budget_minutes)
        run = os.path.join(args.workdir, "runs", f"{task}-{args.preset}-{stamp}")
        t0 = time.perf_counter()
        train(build_config(task, args.preset, overrides(args, train_shards, steps)), run)
        train_seconds = time.perf_counter() - t0
        export_backbone(run, backbone)
    lin = linear_eval(backbone, eval_cfg)
    write_results(lin, backbone[:-3] + ".linear")
    log.info("%s: top-1 per layer %s", task, [round(100 * l["top1"], 1) for l in lin["layers"]])
    return {"steps": steps, "train_seconds": train_seconds, "backbone": backbone, "linear": lin}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-minutes", type=float, required=True, help="training wall clock per task")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--workdir", default=os.path.join(os.getcwd(), "bench-pretext"),
                    help="shards, runs, backbones and results (reused: the shard build resumes)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="Markdown file whose pretext-table section is (re)written")
    ap.add_argument("--preset", default="64px", help="trainer preset for every task (tiny on CPU)")
    ap.add_argument("--tasks", nargs="+", default=list(ROWS), choices=ROWS)
    ap.add_argument("--per-class", type=int, default=0, help="train images per class (0: all 500)")
    ap.add_argument("--val-per-class", type=int, default=0, help="val images per class (0: all 50)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--num-threads", type=int, default=4, help="DALI CPU threads")
    ap.add_argument("--calibration-steps", type=int, default=5, help="steps per phase of the timing run")
    ap.add_argument("--eval-epochs", type=int, default=10)
    ap.add_argument("--eval-batch-size", type=int, default=128)
    ap.add_argument("--dims", type=int, default=9216)
    ap.add_argument("--cache-features", action="store_true", help="linear eval on cached centre-crop features")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="trainer override for every task (e.g. batch_size=64, cpu_threads=1)")
    ap.add_argument("--note", default="", help="a sentence printed under the command in the table's section")
    args = ap.parse_args(argv)
    if args.budget_minutes <= 0:
        ap.error("--budget-minutes must be > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("spotart").setLevel(logging.WARNING)
    os.makedirs(args.workdir, exist_ok=True)

    from spotart.trainer.config import PRESETS
    from spotart.trainer.eval_linear import LinearEvalConfig, read_classes

    train_shards = shards(args.data, args.workdir, "train", ["train-00.tar.gz", "train-01.tar.gz"], args.per_class)
    val_shards = shards(args.data, args.workdir, "val", ["val.tar.gz"], args.val_per_class)
    count = lambda d: json.load(open(os.path.join(d, "manifest.json")))["num_samples"]  # noqa: E731
    info = {"machine": machine(), "command": command_line(), "image_size": PRESETS[args.preset]["image_size"], "classes": len(read_classes(train_shards)),
            "train_images": count(train_shards), "val_images": count(val_shards)}
    for item in args.set:  # an image size override applies to the linear evaluation too
        if item.startswith("image_size="):
            info["image_size"] = int(item.split("=", 1)[1])
    eval_cfg = LinearEvalConfig(train_shards=train_shards, val_shards=val_shards, image_size=info["image_size"],
                                batch_size=args.eval_batch_size, epochs=args.eval_epochs, dims=args.dims,
                                cache=args.cache_features, device=args.device, num_threads=args.num_threads)
    results = {}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for task in args.tasks:
        results[task] = train_and_probe(task, args, train_shards, eval_cfg, stamp)
        with open(os.path.join(args.workdir, f"pretext_table-{stamp}.json"), "w") as f:
            json.dump({"args": vars(args), "info": info, "results": results}, f, indent=2)
    text = table(results, args, info)
    write_section(args.out, text)
    print(text)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()

"""The comparison table: every task trained on the tiny-imagenet-a train split with the same
budget, at least two seeds per row, each trunk evaluated with the linear protocol (spotart eval
linear) on the val split and its own pretext task checked on held-out images (spotart eval
pretext); the per-layer table (mean and spread over seeds) and the geometry table (what each
trunk sees) are written to docs/benchmarks.md with the machine, the budget and the command.

    python tools/bench/pretext_table.py --preset small --train-shards T --val-shards V   # CPU, ~2 h
    python tools/bench/pretext_table.py --preset 64px --budget-minutes 10                   # GPU
    python tools/bench/pretext_table.py --preset tiny --per-class 4 --val-per-class 2 \
        --eval-epochs 1 --cache-features --steps 20                                         # wiring

Rows: random (untrained trunk of the same shape, the floor), context, inpainting, jigsaw,
artifacts, supervised (the shards' labels, the upper bound). Same preset (trunk, image size,
batch size), same optimiser and the same linear protocol for every row; each trunk is probed
with the input statistics it was trained on (trainer/probe.py).

Budget: by default each task runs its preset's number of steps (the `small` preset sizes them to
about ten minutes per task on two CPU cores, whatever else the machine runs); with
--budget-minutes each task is first timed for a few steps (a calibration run, not counted) and
trained for steps = (budget - start-up) / seconds per step. The table lists the steps and the
wall time each run took. Results accumulate in WORKDIR/pretext_table-PRESET.json; --resume skips
the (task, seed) pairs already there, so a long table survives an interruption.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shlex
import shutil
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
    cfg = build_config(task, args.preset, overrides(args, train_shards, 0, steps=2 * args.calibration_steps,
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


def overrides(args, train_shards, seed, steps=None, extra=()):
    return [f"shards={train_shards}", "progress=false", f"device={args.device}", f"num_threads={args.num_threads}",
            f"seed={seed}", *([f"steps={steps}"] if steps else []), *args.set, *extra]


def common_probe_size(args) -> int:
    """One probe for every row: the largest image size any row's task is configured with (at
    `small`, 128: the upscaled source crop of context and jigsaw). A trunk trained at a smaller
    size sees the same images upscaled, which gives its deep layers maps larger than 1x1."""
    from spotart.trainer.config import build_config

    tasks = [t for t in args.tasks if t != "random"] or ["supervised"]
    return max(build_config(t, args.preset, ["data=synthetic", *args.set]).image_size for t in tasks)


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


def train_and_probe(task: str, seed: int, args, train_shards: str, val_shards: str, eval_cfg) -> dict:
    """One (row, seed): train `task` (or take the random trunk), export, linear-probe, and check
    the pretext task on held-out images."""
    from spotart.trainer.config import build_config
    from spotart.trainer.eval_linear import linear_eval, write_results
    from spotart.trainer.eval_pretext import evaluate_pretext
    from spotart.trainer.export import export_backbone
    from spotart.trainer.loop import train
    from spotart.trainer.random_backbone import export_random_backbone

    name = f"{task}-{args.preset}-seed{seed}"
    backbone = os.path.join(args.workdir, "backbones", f"{name}.pt")
    steps, train_seconds, pretext, config = 0, 0.0, None, None
    if task == "random":  # the same trunk, at the image size the supervised row is probed at
        ref = build_config("supervised", args.preset, overrides(args, train_shards, seed))
        export_random_backbone(backbone, args.preset, seed, trunk=ref.trunk, image_size=ref.image_size)
    else:
        if args.budget_minutes:
            step_s, startup = calibrate(task, args, train_shards)
            steps = max(2, int((60 * args.budget_minutes - startup) / step_s))
            log.info("%s: %.3f s/step, %.1f s start-up -> %d steps in %.2f min", task, step_s, startup, steps,
                     args.budget_minutes)
        cfg = build_config(task, args.preset, overrides(args, train_shards, seed, steps or args.steps))
        steps, config = cfg.steps, cfg.to_dict()
        run = os.path.join(args.workdir, "runs", name)
        if os.path.isdir(run):
            shutil.rmtree(run)  # an unfinished earlier attempt (finished ones are skipped by --resume)
        t0 = time.perf_counter()
        done = train(cfg, run)
        train_seconds = time.perf_counter() - t0
        if not done["finished"]:  # SIGTERM/SIGINT: the trainer checkpointed and returned early
            raise SystemExit(f"{name} stopped at step {done['step']} of {cfg.steps}; nothing recorded for it. "
                             "Continue the table with --resume")
        export_backbone(run, backbone)
        pretext = evaluate_pretext(run, val_shards, max_batches=args.pretext_batches, device=args.device,
                                   num_threads=args.num_threads, seed=seed)["metrics"]
    lin = linear_eval(backbone, dataclasses.replace(eval_cfg, seed=seed))
    write_results(lin, backbone[:-3] + ".linear")
    log.info("%s seed %d: top-1 per layer %s, pretext %s", task, seed,
             [round(100 * x["top1"], 1) for x in lin["layers"]], pretext)
    return {"seed": seed, "steps": steps, "train_seconds": train_seconds, "backbone": backbone, "linear": lin,
            "pretext": pretext, "config": config}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small", help="trainer preset for every task")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training and probe seeds (>= 2 for a spread)")
    ap.add_argument("--budget-minutes", type=float, default=0.0,
                    help="calibrate each task's steps to this wall clock (0: the preset's steps)")
    ap.add_argument("--steps", type=int, default=0, help="steps for every task instead of the preset's (wiring runs)")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--train-shards", default=None, help="prebuilt train shards (else built from --data)")
    ap.add_argument("--val-shards", default=None, help="prebuilt val shards (else built from --data)")
    ap.add_argument("--probe-train-shards", default=None,
                    help="labelled shards the linear probes train on (default: the pretext train shards)")
    ap.add_argument("--workdir", default=os.path.join(os.getcwd(), "bench-pretext"),
                    help="shards, runs, backbones and results (reused: the shard build resumes)")
    ap.add_argument("--resume", action="store_true", help="keep the (task, seed) results already in the workdir")
    ap.add_argument("--out", default=DEFAULT_OUT, help="Markdown file whose pretext-table section is (re)written")
    ap.add_argument("--tasks", nargs="+", default=list(ROWS), choices=ROWS)
    ap.add_argument("--per-class", type=int, default=0, help="train images per class (0: all 500)")
    ap.add_argument("--val-per-class", type=int, default=0, help="val images per class (0: all 50)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--num-threads", type=int, default=2, help="DALI CPU threads")
    ap.add_argument("--calibration-steps", type=int, default=5, help="steps per phase of the timing run")
    ap.add_argument("--probe-size", type=int, default=0,
                    help="image size of every row's linear probe (0: the largest image size among the rows' configs)")
    ap.add_argument("--eval-epochs", type=int, default=10)
    ap.add_argument("--eval-batch-size", type=int, default=128)
    ap.add_argument("--dims", type=int, default=9216)
    ap.add_argument("--cache-features", action="store_true", help="linear eval on cached centre-crop features")
    ap.add_argument("--pretext-batches", type=int, default=20, help="held-out batches for the pretext check")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="trainer override for every task (e.g. batch_size=64, cpu_threads=1)")
    ap.add_argument("--note", default="", help="a sentence printed under the command in the table's section")
    args = ap.parse_args(argv)
    if args.budget_minutes < 0 or (len(args.seeds) < 2 and not args.note):
        ap.error("--budget-minutes must be >= 0, and a table needs >= 2 seeds (or a --note saying why not)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("spotart").setLevel(logging.WARNING)
    os.makedirs(args.workdir, exist_ok=True)

    from spotart.trainer.eval_linear import LinearEvalConfig, read_classes
    from spotart.tools.comparison import geometry_row, geometry_table

    train_shards = args.train_shards or shards(args.data, args.workdir, "train", ["train-00.tar.gz", "train-01.tar.gz"],
                                               args.per_class)
    val_shards = args.val_shards or shards(args.data, args.workdir, "val", ["val.tar.gz"], args.val_per_class)
    count = lambda d: json.load(open(os.path.join(d, "manifest.json")))["num_samples"]  # noqa: E731
    probe_size = args.probe_size or common_probe_size(args)
    probe_train = args.probe_train_shards or train_shards
    eval_cfg = LinearEvalConfig(train_shards=probe_train, val_shards=val_shards, batch_size=args.eval_batch_size,
                                image_size=probe_size,
                                epochs=args.eval_epochs, dims=args.dims, cache=args.cache_features,
                                device=args.device, num_threads=args.num_threads)
    path = os.path.join(args.workdir, f"pretext_table-{args.preset}.json")
    results = json.load(open(path))["results"] if args.resume and os.path.isfile(path) else {}
    for task in args.tasks:
        for seed in args.seeds:
            if any(r["seed"] == seed for r in results.get(task, [])):
                continue
            results.setdefault(task, []).append(train_and_probe(task, seed, args, train_shards, val_shards, eval_cfg))
            with open(path + ".tmp", "w") as f:
                json.dump({"args": vars(args), "results": results}, f, indent=2)
            os.replace(path + ".tmp", path)
    info = {"machine": machine(), "command": command_line(), "note": args.note, "preset": args.preset,
            "budget": (f"{args.budget_minutes:g} min of training per task (calibrated)" if args.budget_minutes
                       else "the preset's steps per task"),
            "probe_size": probe_size, "classes": len(read_classes(train_shards)), "train_images": count(train_shards),
            "probe_train_images": count(probe_train),
            "val_images": count(val_shards), "dims": args.dims, "eval_epochs": args.eval_epochs,
            "features": "cached centre-crop features" if args.cache_features else
                        "features recomputed each epoch with augmentation"}
    text = table({t: results[t] for t in ROWS if t in results}, info)
    text += "\nWhat each trunk sees (pretext input and probe):\n\n" + geometry_table(
        [geometry_row(t, args.preset, args.set, probe_size=probe_size) for t in ROWS if t in results and t != "random"])
    write_section(args.out, text)
    print(text)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()

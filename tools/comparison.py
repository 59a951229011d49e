"""The pretext-comparison table (tools/bench/pretext_table.py measures it): rendering as Markdown
and (re)writing its section of docs/benchmarks.md between fixed markers, so a rerun replaces
the previous table instead of appending a second one."""

from __future__ import annotations

import os
import time

ROWS = ("random", "context", "inpainting", "jigsaw", "artifacts", "supervised")
START, END = "<!-- pretext-table:start -->", "<!-- pretext-table:end -->"


def table(results: dict, args, info: dict) -> str:
    layers = ("conv1", "conv2", "conv3", "conv4", "conv5")
    lines = [
        "## Pretext tasks compared (linear evaluation per layer)\n",
        f"`python tools/bench/pretext_table.py {info['command']}`\n",
        *([f"{args.note}\n"] if getattr(args, "note", "") else []),
        f"- machine: {info['machine']}",
        f"- budget: {args.budget_minutes:g} min of training per task (wall clock, after a calibration run "
        f"that is not counted); preset `{args.preset}`, {info['image_size']} px",
        f"- data: tiny-imagenet-a, train {info['train_images']} images, val {info['val_images']} images, "
        f"{info['classes']} classes ({'all images' if not args.per_class else f'{args.per_class} per class'})",
        f"- linear protocol: frozen trunk, features pooled to ~{args.dims} dims per layer, "
        f"{args.eval_epochs} epoch(s), {'cached centre-crop features' if args.cache_features else 'features recomputed each epoch with augmentation'}; "
        f"chance top-1 {100 / info['classes']:.1f}%",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n",
        "Top-1 accuracy (%) on the val split:\n",
        "| task | steps | train min | " + " | ".join(layers) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in layers) + " |",
    ]
    for name in ROWS:
        r = results.get(name)
        if r is None:
            continue
        acc = {l["layer"]: l["top1"] for l in r["linear"]["layers"]}
        best = max(acc.values())
        cells = [(f"**{100 * acc[k]:.1f}**" if acc[k] == best else f"{100 * acc[k]:.1f}") for k in layers]
        lines.append(f"| {name} | {r['steps']} | {r['train_seconds'] / 60:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Top-5 accuracy (%):", "", "| task | " + " | ".join(layers) + " |",
              "| --- | " + " | ".join("---" for _ in layers) + " |"]
    for name in ROWS:
        if name in results:
            acc = {l["layer"]: l["top5"] for l in results[name]["linear"]["layers"]}
            lines.append(f"| {name} | " + " | ".join(f"{100 * acc[k]:.1f}" for k in layers) + " |")
    return "\n".join(lines) + "\n"


def write_section(path: str, text: str):
    """Replace the table's section of `path` (between the markers), or append it."""
    old = open(path).read() if os.path.isfile(path) else "# Benchmarks\n"
    block = f"{START}\n{text}{END}\n"
    if START in old and END in old:
        new = old[:old.index(START)] + block + old[old.index(END) + len(END):].lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(new)
    os.replace(path + ".tmp", path)

"""The pretext-comparison table (tools/bench/pretext_table.py measures it): Markdown rendering of
several seeds per row (mean and sample standard deviation), the geometry table (what each
trunk sees during pretext training and during the probe), and (re)writing their section of
docs/benchmarks.md between fixed markers, so a rerun replaces the previous table."""

from __future__ import annotations

import os
import statistics
import time

ROWS = ("random", "context", "inpainting", "jigsaw", "artifacts", "supervised")
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
START, END = "<!-- pretext-table:start -->", "<!-- pretext-table:end -->"
# the pretext figure that says a run learnt its own task, and its chance level
PRETEXT = {"artifacts": ("mask_auc", lambda cfg: 0.5), "context": ("acc", lambda cfg: 1 / 8),
           "jigsaw": ("acc", lambda cfg: 1 / cfg["pipeline"]["count"]), "inpainting": ("rec_mse", None),
           "supervised": ("acc", None)}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def layer_stats(runs: list[dict], key: str = "top1") -> dict[str, tuple[float, float]]:
    """Per layer, mean and std over the seeds of one row, in %."""
    return {layer: mean_std([100 * next(x[key] for x in r["linear"]["layers"] if x["layer"] == layer) for r in runs])
            for layer in LAYERS}


def best_layer(runs: list[dict]) -> tuple[str, float, float]:
    stats = layer_stats(runs)
    layer = max(stats, key=lambda k: stats[k][0])
    return layer, *stats[layer]


def _cell(m: float, s: float, bold: bool) -> str:
    text = f"{m:.1f} ± {s:.1f}"
    return f"**{text}**" if bold else text


def _pretext(task: str, runs: list[dict]) -> str:
    key, chance = PRETEXT.get(task, (None, None))
    vals = [r["pretext"][key] for r in runs if r.get("pretext") and key in r["pretext"]]
    if not vals:
        return "-"
    m, s = mean_std(vals)
    ch = f" (chance {chance(runs[0]['config']):.3g})" if chance else ""
    text = f"{key} {m:.3f} ± {s:.3f}{ch}"
    for extra in ("acc_real", "acc_fake") if task == "artifacts" else ():  # real/fake health beside the mask's
        more = [r["pretext"][extra] for r in runs if extra in (r.get("pretext") or {})]
        if more:
            text += f", {extra} {mean_std(more)[0]:.3f} ± {mean_std(more)[1]:.3f}"
    return text


def table(results: dict, info: dict) -> str:
    """`results`: row -> list of per-seed dicts {"seed", "steps", "train_seconds", "linear",
    "pretext" (held-out metrics or None), "config"}."""
    seeds = sorted({r["seed"] for runs in results.values() for r in runs})
    lines = [
        "## Pretext tasks compared (linear evaluation per layer)\n",
        f"`python tools/bench/pretext_table.py {info['command']}`\n",
        *([f"{info['note']}\n"] if info.get("note") else []),
        f"- machine: {info['machine']}",
        f"- budget: {info['budget']}; preset `{info['preset']}`",
        f"- data: tiny-imagenet-a, train {info['train_images']} images, val {info['val_images']} images, "
        f"{info['classes']} classes",
        f"- linear protocol: frozen trunk trained on {info.get('probe_train_images', info['train_images'])} "
        f"labelled train images, every row probed at {info.get('probe_size', 'its own')} px, "
        f"features pooled to ~{info['dims']} dims per layer, "
        f"{info['eval_epochs']} epoch(s), {info['features']}; chance top-1 {100 / info['classes']:.1f}%",
        f"- seeds: {', '.join(map(str, seeds))} (training and probe); cells are mean ± sample std over seeds",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n",
        "Top-1 accuracy (%) on the val split:\n",
        "| task | steps | train min | " + " | ".join(LAYERS) + " | best layer | vs random best | pretext (held-out) |",
        "| --- | --- | --- | " + " | ".join("---" for _ in LAYERS) + " | --- | --- | --- |",
    ]
    floor = best_layer(results["random"])[1] if results.get("random") else None
    for name in ROWS:
        runs = results.get(name)
        if not runs:
            continue
        stats = layer_stats(runs)
        top = max(m for m, _ in stats.values())
        cells = [_cell(m, s, m == top) for m, s in stats.values()]
        layer, m, s = best_layer(runs)
        gain = f"{m - floor:+.1f}" if floor is not None and name != "random" else "-"
        steps = "/".join(sorted({str(r["steps"]) for r in runs}))
        minutes = statistics.mean(r["train_seconds"] for r in runs) / 60
        lines.append(f"| {name} | {steps} | {minutes:.1f} | " + " | ".join(cells)
                     + f" | {layer} | {gain} | {_pretext(name, runs)} |")
    lines += ["", "Top-5 accuracy (%):", "", "| task | " + " | ".join(LAYERS) + " |",
              "| --- | " + " | ".join("---" for _ in LAYERS) + " |"]
    for name in ROWS:
        if results.get(name):
            stats = layer_stats(results[name], "top5")
            lines.append(f"| {name} | " + " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in stats.values()) + " |")
    return "\n".join(lines) + "\n"


def geometry_row(task: str, preset: str, overrides=(), probe_size: int | None = None) -> dict:
    """What the trunk of `task` sees at `preset`: its pretext input and the probe's (`probe_size`,
    else the backbone's own image size), with conv1..conv5 sides for each."""
    from ..trainer.config import build_config
    from ..trainer.tasks import get_task

    cfg = build_config(task, preset, ["data=synthetic", *overrides])
    t = get_task(task)
    size = t.pretext_input_size(cfg)
    probe = probe_size or cfg.image_size
    return {"task": task, "preset": preset, "input": size,
            "pretext_sides": [cfg.trunk.side(size, k) for k in range(1, 6)], "probe_size": probe,
            "probe_sides": [cfg.trunk.side(probe, k) for k in range(1, 6)], "input_norm": t.input_norm(cfg)}


def geometry_table(rows: list[dict]) -> str:
    """rows: {"task", "preset", "input", "pretext_sides", "probe_size", "probe_sides", "input_norm"}."""
    lines = ["| preset | task | pretext input (px) | conv1..conv5 side in pretext | probe input (px) | "
             "conv1..conv5 side in the probe | probe input statistics |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['task']} | {r['input']} | {' / '.join(map(str, r['pretext_sides']))} | "
                     f"{r['probe_size']} | {' / '.join(map(str, r['probe_sides']))} | "
                     f"{r['input_norm'] or '[-1, 1]'} |")
    return "\n".join(lines) + "\n"


def write_section(path: str, text: str):
    """Replace the table's section of `path` (between the markers), or append it."""
    old = open(path).read() if os.path.isfile(path) else "# Benchmarks\n"
    block = f"{START}\n{text}{END}\n"
    if START in old and END in old:
        rest = old[old.index(END) + len(END):].lstrip("\n")
        new = old[:old.index(START)] + block + ("\n" + rest if rest else "")  # a blank line before what follows
    else:
        new = old.rstrip("\n") + "\n\n" + block
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(new)
    os.replace(path + ".tmp", path)

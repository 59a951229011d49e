"""`spotart plot RUN [RUN ...]`: training curves from metrics.jsonl, several runs overlaid.

One PNG per group of metrics, one panel per metric, one line per run (the run directory's name
in the legend), x = step; dashed lines mark where a run enters a new phase (artifacts: the
autoencoder, then the artifact game). k-NN top-1 records (the online monitor) are plotted at the
steps they were taken."""

from __future__ import annotations

import math
import os

GROUPS = {
    "losses": lambda k: k.startswith("loss") or k in ("ae_mse", "rec_mse"),
    "accuracy": lambda k: k in ("acc", "acc_real", "acc_fake", "mask_acc", "mask_auc", "mask_iou", "ae_psnr"),
    "knn": lambda k: k == "knn_top1",
    "throughput": lambda k: k in ("img_per_s", "data_wait_frac", "gpu_mem_gib"),
}


def read_run(run: str) -> list[dict]:
    from ..trainer.metrics import read_metrics

    path = os.path.join(run, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no metrics; pass run directories made by `spotart train`")
    return [r for r in read_metrics(path) if "event" not in r]


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def phase_starts(records: list[dict]) -> list[int]:
    """First logged step of each phase after the first."""
    out, last = [], None
    for r in records:
        ph = r.get("phase")
        if ph is not None and last is not None and ph != last:
            out.append(r["step"])
        last = ph if ph is not None else last
    return out


def plot_runs(runs: list[str], out: str) -> list[str]:
    """Write DIR/<group>.png for every group with data; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = {run: read_run(run) for run in runs}
    names = {run: os.path.basename(os.path.normpath(run)) or run for run in runs}
    os.makedirs(out, exist_ok=True)
    written = []
    for group, wanted in GROUPS.items():
        keys = sorted({k for recs in data.values() for r in recs for k in r if wanted(k)})
        if not keys:
            continue
        cols = min(3, len(keys))
        rows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            for i, (run, recs) in enumerate(data.items()):
                xs, ys = series(recs, key)
                if xs:
                    ax.plot(xs, ys, color=f"C{i}", label=names[run], marker="o" if len(xs) < 20 else None, ms=3)
                for s in phase_starts(recs):
                    ax.axvline(s, color=f"C{i}", ls="--", lw=0.8, alpha=0.6)
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out, f"{group}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    if not written:
        raise ValueError(f"{', '.join(runs)}: the metrics hold no training records yet")
    return written

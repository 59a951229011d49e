"""PNG charts of a report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .stages import STAGES  # noqa: E402

_BLUE, _ORANGE, _GREEN, _RED, _GREY = "#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8C8C8C"


def throughput(report: dict, path: str):
    """Images/s of every measurement (left) and each pipeline stage's own cost (right)."""
    st, ps = report["stages"], report["pipeline_stages"]
    labels = [f"pipeline to {s}" for s in STAGES] + ["loader (pipeline alone)", "training step alone", "end to end"]
    rates = [ps[s]["images_per_s"] for s in STAGES]
    rates += [st[k]["images_per_s"] for k in ("pipeline", "train", "end_to_end")]
    colours = [_GREY] * len(STAGES) + [_BLUE, _ORANGE, _GREEN]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    y = range(len(labels))[::-1]
    a.barh(list(y), rates, color=colours)
    a.set_yticks(list(y), labels)
    a.set_xscale("log")  # the reader alone can be 100x the training step: a linear axis hides the step
    a.set_xlabel("images / s (log scale)")
    a.set_title("Throughput per measurement")
    for yi, r in zip(y, rates):
        a.text(r, yi, f" {r:,.0f}", va="center", fontsize=8)
    a.set_xlim(min(rates) / 2, max(rates) * 3)
    own = [ps[s]["own_ms_per_batch"] for s in STAGES]
    b.bar(STAGES, [max(v, 0) for v in own], color=_GREY)
    for i, v in enumerate(own):
        b.text(i, max(v, 0), f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    b.set_ylabel("ms per batch (own cost)")
    b.set_title("Pipeline stages (truncated-pipeline differences)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def timeline(report: dict, path: str):
    """Per end-to-end step: time waiting for data vs the step itself."""
    wait, comp = report["timeline"]["wait_ms"], report["timeline"]["compute_ms"]
    x = range(1, len(wait) + 1)
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.bar(list(x), wait, color=_RED, label="waiting for data")
    ax.bar(list(x), comp, bottom=wait, color=_BLUE, label="training step")
    ax.set_xlabel("step (end to end)")
    ax.set_ylabel("ms")
    ax.set_title(f"Data wait vs compute: {100 * report['data_wait_frac']:.1f}% of the time waiting")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def utilisation(report: dict, path: str):
    """CPU cores busy (whole process, pipeline threads) and, on a GPU, NVML utilisation and
    memory over the run, with each measurement's window shaded."""
    u = report["utilisation"]
    has_gpu = bool(u["gpu"])
    fig, axes = plt.subplots(2 if has_gpu else 1, 1, figsize=(10, 6 if has_gpu else 3.6), sharex=True, squeeze=False)
    ax = axes[0][0]
    t = [p["t"] for p in u["cpu"]]
    ax.plot(t, [p["process_cores"] for p in u["cpu"]], color=_BLUE, label="process")
    ax.plot(t, [p["pipeline_cores"] for p in u["cpu"]], color=_ORANGE, label="pipeline threads (DALI)")
    ax.axhline(report["machine"]["cpu_count"], color=_GREY, ls="--", lw=0.8, label="cores")
    ax.set_ylabel("CPU cores busy")
    ax.set_title("Utilisation over the profile")
    # each measurement's windows shaded in its colour (the pipeline stages in grey); the gaps
    # between them are building pipelines and models
    shade = {"pipeline": _BLUE, "train": _ORANGE, "end_to_end": _GREEN}
    for ax_ in [a[0] for a in axes]:
        for m in u["marks"]:
            ax_.axvspan(m["start"], m["end"], color=shade.get(m["stage"], _GREY), alpha=0.18, lw=0)
    from matplotlib.patches import Patch

    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=_GREY, alpha=0.3, label="pipeline stages timed"),
                *[Patch(color=c, alpha=0.3, label=f"{k.replace('_', ' ')} timed") for k, c in shade.items()]]
    ax.legend(handles=handles, loc="upper left", fontsize=7, ncol=2)
    if has_gpu:
        g = axes[1][0]
        tg = [p["t"] for p in u["gpu"]]
        g.plot(tg, [p["util_pct"] for p in u["gpu"]], color=_GREEN, label="GPU utilisation %")
        g.set_ylabel("GPU %")
        g.set_ylim(0, 105)
        g2 = g.twinx()
        g2.plot(tg, [p["mem_gib"] for p in u["gpu"]], color=_RED, label="memory used (GiB)")
        g2.set_ylabel("GiB")
        g.legend(loc="upper left", fontsize=8)
        g2.legend(loc="upper right", fontsize=8)
    axes[-1][0].set_xlabel("seconds since start")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CHARTS = {"throughput.png": throughput, "timeline.png": timeline, "utilisation.png": utilisation}


def write_charts(report: dict, out: str) -> list[str]:
    names = []
    for name, draw in CHARTS.items():
        draw(report, os.path.join(out, name))
        names.append(name)
    return names

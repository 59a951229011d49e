"""Two profile reports side by side (before -> after a change), with new/old ratios, the config
keys that differ and both bottleneck sentences: compare.json, compare.md, compare.png and a
self-contained compare.html in the `after` report's directory (or another one)."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .report import _write, to_html  # noqa: E402
from .stages import STAGES  # noqa: E402


def _get(r, path):
    for key in path:
        if r is None:
            return None
        r = r.get(key)
    return r


# (label, path into the report, higher is better)
FIGURES = [
    ("pipeline alone, images/s", ("stages", "pipeline", "images_per_s"), True),
    ("training step alone, images/s", ("stages", "train", "images_per_s"), True),
    ("end to end, images/s", ("stages", "end_to_end", "images_per_s"), True),
    ("end to end, data wait fraction", ("data_wait_frac",), False),
    *[(f"pipeline to {s}, images/s", ("pipeline_stages", s, "images_per_s"), True) for s in STAGES],
    *[(f"{s} stage, own ms/batch", ("pipeline_stages", s, "own_ms_per_batch"), False) for s in STAGES],
    ("pipeline threads busy (pipeline alone), cores", ("stages", "pipeline", "pipeline_cores"), None),
    ("GPU utilisation end to end, %", ("stages", "end_to_end", "gpu", "util_pct_mean"), True),
    ("GPU memory end to end, GiB", ("stages", "end_to_end", "gpu", "mem_gib_max"), None),
    ("profiled step, ms", ("kernels", "total_ms_per_step"), False),
]


def config_changes(a: dict, b: dict, prefix="") -> list[dict]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_changes(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append({"key": prefix + k, "before": va, "after": vb})
    return out


def compare(before: dict, after: dict) -> dict:
    rows = []
    for label, path, higher in FIGURES:
        a, b = _get(before, path), _get(after, path)
        # a ratio only between positive figures (a stage's own cost can come out negative: noise)
        ratio = b / a if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 and b >= 0 else None
        rows.append({"figure": label, "before": a, "after": b, "ratio": ratio, "higher_is_better": higher})
    ignore = {"out", "created"}
    changes = [c for c in config_changes(before["config"], after["config"]) if c["key"].split(".")[-1] not in ignore]
    return {"schema": "spotart.profile-compare/1",
            "before_created": before["created"], "after_created": after["created"],
            "figures": rows, "config_changes": changes,
            "machine_changed": before["machine"] != after["machine"],
            "bottleneck": {"before": before["bottleneck"], "after": after["bottleneck"]}}


def _chart(c: dict, path: str):
    rows = [r for r in c["figures"] if r["figure"].endswith("images/s") and r["before"] and r["after"]]
    fig, ax = plt.subplots(figsize=(10, 4))
    if not rows:
        ax.text(0.5, 0.5, "no comparable rates", ha="center")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    y = list(range(len(rows)))[::-1]
    ax.barh([v + 0.2 for v in y], [r["before"] for r in rows], height=0.4, color="#8C8C8C", label="before")
    ax.barh([v - 0.2 for v in y], [r["after"] for r in rows], height=0.4, color="#4C72B0", label="after")
    ax.set_yticks(y, [r["figure"].replace(", images/s", "") for r in rows])
    for v, r in zip(y, rows):
        ax.text(r["after"], v - 0.2, f" x{r['ratio']:.2f}", va="center", fontsize=8)
    ax.set_xscale("log")
    values = [r[k] for r in rows for k in ("before", "after")]
    ax.set_xlim(min(values) / 2, max(values) * 3)
    ax.set_xlabel("images / s (log scale)")
    ax.set_title("Before vs after")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def sections(c: dict) -> list:
    rows = [[r["figure"], _fmt(r["before"]), _fmt(r["after"]), "n/a" if r["ratio"] is None else f"x{r['ratio']:.2f}"]
            for r in c["figures"]]
    changes = [[x["key"], json.dumps(x["before"]), json.dumps(x["after"])] for x in c["config_changes"]]
    b = c["bottleneck"]
    out = [("Figures", [f"Before: report of {c['before_created']}; after: {c['after_created']}. "
                        "Ratio = after / before.",
                        (["figure", "before", "after", "ratio"], rows)]),
           ("What changed", [(["config key", "before", "after"], changes) if changes else "No config key differs.",
                             "The machine differs between the two reports." if c["machine_changed"] else
                             "Same machine."]),
           ("Bottleneck", [f"**Before** ({b['before']['knob']}): {b['before']['sentence']}",
                           f"**After** ({b['after']['knob']}): {b['after']['sentence']}"])]
    return out


def write_compare(before: dict, after: dict, out: str) -> dict:
    os.makedirs(out, exist_ok=True)
    c = compare(before, after)
    _chart(c, os.path.join(out, "compare.png"))
    _write(os.path.join(out, "compare.json"), json.dumps(c, indent=1))
    md = ["# spotart profile: before vs after", ""]
    for title, blocks in sections(c):
        md += [f"## {title}", ""]
        for blk in blocks:
            if isinstance(blk, str):
                md += [blk, ""]
            else:
                head, rows = blk
                md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                md += ["| " + " | ".join(str(x).replace("|", "\\|") for x in row) + " |" for row in rows] + [""]
    md += ["![compare.png](compare.png)", ""]
    _write(os.path.join(out, "compare.md"), "\n".join(md))
    with open(os.path.join(out, "compare.png"), "rb") as f:
        png = f.read()
    _write(os.path.join(out, "compare.html"), to_html("spotart profile: before vs after", sections(c),
                                                      {"compare.png": png}))
    return c

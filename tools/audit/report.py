"""The audit's report: DIR/report.json (the numbers), report.md, report.html and audit.png (a bar
chart of every cheater's accuracy, countermeasure on and off, against the chance line).

report.json: task, chance (of the headline accuracy), chance_label, cues = [{cue, cue_name,
sees, countermeasure, accuracy_with, accuracy_without, planted, default, with, without, ...}]
(jigsaw adds permutation_accuracy_with/_without and permutation_chance), network (the run's own
pretext accuracy with --run, else null), config, pipeline, fail_above, failures, passed."""

from __future__ import annotations

import base64
import html
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CHART = "audit.png"
_ON, _OFF, _CHANCE, _NET = "#4C72B0", "#C44E52", "#333333", "#55A868"


def label(row: dict) -> str:
    extra = " (planted aberration)" if row["planted"] else ""
    extra += "" if row["default"] else " (off by default)"
    return f"{row['cue']} / {row['countermeasure']}{extra}"


def chart(report: dict, path: str):
    rows = report["cues"]
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.6))
    y = list(range(len(rows)))[::-1]
    on = [100 * r["accuracy_with"] for r in rows]
    off = [100 * r["accuracy_without"] for r in rows]
    ax.barh([v + 0.2 for v in y], on, height=0.38, color=_ON, label="countermeasure on")
    ax.barh([v - 0.2 for v in y], off, height=0.38, color=_OFF, label="countermeasure off")
    for yi, a, b in zip(y, on, off):
        ax.text(a, yi + 0.2, f" {a:.1f}", va="center", fontsize=7)
        ax.text(b, yi - 0.2, f" {b:.1f}", va="center", fontsize=7)
    ax.axvline(100 * report["chance"], color=_CHANCE, linestyle="--", linewidth=1,
               label=f"chance {100 * report['chance']:.1f}%")
    net = report.get("network")
    if net:
        ax.axvline(100 * net["accuracy"], color=_NET, linestyle=":", linewidth=1.5,
                   label=f"the run's network {100 * net['accuracy']:.1f}%")
    ax.set_yticks(y, [label(r) for r in rows], fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_xlabel(f"cheater accuracy, % ({report['chance_label']})")
    ax.set_title(f"spotart audit: {report['task']}")
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    jig = "permutation_chance" in report
    head = ["cue", "countermeasure", "with %", "without %", "with - chance"]
    if jig:
        head += ["perm. with %", "perm. without %"]
    rows = []
    for r in report["cues"]:
        cells = [r["cue_name"], label(r).split(" / ", 1)[1], _pct(r["accuracy_with"]), _pct(r["accuracy_without"]),
                 f"{100 * (r['accuracy_with'] - report['chance']):+.1f}"]
        if jig:
            cells += [_pct(r["permutation_accuracy_with"]), _pct(r["permutation_accuracy_without"])]
        rows.append(cells)
    return head, rows


def summary_lines(report: dict) -> list[str]:
    c = report["config"]
    model = "softmax regression" if not c["hidden"] else f"an MLP with {c['hidden']} hidden units"
    lines = [f"task {report['task']}, {report['image_size']} px ({report['preset']} preset), chance "
             f"{100 * report['chance']:.1f}% ({report['chance_label']})",
             f"cheaters trained on {c['images']} images of {c['shards']}, scored on {c['test_images']} of "
             f"{c['test_shards'] or 'the other half of ' + c['shards']}; strips k = {c['strip']} px; "
             f"{model}; "
             f"{report['seconds']:.0f} s"]
    if "permutation_chance" in report:
        lines.append(f"permutations: {report['pipeline']['count']}, whole-permutation chance "
                     f"{100 * report['permutation_chance']:.2f}%")
    n = report.get("network")
    if n:
        lines.append(f"the run's own network: {n['metric']} = {100 * n['accuracy']:.1f}% "
                     f"(step {n['step']}, {n['images']} held-out images)")
    if report["fail_above"] is not None:
        lines.append(("PASSED" if report["passed"] else "FAILED") +
                     f": default countermeasures, cheaters within {report['fail_above']} points of chance"
                     + ("" if report["passed"] else ": " + "; ".join(report["failures"])))
    return lines


def to_markdown(report: dict) -> str:
    head, rows = table_rows(report)
    out = [f"# Shortcut audit: {report['task']}", ""] + [f"- {s}" for s in summary_lines(report)] + [""]
    out += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out += ["", "What each cheater sees:", ""]
    out += [f"- {k}: {v}" for k, v in sorted({r["cue_name"]: r["sees"] for r in report["cues"]}.items())]
    out += ["", f"![cheater accuracy]({CHART})", ""]
    return "\n".join(out)


def to_html(report: dict, png: bytes) -> str:
    head, rows = table_rows(report)
    e = html.escape
    table = ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
             + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
    items = "".join(f"<li>{e(s)}</li>" for s in summary_lines(report))
    img = base64.b64encode(png).decode()
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>spotart audit: {e(report['task'])}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,td:nth-child(2){text-align:left}"
            "</style></head><body>"
            f"<h1>Shortcut audit: {e(report['task'])}</h1><ul>{items}</ul>{table}"
            f"<p><img alt='cheater accuracy' src='data:image/png;base64,{img}'></p></body></html>")


def write_report(report: dict, out: str) -> list[str]:
    """Write the four files into `out`; -> their paths."""
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, n) for n in ("report.json", "report.md", "report.html", CHART)]
    chart(report, paths[3])
    with open(paths[3], "rb") as f:
        png = f.read()
    for path, text in zip(paths[:3], (json.dumps(report, indent=1), to_markdown(report), to_html(report, png))):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return paths

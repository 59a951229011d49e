"""report.json, report.md, the charts and report.html (charts embedded, one self-contained file)
from one report dict. The Markdown and the HTML render the same list of sections: paragraphs
and tables."""

from __future__ import annotations

import base64
import html
import json
import os
import re

from .charts import write_charts
from .schema import validate
from .stages import STAGE_HELP, STAGES

FILES = ["report.json", "report.md", "report.html"]


def _f(v, nd=1):
    return "n/a" if v is None else f"{v:,.{nd}f}"


def sections(r: dict) -> list[tuple[str, list]]:
    """[(title, [str paragraph | (header, rows) table])]."""
    st, ps, b = r["stages"], r["pipeline_stages"], r["bottleneck"]
    rt, pipe, train = r["config"]["runtime"], r["config"]["pipeline"], r["config"]["train"]
    kind = "interference" if b["kind"] == "interference" else f"{b['kind']}-bound"
    out = [("Bottleneck", [f"**{kind} ({b['stage']}); knob: {b['knob']}.** {b['sentence']}"])]

    rows = []
    for key, label in (("pipeline", "pipeline alone (loader)"), ("train", "training step alone (replayed batches)"),
                       ("end_to_end", "the two together")):
        s = st[key]
        gpu = s["gpu"] or {}
        rows.append([label, _f(s["images_per_s"]), _f(s["ms_per_batch"], 2),
                     _f(100 * s["data_wait_frac"]) + " %" if "data_wait_frac" in s else "",
                     _f(s["pipeline_cores"], 2), _f(gpu.get("util_pct_mean")), _f(gpu.get("mem_gib_max"), 2),
                     _f(s.get("torch_peak_mem_gib"), 2)])
    out.append(("Throughput", [
        f"{train['task']} task, {train['preset']} preset, batch {train['batch_size']}, {train['image_size']} px, "
        f"{rt['device']}, {rt['precision']}, phase `{rt['phase']}`, DALI {pipe['num_threads']} threads, "
        f"prefetch {pipe['prefetch']}, compile {train['compile']}.",
        (["measurement", "images/s", "ms/batch", "data wait", "pipeline threads (cores)", "GPU util %",
          "GPU mem GiB (NVML)", "torch peak GiB"], rows),
        r["method"]["rounds"] + ".",
        f"Data wait (end to end): **{100 * r['data_wait_frac']:.1f} %** of the step time. "
        f"End to end / slower of the two alone: {r['consistency']['end_to_end_over_slowest_alone']:.2f} "
        "(<= 1 within noise).",
    ]))

    rows = [[s, STAGE_HELP[s], _f(ps[s]["images_per_s"]), _f(ps[s]["ms_per_batch"], 3),
             _f(ps[s]["own_ms_per_batch"], 3)] for s in STAGES]
    out.append(("Inside the pipeline", [
        r["method"]["pipeline_stages"] + ".",
        (["pipeline up to", "adds", "images/s", "ms/batch", "own ms/batch"], rows),
    ]))

    cpu_rows = []
    for key in ("pipeline", "end_to_end"):
        for name, g in st[key]["cpu"].items():
            if g["cores"] >= 0.01:
                cpu_rows.append([key, name, str(g["threads"]), _f(g["cores"], 2)])
    out.append(("CPU threads", [r["method"]["cpu"] + ".", (["measurement", "thread group", "threads", "cores busy"],
                                                            cpu_rows)]))

    k = r["kernels"]
    rows = [[x["name"][:90], str(x["calls"]), _f(x["self_ms_per_step"], 3), _f(100 * x["share"]) + " %"]
            for x in k["kernels"]]
    out.append((f"Top kernels of a training step ({k['device']})", [
        f"{r['method']['kernels']}; {k['total_ms_per_step']:.2f} ms per step in total.",
        (["operator / kernel", "calls", "ms per step", "share"], rows)]))

    m, v = r["machine"], r["versions"]
    gpu = m["gpu"]["name"] if m["gpu"] else "none"
    out.append(("Machine and versions", [
        (["", ""], [["platform", m["platform"]], ["CPU", f"{m['cpu_model']} ({m['cpu_affinity']} of "
                                                        f"{m['cpu_count']} cores usable)"],
                    ["GPU", gpu], ["GPU utilisation", r["method"]["gpu"]]] +
         [[name, ver] for name, ver in v.items()]),
        f"Created {r['created']}. Every figure and the full configuration are in report.json.",
    ]))
    return out


def _md_table(header, rows):
    esc = [[str(c).replace("|", "\\|") for c in row] for row in [header] + rows]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in esc[1:]])


def to_markdown(r: dict, charts: list[str]) -> str:
    parts = ["# spotart profile", ""]
    for title, blocks in sections(r):
        parts += [f"## {title}", ""]
        for blk in blocks:
            parts += [blk if isinstance(blk, str) else _md_table(*blk), ""]
    parts += ["## Charts", ""] + [f"![{c}]({c})" for c in charts] + [""]
    return "\n".join(parts)


def _inline(text: str) -> str:
    # the only Markdown the sections use: **bold** and `code`
    s = html.escape(text)
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f3f3f3}"""

# sets data-broken-images on <body> once everything has loaded: a headless browser test reads it
_CHECK = """<script>window.addEventListener('load', function () {
  var bad = 0; for (var i = 0; i < document.images.length; i++) { if (!document.images[i].naturalWidth) bad++; }
  document.body.setAttribute('data-images', document.images.length);
  document.body.setAttribute('data-broken-images', bad);
});</script>"""


def _html_table(header, rows):
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(title: str, secs: list, charts: dict[str, bytes]) -> str:
    """`charts`: file name -> PNG bytes, embedded as data URIs (the page is one file)."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for name, blocks in secs:
        parts.append(f"<h2>{html.escape(name)}</h2>")
        for blk in blocks:
            parts.append(f"<p>{_inline(blk)}</p>" if isinstance(blk, str) else _html_table(*blk))
    parts.append("<h2>Charts</h2>")
    for name, png in charts.items():
        data = base64.b64encode(png).decode()
        parts.append(f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(name)}</figcaption></figure>")
    parts.append(_CHECK + "</body></html>")
    return "\n".join(parts)


def read_charts(out: str, names: list[str]) -> dict[str, bytes]:
    charts = {}
    for name in names:
        with open(os.path.join(out, name), "rb") as f:
            charts[name] = f.read()
    return charts


def _write(path: str, text: str):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_report(r: dict, out: str) -> list[str]:
    """All report files into `out`; the list of names goes into r["files"]."""
    charts = write_charts(r, out)
    r["files"] = FILES + charts + (["train_step_trace.json"] if r["config"]["profile"].get("trace") else [])
    validate(r)
    _write(os.path.join(out, "report.json"), json.dumps(r, indent=1))
    _write(os.path.join(out, "report.md"), to_markdown(r, charts))
    _write(os.path.join(out, "report.html"), to_html("spotart profile", sections(r), read_charts(out, charts)))
    return r["files"]


def load_report(out: str) -> dict:
    path = out if out.endswith(".json") else os.path.join(out, "report.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no profile report; make one with `spotart profile --shards DIR --out {out}`")
    with open(path) as f:
        r = json.load(f)
    if r.get("schema") != "spotart.profile/1":
        raise ValueError(f"{path}: not a spotart profile report (schema {r.get('schema')!r})")
    validate(r)
    return r

"""The profile figures a training run already logs: RUN/metrics.jsonl carries, per log interval,
img_per_s, step_ms, data_wait_frac (host time inside next() on the loader / wall time) and, on
a GPU, gpu_mem_gib. `summarise_run` averages them over the run (time-weighted, the first
interval left out as warm-up when there are more) and names the bottleneck from the wait
fraction, so a long run can be profiled without a separate command."""

from __future__ import annotations

import json
import os

from .diagnose import WAIT_LIMIT


def summarise_run(run: str) -> dict:
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no metrics; is {run} a `spotart train` run directory?")
    with open(path) as f:
        recs = [json.loads(ln) for ln in f if ln.strip()]
    recs = [r for r in recs if "event" not in r and "img_per_s" in r and "step_ms" in r]
    if not recs:
        raise ValueError(f"{path}: no logged interval with img_per_s yet; let the run log at least once")
    skipped = 1 if len(recs) > 1 else 0
    # each record covers (its step - the previous record's step) steps of step_ms each
    steps = [r["step"] - (recs[i - 1]["step"] if i else 0) for i, r in enumerate(recs)]
    use = [(max(k, 1), r) for k, r in zip(steps, recs)][skipped:]
    out = {"run": run, "intervals": len(use), "warmup_intervals_skipped": skipped, **_average(use),
           "gpu_mem_gib_max": max((r["gpu_mem_gib"] for _, r in use if "gpu_mem_gib" in r), default=None),
           "phases": {}}
    for phase in dict.fromkeys(r.get("phase", "") for _, r in use):  # in order of appearance
        out["phases"][phase] = _average([(k, r) for k, r in use if r.get("phase", "") == phase])
    wait = out["data_wait_frac"]
    if wait >= WAIT_LIMIT:
        out["sentence"] = (f"Data-bound: the step waits for data {100 * wait:.0f}% of the time; run `spotart profile` "
                           "on the same shards and preset to see which pipeline stage and which knob.")
    else:
        out["sentence"] = (f"Compute-bound: the step waits for data only {100 * wait:.0f}% of the time; "
                           "the input pipeline keeps up.")
    return out


def _average(use: list[tuple[int, dict]]) -> dict:
    """Time-weighted means over (steps, record) pairs: total images / total time, and so on."""
    secs = [k * r["step_ms"] / 1000 for k, r in use]
    total, n = sum(secs), sum(k for k, _ in use)
    return {"steps": n, "seconds": total,
            "images_per_s": sum(s * r["img_per_s"] for s, (_, r) in zip(secs, use)) / total,
            "step_ms": 1000 * total / n,
            "data_wait_frac": sum(s * r["data_wait_frac"] for s, (_, r) in zip(secs, use)) / total}


def to_markdown(s: dict) -> str:
    rows = [("steps (after warm-up)", f"{s['steps']}"), ("images/s", f"{s['images_per_s']:,.1f}"),
            ("ms per step", f"{s['step_ms']:.2f}"), ("data wait", f"{100 * s['data_wait_frac']:.1f} %"),
            ("peak GPU memory", "n/a" if s["gpu_mem_gib_max"] is None else f"{s['gpu_mem_gib_max']:.2f} GiB")]
    lines = [f"# spotart run {s['run']}", "", s["sentence"], "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    if len(s["phases"]) > 1:
        lines += ["", "| phase | steps | images/s | ms per step | data wait |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {p['steps']} | {p['images_per_s']:,.1f} | {p['step_ms']:.2f} | "
                  f"{100 * p['data_wait_frac']:.1f} % |" for name, p in s["phases"].items()]
    return "\n".join(lines) + "\n"

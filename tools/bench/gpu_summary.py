"""The headline figures of a `tools/bench/gpu_session.sh` run, from its results folder, against
issue 13's targets: summary.json (machine-readable) and a few printed lines.

Targets (benchmark targets, not tests): DALI >= 5x the 16-worker DataLoader at 224 px, per
task; data wait < 5% of the bf16 artifacts step (DALI-fed) at 64px and alexnet; decode >= 60%
of the published hardware-decoder figure for the chip (`--published-img-s`, with its source in
docs/benchmarks.md; left open when not given).

    python tools/bench/gpu_summary.py --results DIR --sections '{"tests": {...}}' --out summary.json
"""

from __future__ import annotations

import argparse
import json
import os


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pipeline(res):
    if not res:
        return None
    return {t: {k: round(v["median"][k], 2) for k in ("dali_img_s", "dataloader_img_s", "ratio", "cpu_ratio")}
            for t, v in res["tasks"].items()}


def training(res):
    if not res:
        return None
    rows = [{k: r[k] for k in ("source", "compile", "img_per_s", "step_ms", "data_wait_frac", "gpu_mem_gib")}
            for r in res["results"]]
    return {"preset": res["preset"], "device": res["device"], "rows": rows, "summary": res["summary"]}


def profile(path):
    rep = load(os.path.join(path, "report.json"))
    if not rep:
        return None
    st = rep["stages"]
    return {"pipeline_img_s": st["pipeline"]["images_per_s"], "step_img_s": st["train"]["images_per_s"],
            "together_img_s": st["end_to_end"]["images_per_s"], "data_wait_frac": rep["data_wait_frac"],
            "bottleneck": rep["bottleneck"]["sentence"]}


def targets(s, published):
    out = {}
    for key, name in (("pipeline_224", "dali_5x_dataloader_at_224"),
                      ("pipeline_224_hw1", "dali_5x_dataloader_at_224_hw_decoder_load_1")):
        if s.get(key):
            out[name] = {t: {"ratio": v["ratio"], "met": v["ratio"] >= 5} for t, v in s[key].items()}
    waits = {}
    for name in ("train_64px", "train_alexnet"):
        tr = s[name]
        if tr:
            for r in tr["rows"]:
                if r["source"] == "dali":
                    key = f"{tr['preset']} compile={r['compile']}"
                    # the host's wait in next() misses a pipeline that slows the step down on the device:
                    # DALI-fed / replayed img/s says it (H100, 64px eager: 4.8% wait, 0.78 of replayed)
                    ratio = next((x["dali_over_replay"] for x in tr["summary"] if x["compile"] == r["compile"]), None)
                    waits[key] = {"data_wait_frac": round(r["data_wait_frac"], 4), "met": r["data_wait_frac"] < 0.05,
                                  "dali_over_replay": round(ratio, 3) if ratio is not None else None}
    if waits:
        out["data_wait_under_5pct"] = waits
    dec = s["decode_224"]
    if dec:
        # the published figure is the hardware decoder's alone: compare hw_decoder_load 1 when run
        mixed = {m: v["img_s"] for m, v in dec["median"].items() if m.startswith("mixed")}
        if mixed:
            mode = "mixed:1" if "mixed:1" in mixed else max(mixed, key=mixed.get)
            best = (mixed[mode], mode)
            out["decode"] = {"mode": best[1], "img_s": round(best[0]),
                             "published_img_s": published,
                             "fraction_of_published": round(best[0] / published, 3) if published else None,
                             "met": best[0] >= 0.6 * published if published else None}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", required=True)
    ap.add_argument("--sections", default="{}", help="JSON: section -> {status, seconds}")
    ap.add_argument("--device", default="gpu")
    ap.add_argument("--elapsed", type=int, default=0)
    ap.add_argument("--published-img-s", type=float, default=None,
                    help="the chip's published hardware-decoder images/s (source in docs/benchmarks.md)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    r = args.results
    gpu = open(os.path.join(r, "gpu.txt")).read().strip() if os.path.exists(os.path.join(r, "gpu.txt")) else None
    tests = None
    if os.path.exists(os.path.join(r, "tests.log")):
        lines = [ln for ln in open(os.path.join(r, "tests.log")).read().splitlines() if ln.strip()]
        tests = lines[-1] if lines else None
    dec = load(os.path.join(r, "decode224.json"))
    s = {
        "device": args.device, "gpu": gpu, "elapsed_s": args.elapsed, "sections": json.loads(args.sections),
        "tests": tests,
        "data_224": {k: load(os.path.join(r, f"upscale{k}.json")) for k in ("224", "224plain")},
        "pipeline_64": pipeline(load(os.path.join(r, "pipe64.json"))),
        "pipeline_224": pipeline(load(os.path.join(r, "pipe224.json"))),
        "pipeline_224_hw1": pipeline(load(os.path.join(r, "pipe224hw.json"))),
        "decode_224": {"median": dec["median"], "machine": dec["machine"]} if dec else None,
        "decode_224plain": (load(os.path.join(r, "decode224plain.json")) or {}).get("median"),
        "train_64px": training(load(os.path.join(r, "train64.json"))),
        "train_alexnet": training(load(os.path.join(r, "train224.json"))),
        "profile_64px": profile(os.path.join(r, "profile-64px")),
        "profile_alexnet": profile(os.path.join(r, "profile-alexnet")),
    }
    s["targets"] = targets(s, args.published_img_s)
    with open(args.out, "w") as f:
        json.dump(s, f, indent=1)
    print(f"summary ({args.device}, {args.elapsed} s): {args.out}")
    order = ["tests", "pipe224", "pipe224hw", "train64", "train224", "decode", "profile224", "profile64", "pipe64",
             "build_scaling"]
    for name, st in sorted(s["sections"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99):
        print(f"  {name:13s} {st['status']} ({st['seconds']} s)")
    if tests:
        print(f"  pytest: {tests}")
    for name, t in s["targets"].items():
        print(f"  target {name}: {json.dumps(t)}")


if __name__ == "__main__":
    main()

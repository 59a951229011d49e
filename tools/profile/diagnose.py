"""The bottleneck in one sentence, with the knob to turn. A pure function of the measured figures.

Rules, in order:
1. Data-bound when the end-to-end step waits for data more than `WAIT_LIMIT` of its time.
   a. The pipeline alone outruns the step alone, yet the step waits: on a GPU the batches come
      unevenly (raise the prefetch depth); on the CPU the pipeline and the step fight for the
      same cores (split the threads).
   b. Otherwise the pipeline is too slow: its most expensive stage (truncated-pipeline
      differences) names the knob: decode on a GPU -> hardware decoder load; CPU stages ->
      threads while cores are left, else the CPU is saturated (decode on the GPU); GPU stages ->
      batch size (per-batch launch cost). Decode on a GPU with every JPEG on the hardware decoder
      and the threads idle is no I/O wait either: on the H200 at 224 px (2026-11-28: context and
      jigsaw, read alone 74-83k img/s, pipeline 10-11k) 8 vs 16 threads, prefetch 2 vs 4 and full
      operator concurrency all stayed within +-8%; batch size is the knob left.
2. Interference when the step rarely waits, yet the two together run below `SHARE_LIMIT` of the
   slower of the two alone: they slow each other down on what they share. On the CPU: the cores
   (split the threads). On a GPU: the device and the host (H100, 64px preset, 2026-11-27: data wait
   4.6%, together 0.76 of the step alone): first the hardware decoder load (the JPEG engines take
   decoding off the SMs the step uses), then `--compile` (a compiled step leaves more of both: there
   DALI-fed / replayed went from 0.78 eager to 0.91 compiled), else a larger batch.
3. Otherwise compute-bound: the step is the limit; `--compile` when it is off (fewer kernel
   launches, fused elementwise work), else a larger batch when the GPU is under-used."""

from __future__ import annotations

WAIT_LIMIT = 0.10
SHARE_LIMIT = 0.85
KNOBS = ("threads", "hardware decoder load", "prefetch depth", "batch size", "compile")


def diagnose(f: dict) -> dict:
    """`f`: pipeline_ips, train_ips, e2e_ips, wait_frac, stage_ms (stage -> own ms per batch),
    device ("cpu"/"gpu"), num_threads, cpu_count, pipeline_cores (cores busy in pipeline threads
    while the pipeline ran alone), prefetch, hw_decoder_load, batch_size, compile, gpu_util (mean
    %, or None). -> {"kind", "stage", "knob", "sentence"}."""
    wait, dev = f["wait_frac"], f["device"]
    head = (f"End to end {f['e2e_ips']:.0f} img/s (pipeline alone {f['pipeline_ips']:.0f}, training step alone "
            f"{f['train_ips']:.0f}); the step waits for data {100 * wait:.0f}% of the time")
    if wait >= WAIT_LIMIT:
        if f["pipeline_ips"] >= 1.2 * f["train_ips"]:
            if dev == "cpu":
                return _out("data", "contention", "threads", head +
                            f": the pipeline alone is fast enough, but on the CPU it and the training step share "
                            f"{f['cpu_count']} cores; split them (fewer DALI threads via `--set num_threads=`, or "
                            f"`--set cpu_threads=` for torch) or move the step to a GPU.")
            return _out("data", "delivery", "prefetch depth", head +
                        f": the pipeline alone is fast enough but delivers unevenly; raise the prefetch depth "
                        f"(`--set prefetch={f['prefetch'] + 1}`).")
        stage_ms = f.get("stage_ms") or {}
        stage = max(stage_ms, key=stage_ms.get) if stage_ms else "pipeline"
        share = stage_ms.get(stage, 0) / max(sum(v for v in stage_ms.values() if v > 0), 1e-9)
        what = f"{head}: the pipeline is the bottleneck, mostly its {stage} stage ({100 * share:.0f}% of its cost)"
        cpu_stage = dev == "cpu" or stage in ("read",)
        if stage == "decode" and dev == "gpu" and f["hw_decoder_load"] < 0.95:
            new = min(1.0, round(f["hw_decoder_load"] + 0.2, 2))
            return _out("data", stage, "hardware decoder load", what +
                        f"; give the hardware JPEG decoder more of the work "
                        f"(`--set hw_decoder_load={new}`, now {f['hw_decoder_load']}).")
        if cpu_stage or stage == "decode":
            busy = f["pipeline_cores"] >= 0.8 * f["num_threads"]
            if f["num_threads"] < f["cpu_count"] and busy:
                new = min(f["cpu_count"], 2 * f["num_threads"])
                return _out("data", stage, "threads", what +
                            f"; its {f['num_threads']} DALI threads are busy ({f['pipeline_cores']:.1f} cores) and "
                            f"the machine has {f['cpu_count']}: raise them (`--set num_threads={new}`).")
            if not busy and dev == "gpu" and stage == "decode":
                return _out("data", stage, "batch size", what +
                            f"; every JPEG is on the hardware decoder already and the DALI threads are not the "
                            f"limit ({f['pipeline_cores']:.1f} of {f['num_threads']} cores busy): the limit is on the "
                            f"device side, where a larger batch amortises each operator's per-batch cost "
                            f"(`--set batch_size={2 * f['batch_size']}`).")
            if not busy:
                return _out("data", stage, "threads", what +
                            f"; its threads use only {f['pipeline_cores']:.1f} of {f['num_threads']} cores, so "
                            f"they wait on I/O: more threads hide it (`--set num_threads={2 * f['num_threads']}`), "
                            f"or use faster storage.")
            return _out("data", stage, "threads", what +
                        f"; all {f['cpu_count']} CPU cores are busy: run the pipeline on the GPU (mixed decode) or "
                        f"a machine with more cores per GPU.")
        return _out("data", stage, "batch size", what +
                    f"; this stage runs on the GPU, where a larger batch amortises the per-batch launch cost "
                    f"(`--set batch_size={2 * f['batch_size']}`).")
    share = f["e2e_ips"] / max(min(f["pipeline_ips"], f["train_ips"]), 1e-9)
    if share < SHARE_LIMIT:
        what = (f"{head}, yet together they run at {100 * share:.0f}% of the slower of the two alone: they slow "
                f"each other down")
        if dev == "cpu":
            return _out("interference", "contention", "threads", what +
                        f" on the {f['cpu_count']} CPU cores they share; split them (fewer DALI threads via "
                        f"`--set num_threads=`, or `--set cpu_threads=` for torch).")
        if f["hw_decoder_load"] < 0.95:
            return _out("interference", "decode", "hardware decoder load", what +
                        f" on the GPU; move JPEG decoding off the SMs the step uses onto the hardware decoder "
                        f"(`--set hw_decoder_load=1`, now {f['hw_decoder_load']}).")
        if not f["compile"]:
            return _out("interference", "train", "compile", what +
                        " on the GPU and the host; `--set compile=true` makes the step need less of both.")
        return _out("interference", "train", "batch size", what +
                    f" on the GPU; a larger batch (`--set batch_size={2 * f['batch_size']}`) spends less of it "
                    f"on launches.")
    head = head + f": compute-bound, the pipeline has {f['pipeline_ips'] / max(f['train_ips'], 1e-9):.1f}x headroom"
    util = f.get("gpu_util")
    if not f["compile"]:
        return _out("compute", "train", "compile", head +
                    "; speed up the step itself: `--set compile=true` fuses its elementwise work and cuts launches.")
    if util is not None and util < 70:
        return _out("compute", "train", "batch size", head +
                    f"; the GPU is only {util:.0f}% busy: a larger batch (`--set batch_size={2 * f['batch_size']}`) "
                    f"gives it more work per launch.")
    return _out("compute", "train", "batch size", head +
                "; the step is compiled and the device busy: this is the model's speed on this machine "
                f"(a larger batch, `--set batch_size={2 * f['batch_size']}`, may still help).")


def _out(kind, stage, knob, sentence):
    assert knob in KNOBS
    return {"kind": kind, "stage": stage, "knob": knob, "sentence": sentence}

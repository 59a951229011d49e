"""`spotart profile` on the CPU: one tiny profile (DALI CPU backend over shards built in the test)
checked for every file, the schema and consistent figures; the HTML opened in headless Chromium;
--compare, --from-run; the stage pipelines' geometry; the samplers and the diagnosis rules."""

import ctypes
import json
import os
import shutil
import subprocess
import threading
import time

import pytest
from click.testing import CliRunner

from spotart.tools.cli import main
from spotart.tools.profile.diagnose import KNOBS, WAIT_LIMIT, diagnose
from spotart.tools.profile.sampler import Sampler, thread_group
from spotart.tools.profile.schema import SCHEMA

jsonschema = pytest.importorskip("jsonschema")

BATCHES = 12
TINY = ["--preset", "tiny", "--set", "device=cpu", "--set", "batch_size=8", "--set", "num_threads=1",
        "--set", "cpu_threads=1", "--batches", str(BATCHES), "--rounds", "3", "--warmup", "3", "--profile-steps", "2"]
CHROMIUM = "/usr/bin/chromium"


# Delays planted in the profiled run, so its figures can be checked against something the
# profiler did not compute itself: a sleep in the pipeline's augment stage (a DALI python_function
# after the resize/flip) and a sleep in the host's next() on the loader.
STAGE_SLEEP = 0.06
WAIT_SLEEP = 0.06


def _sleep_batch(*batch):
    time.sleep(STAGE_SLEEP)
    return batch[0] if len(batch) == 1 else batch


class SlowLoader:
    """The loader the profile builds, with WAIT_SLEEP added to every batch the host asks for."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for b in self.loader:
            time.sleep(WAIT_SLEEP)
            yield b


@pytest.fixture(scope="module")
def report_dir(sample_shards, tmp_path_factory):
    from nvidia.dali import fn

    import spotart.pipeline.build as build
    import spotart.tools.profile.run as run

    augment, build_loader = build.augment, run.build_loader
    out = str(tmp_path_factory.mktemp("profile") / "report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "augment", lambda img, cfg: fn.python_function(
            augment(img, cfg), function=_sleep_batch, batch_processing=True))
        mp.setattr(run, "build_loader", lambda *a: SlowLoader(build_loader(*a)))
        res = CliRunner().invoke(main, ["profile", "--shards", sample_shards, "--out", out, *TINY],
                                 catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "waiting for data" in res.output and "report.html" in res.output
    return out


def load(out):
    with open(os.path.join(out, "report.json")) as f:
        return json.load(f)


def test_profile_writes_every_file_and_the_json_validates(report_dir):
    r = load(report_dir)
    jsonschema.validate(r, SCHEMA)
    expected = {"report.json", "report.md", "report.html", "throughput.png", "timeline.png", "utilisation.png",
                "train_step_trace.json"}
    assert set(r["files"]) == expected
    for name in expected:
        path = os.path.join(report_dir, name)
        assert os.path.getsize(path) > 200, name
    for name in ("throughput.png", "timeline.png", "utilisation.png"):
        with open(os.path.join(report_dir, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(report_dir, "train_step_trace.json")) as f:
        assert json.load(f)["traceEvents"]
    assert r["config"]["train"]["preset"] == "tiny" and r["config"]["pipeline"]["device"] == "cpu"
    assert r["config"]["runtime"]["phase"] == "artifacts"  # the main phase by default
    assert r["versions"]["dali"].startswith("2.") and r["machine"]["gpu"] is None
    md = open(os.path.join(report_dir, "report.md")).read()
    assert r["bottleneck"]["sentence"] in md and "Top kernels" in md and "![throughput.png](throughput.png)" in md


def test_figures_are_positive_and_consistent(report_dir):
    r = load(report_dir)
    st, ps = r["stages"], r["pipeline_stages"]
    for s in list(st.values()) + list(ps.values()):
        assert s["images_per_s"] > 0 and s["batches"] == BATCHES
        assert s["images_per_s"] == pytest.approx(BATCHES * 8 / s["seconds"])
    # together cannot beat the slower of the two alone (generous: a shared 2-core machine is noisy)
    e2e = st["end_to_end"]["images_per_s"]
    assert e2e <= 1.3 * min(st["pipeline"]["images_per_s"], st["train"]["images_per_s"])
    assert r["consistency"]["end_to_end_over_slowest_alone"] == pytest.approx(
        e2e / min(st["pipeline"]["images_per_s"], st["train"]["images_per_s"]))
    # the planted stage sleep shows up in the augment stage's own cost, and only there
    own = {k: ps[k]["own_ms_per_batch"] for k in ("read", "decode", "augment", "generate")}
    assert own["augment"] >= 0.8 * 1000 * STAGE_SLEEP, own
    assert max(own, key=own.get) == "augment", own  # the largest own cost (loose: a shared machine is noisy)
    assert st["pipeline"]["ms_per_batch"] >= 1000 * max(STAGE_SLEEP, WAIT_SLEEP)
    # the planted host wait shows up in every step's wait, and the timeline accounts for the wall time
    tl = r["timeline"]
    assert len(tl["wait_ms"]) == len(tl["compute_ms"]) == BATCHES
    assert min(tl["wait_ms"]) >= 1000 * WAIT_SLEEP
    total_ms = 1000 * st["end_to_end"]["seconds"]
    accounted = sum(tl["wait_ms"]) + sum(tl["compute_ms"]) + st["end_to_end"]["drain_ms"]
    assert 0.9 * total_ms <= accounted <= total_ms
    assert r["data_wait_frac"] >= BATCHES * 1000 * WAIT_SLEEP / total_ms
    # the step alone never waits for data (replayed batches): its steps are shorter by the wait
    assert st["end_to_end"]["median_ms_per_batch"] > st["train"]["median_ms_per_batch"]
    # DALI's threads did the pipeline's work while it ran alone, and the step ran on the main thread
    assert st["pipeline"]["pipeline_cores"] > 0
    assert any(name.startswith("[DALI]") for name in st["pipeline"]["cpu"])
    assert st["train"]["cpu"]["main"]["cores"] > 0.2 and st["train"]["cpu"]["main"]["threads"] == 1
    marks = [m["stage"] for m in r["utilisation"]["marks"]]
    assert marks == ["read", "decode", "augment", "generate"] + ["pipeline", "train", "end_to_end"] * 3
    assert all(st[k]["rounds"] == 3 for k in st)
    assert all(m["end"] > m["start"] for m in r["utilisation"]["marks"])
    k = r["kernels"]
    assert k["device"] == "cpu" and k["kernels"][0]["self_ms"] >= k["kernels"][-1]["self_ms"]
    assert any("conv" in x["name"] for x in k["kernels"])  # a conv net's step is mostly convolutions
    assert r["bottleneck"]["knob"] in KNOBS
    assert r["bottleneck"]["kind"] == "data"  # planted: the loader is slower than the step


@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason=f"headless Chromium not installed ({CHROMIUM}); `apt-get install -y chromium` to run this")
def test_html_opens_in_headless_chromium_without_errors(report_dir, tmp_path):
    page = os.path.join(report_dir, "report.html")
    res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          f"--user-data-dir={tmp_path / 'chromium'}", "--enable-logging=stderr", "--v=0",
                          "--dump-dom", "file://" + os.path.abspath(page)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    console = [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console  # no script error, no failed resource
    # the page's own load handler ran and every embedded chart decoded
    assert 'data-images="3"' in res.stdout and 'data-broken-images="0"' in res.stdout
    assert "Bottleneck" in res.stdout and "Inside the pipeline" in res.stdout


def test_compare_reports_ratios_and_changes(report_dir, tmp_path):
    before = tmp_path / "before"
    before.mkdir()
    r = load(report_dir)
    r["stages"]["pipeline"]["images_per_s"] /= 2  # "before" had half the pipeline rate
    r["config"]["pipeline"]["prefetch"] = 1
    with open(before / "report.json", "w") as f:
        json.dump(r, f)
    after = tmp_path / "after"
    shutil.copytree(report_dir, after)
    res = CliRunner().invoke(main, ["profile", "--compare", str(before), "--out", str(after)])
    assert res.exit_code == 0, res.output
    c = json.load(open(after / "compare.json"))
    fig = {x["figure"]: x for x in c["figures"]}
    assert fig["pipeline alone, images/s"]["ratio"] == pytest.approx(2.0)
    assert fig["training step alone, images/s"]["ratio"] == pytest.approx(1.0)
    assert c["config_changes"] == [{"key": "pipeline.prefetch", "before": 1, "after": 2}]
    for name in ("compare.md", "compare.html", "compare.png"):
        assert os.path.getsize(after / name) > 200
    assert "x2.00" in open(after / "compare.md").read()


def test_compare_rejects_a_directory_without_a_report(report_dir, tmp_path):
    res = CliRunner().invoke(main, ["profile", "--compare", str(tmp_path), "--out", report_dir])
    assert res.exit_code != 0 and "no profile report" in res.output


def test_from_run_averages_the_training_jsonl(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    recs = [  # the first interval is warm-up (slow) and left out
        {"step": 10, "phase": "a", "img_per_s": 10.0, "step_ms": 800.0, "data_wait_frac": 0.9},
        {"step": 20, "phase": "a", "img_per_s": 160.0, "step_ms": 100.0, "data_wait_frac": 0.5},
        {"step": 50, "phase": "b", "img_per_s": 320.0, "step_ms": 50.0, "data_wait_frac": 0.1},
        {"step": 50, "event": "end"},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in recs))
    out = tmp_path / "summary"
    res = CliRunner().invoke(main, ["profile", "--from-run", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    s = json.load(open(out / "run_summary.json"))
    # 10 steps of 100 ms + 30 steps of 50 ms: 2.5 s, 40 steps
    assert s["steps"] == 40 and s["seconds"] == pytest.approx(2.5)
    assert s["step_ms"] == pytest.approx(62.5)
    assert s["data_wait_frac"] == pytest.approx((1.0 * 0.5 + 1.5 * 0.1) / 2.5)
    assert s["images_per_s"] == pytest.approx((1.0 * 160 + 1.5 * 320) / 2.5)
    assert "Data-bound" in res.output and s["data_wait_frac"] >= WAIT_LIMIT
    assert s["phases"]["a"]["steps"] == 10 and s["phases"]["a"]["images_per_s"] == pytest.approx(160)
    assert s["phases"]["b"]["steps"] == 30 and s["phases"]["b"]["data_wait_frac"] == pytest.approx(0.1)
    res = CliRunner().invoke(main, ["profile", "--from-run", str(tmp_path)])
    assert res.exit_code != 0 and "no metrics" in res.output


def test_stage_pipelines_are_what_they_claim(sample_shards):
    from spotart.pipeline.config import PipelineConfig
    from spotart.tools.profile.stages import stage_pipeline

    cfg = PipelineConfig(shards=sample_shards, task="artifacts", batch_size=4, image_size=24, device="cpu",
                         num_threads=1, params={"mask_size": 3, "theta": 0.6})
    jpg = stage_pipeline(cfg, "read").run()[0]
    assert all(jpg.at(i)[:2].tolist() == [0xFF, 0xD8] for i in range(4))  # encoded JPEG bytes
    img = stage_pipeline(cfg, "decode").run()[0]
    shapes = [img.at(i).shape for i in range(4)]
    assert all(s[2] == 3 and max(s[:2]) <= 48 * 1.5 for s in shapes)  # decoded crop windows, any size
    img = stage_pipeline(cfg, "augment").run()[0]
    assert all(img.at(i).shape == (24, 24, 3) for i in range(4))  # resized to the task's input
    out = stage_pipeline(cfg, "generate").run()
    assert out[0].at(0).shape == (3, 24, 24) and out[1].at(0).shape == (1, 3, 3)  # image, Omega
    with pytest.raises(ValueError, match="unknown stage"):
        stage_pipeline(cfg, "crop")


def _spin(name: str, seconds: float, started: threading.Event):
    ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME: the name /proc shows
    started.set()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_sampler_sees_a_busy_thread():
    started = threading.Event()
    with Sampler(0.05) as s:
        # long enough that the sampler sees the thread even when the suite loads both cores
        t = threading.Thread(target=_spin, args=("busy7spin", 1.6, started))
        t.start()
        started.wait()
        with s.stage("spin"):
            time.sleep(1.5)
        t.join()
    groups = s.cpu_by_group([s.marks[0][1:]])
    assert thread_group("busy7spin") == "busy#spin"
    assert 0.15 < groups["busy#spin"]["cores"] <= 1.05  # one thread: at most one core
    assert groups["busy#spin"]["threads"] == 1
    assert groups["main"]["cores"] < 0.5  # the main thread slept
    assert s.cpu_timeline() and s.gpu_timeline() == []  # no GPU here


BASE = dict(pipeline_ips=1000.0, train_ips=1000.0, e2e_ips=500.0, wait_frac=0.5,
            stage_ms={"read": 1.0, "decode": 6.0, "augment": 1.0, "generate": 1.0}, device="cpu", num_threads=2,
            cpu_count=8, pipeline_cores=1.9, prefetch=2, hw_decoder_load=0.65, batch_size=64, compile=False,
            gpu_util=None)


@pytest.mark.parametrize("change, kind, stage, knob", [
    ({}, "data", "decode", "threads"),                                        # busy threads, cores left
    ({"pipeline_cores": 0.5}, "data", "decode", "threads"),                   # idle threads: I/O
    ({"num_threads": 8, "pipeline_cores": 7.9}, "data", "decode", "threads"),  # CPU saturated
    ({"device": "gpu"}, "data", "decode", "hardware decoder load"),
    ({"device": "gpu", "hw_decoder_load": 1.0}, "data", "decode", "threads"),
    # the H200's 224 px context profile (2026-11-28): hardware decoder only, threads half idle
    ({"pipeline_ips": 10399.0, "train_ips": 15143.0, "e2e_ips": 10566.0, "wait_frac": 0.18, "device": "gpu",
      "stage_ms": {"read": 1.72, "decode": 3.84, "augment": 2.95, "generate": 1.92}, "num_threads": 8,
      "cpu_count": 16, "pipeline_cores": 4.89, "hw_decoder_load": 1.0, "batch_size": 128}, "data", "decode",
     "batch size"),
    ({"device": "gpu", "stage_ms": {"read": 1, "decode": 1, "augment": 1, "generate": 5}}, "data", "generate",
     "batch size"),
    ({"pipeline_ips": 3000.0, "device": "gpu"}, "data", "delivery", "prefetch depth"),
    ({"pipeline_ips": 3000.0}, "data", "contention", "threads"),
    ({"wait_frac": 0.02, "e2e_ips": 950.0}, "compute", "train", "compile"),
    ({"wait_frac": 0.02, "e2e_ips": 950.0, "compile": True, "gpu_util": 40.0, "device": "gpu"}, "compute", "train",
     "batch size"),
    # the step rarely waits, yet together they run at 60% of the slower alone: they share something
    ({"wait_frac": 0.02, "e2e_ips": 600.0}, "interference", "contention", "threads"),
    ({"wait_frac": 0.02, "e2e_ips": 600.0, "device": "gpu"}, "interference", "decode", "hardware decoder load"),
    ({"wait_frac": 0.02, "e2e_ips": 600.0, "device": "gpu", "hw_decoder_load": 1.0}, "interference", "train",
     "compile"),
    ({"wait_frac": 0.02, "e2e_ips": 600.0, "device": "gpu", "hw_decoder_load": 1.0, "compile": True},
     "interference", "train", "batch size"),
    # the H100's 64px profile (2026-11-27): pipeline 21,593, step 8,467, together 6,451 img/s, 4.6% waiting
    ({"pipeline_ips": 21593.0, "train_ips": 8467.0, "e2e_ips": 6451.0, "wait_frac": 0.046, "device": "gpu",
      "cpu_count": 16, "num_threads": 4, "batch_size": 256}, "interference", "decode", "hardware decoder load"),
])
def test_diagnosis_names_the_bottleneck_and_knob(change, kind, stage, knob):
    d = diagnose({**BASE, **change})
    assert (d["kind"], d["stage"], d["knob"]) == (kind, stage, knob)
    assert d["sentence"].endswith(".") and "img/s" in d["sentence"]


def test_diagnosis_suggests_a_concrete_setting():
    assert "num_threads=4" in diagnose(BASE)["sentence"]
    assert "hw_decoder_load=0.85" in diagnose({**BASE, "device": "gpu"})["sentence"]
    assert "prefetch=3" in diagnose({**BASE, "pipeline_ips": 3000.0, "device": "gpu"})["sentence"]


def test_bad_options_give_one_line_errors(tmp_path):
    res = CliRunner().invoke(main, ["profile", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "--shards" in res.output
    res = CliRunner().invoke(main, ["profile", "--shards", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
                                    "--preset", "tiny", "--set", "device=cpu"])
    assert res.exit_code != 0 and "does not exist" in res.output
    res = CliRunner().invoke(main, ["profile", "--shards", str(tmp_path), "--out", str(tmp_path / "o"),
                                    "--pipeline-set", "seed=3"])
    assert res.exit_code != 0 and "pipeline override" in res.output


class FakeNvml:
    """Stands in for NVML on a CPU machine: a GPU at 50% with 1.5 GiB used."""

    def read(self):
        return 50.0, 1.5


def test_gpu_samples_flow_into_the_figures_and_charts(report_dir, tmp_path):
    from spotart.tools.profile.report import write_report

    with Sampler(0.02) as s:
        s.nvml = FakeNvml()
        with s.stage("busy"):
            time.sleep(0.1)
    g = s.gpu_summary([s.marks[0][1:]])
    assert g["util_pct_mean"] == 50.0 and g["mem_gib_max"] == 1.5 and g["samples"] >= 2
    # a report with GPU figures renders (the utilisation chart grows its GPU panel) and validates
    r = load(report_dir)
    r["utilisation"]["gpu"] = [{"t": m["start"], "util_pct": 30.0 + i, "mem_gib": 2.0}
                               for i, m in enumerate(r["utilisation"]["marks"])]
    r["stages"]["end_to_end"]["gpu"] = {"util_pct_mean": 31.5, "mem_gib_max": 2.0, "samples": 7}
    r["stages"]["end_to_end"]["torch_peak_mem_gib"] = 0.75
    out = tmp_path / "gpu"
    out.mkdir()
    write_report(r, str(out))
    jsonschema.validate(load(out), SCHEMA)
    md = open(out / "report.md").read()
    assert "| 31.5 | 2.00 | 0.75 |" in md
    assert os.path.getsize(out / "utilisation.png") > os.path.getsize(os.path.join(report_dir, "utilisation.png"))

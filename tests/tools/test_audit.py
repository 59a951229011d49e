"""`spotart audit`: the cues' features, the cheaters and the jigsaw decoder on hand-made data; the
audit's teeth on shards with a planted shortcut (found with the countermeasure off, near chance
with it on); the report and --fail-above; every pipeline parameter of every task reaching the
pipeline through --set in train, preview and audit."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from spotart.pipeline.config import TASKS, task_params_class
from spotart.tools.audit import AuditConfig, audit
from spotart.tools.audit import cheaters as CH
from spotart.tools.audit import cues as C
from spotart.tools.audit.generators import pixel_damage
from spotart.tools.audit.report import write_report
from spotart.tools.cli import main

# ---- features ------------------------------------------------------------------------------


def smooth(n, size, cells, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(n, 1, cells, cells, generator=g), size=(size, size), mode="bicubic",
                         align_corners=False)


def test_channel_shifts_find_a_planted_offset():
    base = smooth(64, 24, 8)[:, 0]
    x = torch.stack([base, torch.roll(base, shifts=(1, -2), dims=(1, 2)), base], 1)  # green moved by (1, -2)
    f = C.channel_shifts(x)
    # pair G-R: red equals green moved back by (-1, 2); pair R-B: aligned
    np.testing.assert_allclose(f[:, 0].mean(), -1.0, atol=0.1)
    np.testing.assert_allclose(f[:, 1].mean(), 2.0, atol=0.1)
    np.testing.assert_allclose(f[:, 10:12].abs().max(), 0.0, atol=0.05)
    assert f[:, 2].min() > 0.75  # a clear peak (the roll wraps at the border)
    # sub-pixel: half a pixel of shift reads as about half a pixel in the gradient estimate
    fine = smooth(64, 48, 8)
    half = F.interpolate(fine, scale_factor=0.5, mode="area")[:, 0]
    moved = F.interpolate(torch.roll(fine, shifts=1, dims=3), scale_factor=0.5, mode="area")[:, 0]
    lk = C.channel_shifts(torch.stack([half, moved, half], 1))[:, 4]  # G-R pair, Lucas-Kanade dx
    assert -0.7 < lk.median() < -0.3


def test_facing_edges_pick_the_touching_side():
    img = smooth(256, 30, 10).expand(-1, 3, -1, -1)
    p1 = img[..., 10:20, 10:20]
    for k, (dy, dx) in enumerate(C.DIRECTIONS):
        if dy and dx:
            continue
        p2 = img[..., 10 + 10 * dy:20 + 10 * dy, 10 + 10 * dx:20 + 10 * dx]
        jumps = C.facing_edges(p1, p2, 2).view(-1, 8, 3)[:, [1, 3, 4, 6], 0]
        assert (jumps.argmin(1) == [1, 3, 4, 6].index(k)).float().mean() > 0.7  # chance 0.25


def test_band_masks_are_the_k_px_on_each_side():
    region = torch.zeros(1, 1, 12, 12)
    region[..., 4:8, 4:8] = 1
    inside, outside, rest = C.band_masks(region, 1)
    assert inside.sum() == 16 - 4 and outside.sum() == 36 - 16
    assert torch.equal(inside + outside + rest, torch.ones_like(region))


def test_pixel_damage_pastes_neighbourhood_means_into_dropped_cells():
    img = torch.rand(2, 3, 16, 16)
    omega = torch.ones(2, 1, 4, 4)
    omega[0, 0, 1, 2] = 0
    out = pixel_damage(img, omega, 3)
    assert torch.equal(out[1], img[1])
    cells = F.adaptive_avg_pool2d(img[:1], 4)
    want = cells[0, :, 0:3, 1:4].mean((1, 2))
    np.testing.assert_allclose(out[0, :, 4:8, 8:12].numpy(), want[:, None, None].expand(3, 4, 4).numpy(), atol=1e-6)
    keep = torch.ones(16, 16, dtype=torch.bool)
    keep[4:8, 8:12] = False
    assert torch.equal(out[0][:, keep], img[0][:, keep])


# ---- cheaters ------------------------------------------------------------------------------


def test_cheater_learns_a_cue_and_stays_at_chance_without_one():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (2000,), generator=g)
    x = torch.randn(2000, 5, generator=g)
    x[:, 0] += 2.0 * y
    model = CH.fit(x[:1000], y[:1000], 4)
    assert model.accuracy(x[1000:], y[1000:]) > 0.7  # Bayes: 0.76
    blind = CH.fit(x[:1000, 1:], y[:1000], 4)
    assert abs(blind.accuracy(x[1000:, 1:], y[1000:]) - 0.25) < 0.05


def test_balanced_accuracy_of_a_constant_guess_is_chance():
    y = torch.tensor([0] * 90 + [1] * 10)
    assert CH.balanced_accuracy(torch.zeros(100, dtype=torch.long), y, 2) == 0.5


def test_jigsaw_decoding():
    from spotart.pipeline.permutations import maximal_hamming_set

    perms = maximal_hamming_set(30, seed=0)
    truth = torch.tensor([0, 7, 29, 12])
    cells = CH.tile_cells(truth, perms)
    adj = CH.adjacency_labels(cells)
    assert adj[..., 0].sum() == 4 * 6 and adj[..., 1].sum() == 4 * 6
    i = int(np.where(perms[7] == 4)[0][0])      # the tile cut from the centre cell
    j = int(np.where(perms[7] == 5)[0][0])      # ... and the one right of it
    assert adj[1, i, j, 0] == 1 and adj[1, j, i, 0] == 0
    # exact per-tile knowledge decodes to the permutation; so do exact adjacencies alone
    unary = torch.full((4, 9, 9), -10.0).scatter(2, cells[..., None], 0.0)
    assert torch.equal(CH.decode(perms, unary, None), truth)
    pair = (adj.float() * 20 - 10)
    assert torch.equal(CH.decode(perms, None, pair), truth)
    assert CH.jigsaw_scores(truth, truth, perms) == (1.0, 1.0)
    assert 1 / 9 <= CH.jigsaw_chance(perms) < 0.25
    x, yy = CH.subsample_negatives(torch.randn(4, 72, 3), adj[..., 0][:, ~torch.eye(9, dtype=torch.bool)], 0)
    assert yy.sum() == 24 and len(yy) == 4 * (6 + CH.NEGATIVES) and x.shape == (len(yy), 3)


# ---- planted shortcuts through the real pipelines -------------------------------------------


def write_shards(root, kind: str, n: int = 600, size: int = 32, seed: int = 0) -> str:
    """`n` PNGs of a fine grey texture (correlation ~2 px) -> shards. kind "ramp" adds a
    brightness ramp (25 x + 75 y grey levels) so every cell of a 3x3 grid has its own mean."""
    from spotart.shards.build import build_shards
    from spotart.shards.spec import ShardSpec

    rng = np.random.default_rng(seed)
    d = root / "img" / "a"
    d.mkdir(parents=True)
    x = np.linspace(-1, 1, size)
    for i in range(n):
        coarse = rng.normal(0, 1, (size // 2, size // 2)).astype(np.float32)
        tex = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))
        img = 128 + 25 * tex[..., None] * np.ones(3) + rng.normal(0, 3, (size, size, 3))
        if kind == "ramp":
            img += (25 * x[None, :] + 75 * x[:, None])[..., None]
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{i:05d}.png")
    build_shards([str(root / "img")], str(root / "s"), ShardSpec(max_count=200), progress=False)
    return str(root / "s")


@pytest.fixture(scope="module")
def texture_shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("texture"), "texture")


@pytest.fixture(scope="module")
def ramp_shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("ramp"), "ramp")


# crop = the whole image, no flips: the planted pattern stays where it was drawn
WHOLE = ("min_area=1.0", "flip=false")


def small(task, shards, out, **kw):
    return AuditConfig(task=task, shards=shards, out=str(out), preset="tiny", images=512, test_images=256,
                       batch_size=64, **kw)


def rows_by(report):
    return {(r["countermeasure"], r["planted"]): r for r in report["cues"]}


@pytest.mark.slow
def test_context_chromatic_aberration_planted(texture_shards, tmp_path):
    """Green magnified by 10%: with colour dropping off the cheater reads the neighbour's
    position from the channel offsets; colour dropping (and projection) take it away."""
    r = audit(small("context", texture_shards, tmp_path, overrides=WHOLE, cues=("chroma",), aberration=0.1))
    rows = rows_by(r)
    drop = rows[("colour dropping", True)]
    assert drop["accuracy_without"] > r["chance"] + 0.3
    assert drop["accuracy_with"] < r["chance"] + 0.06
    assert rows[("projection", True)]["accuracy_with"] < r["chance"] + 0.06
    assert abs(rows[("colour dropping", False)]["accuracy_without"] - r["chance"]) < 0.06  # nothing planted


def test_context_gap_removes_edge_continuity(texture_shards, tmp_path):
    r = audit(small("context", texture_shards, tmp_path, overrides=(*WHOLE, "jitter=0", "pixelate_prob=0"),
                    cues=("edges",), countermeasures=("gap",)))
    (row,) = r["cues"]
    assert row["with"]["changes"] == {} and row["without"]["changes"] == {"gap": 0}
    assert row["accuracy_without"] > r["chance"] + 0.1
    assert row["accuracy_with"] < r["chance"] + 0.06


@pytest.mark.slow
def test_jigsaw_tile_normalisation_removes_a_brightness_ramp(ramp_shards, tmp_path):
    r = audit(small("jigsaw", ramp_shards, tmp_path, overrides=WHOLE, cues=("stats",),
                    countermeasures=("per-tile normalisation",)))
    (row,) = r["cues"]
    assert row["accuracy_without"] > 0.9 and row["permutation_accuracy_without"] > 0.5
    assert row["accuracy_with"] < r["chance"] + 0.05


# ---- report, CLI, --fail-above ---------------------------------------------------------------


def test_cli_writes_the_report_and_fails_above(ramp_shards, tmp_path):
    """Brightness ramp with the context task's colour dropping: the centre patch and its neighbour
    differ in brightness along the ramp, which no context countermeasure removes."""
    args = ["audit", "--task", "context", "--shards", ramp_shards, "--preset", "tiny", "--images", "512",
            "--test-images", "256", "--batch-size", "64", "--cue", "stats", "--aberration", "0",
            "--set", "min_area=1.0", "--set", "flip=false"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a"), "--fail-above", "10"])
    assert res.exit_code == 1, res.output
    assert "FAILED" in res.output and "stats / colour dropping" in res.output
    r = json.loads((tmp_path / "a" / "report.json").read_text())
    assert r["task"] == "context" and r["chance"] == 0.125 and r["passed"] is False
    (row,) = r["cues"]
    assert {"cue", "countermeasure", "accuracy_with", "accuracy_without"} <= set(row)
    assert row["accuracy_with"] > 0.4
    for name in ("report.md", "report.html", "audit.png"):
        assert (tmp_path / "a" / name).stat().st_size > 500
    with Image.open(tmp_path / "a" / "audit.png") as im:
        assert im.format == "PNG"
    assert "| intensity and colour statistics | colour dropping |" in (tmp_path / "a" / "report.md").read_text()


def test_planted_and_off_by_default_probes_do_not_fail():
    from spotart.tools.audit.runner import verdict

    def row(acc, planted=False, default=True):
        return {"cue": "c", "countermeasure": "m", "accuracy_with": acc, "planted": planted, "default": default}

    report = {"chance": 0.1, "cues": [row(0.12), row(0.9, planted=True), row(0.9, default=False)]}
    assert verdict(report, 5.0)["passed"]
    report["cues"].append(row(0.2))
    v = verdict(report, 5.0)
    assert not v["passed"] and len(v["failures"]) == 1


def test_report_files_from_a_hand_made_report(tmp_path):
    rows = [{"cue": "edges", "cue_name": "edge continuity, boundary pattern", "sees": "strips", "countermeasure": "gap",
             "planted": False, "default": True, "accuracy_with": 0.12, "accuracy_without": 0.6,
             "permutation_accuracy_with": 0.001, "permutation_accuracy_without": 0.3}]
    report = {"task": "jigsaw", "chance": 1 / 9, "chance_label": "cell", "cues": rows, "network": None,
              "config": {"images": 10, "test_images": 5, "shards": "s", "test_shards": None, "strip": 2, "hidden": 0},
              "pipeline": {"count": 100}, "image_size": 64, "preset": "64px", "seconds": 1.0,
              "permutation_chance": 0.01, "fail_above": None, "failures": [], "passed": True}
    paths = write_report(report, str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["report.json", "report.md", "report.html", "audit.png"]
    md = (tmp_path / "report.md").read_text()
    assert "| edge continuity, boundary pattern | gap | 12.0 | 60.0 | +0.9 | 0.1 | 30.0 |" in md
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()


def test_generator_tasks_need_a_run_and_bad_input_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="pass --run RUN"):
        AuditConfig(task="artifacts", shards="s", out="o")
    with pytest.raises(ValueError, match="unknown cue"):
        AuditConfig(task="context", shards="s", out="o", cues=("nope",))
    res = CliRunner().invoke(main, ["audit", "--task", "inpainting", "--shards", str(tmp_path), "--out",
                                    str(tmp_path / "o")])
    assert res.exit_code != 0 and "pass --run RUN" in res.output
    res = CliRunner().invoke(main, ["audit", "--task", "context", "--shards", str(tmp_path), "--out",
                                    str(tmp_path / "o"), "--preset", "tiny", "--countermeasure", "nope"])
    assert res.exit_code != 0 and "has no countermeasure(s) ['nope']" in res.output


@pytest.mark.slow
def test_artifacts_audit_of_a_run(sample_shards, tmp_path):
    """A (barely) trained artifacts run: the audit judges its autoencoder and repair network and
    puts the run's own discriminator accuracy beside the cheaters."""
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", str(run), "--task", "artifacts", "--preset", "tiny", "--shards",
                                    sample_shards, "--set", "steps=4", "--set", "batch_size=8", "--set", "progress=false"])
    assert res.exit_code == 0, res.output
    r = audit(AuditConfig(task="artifacts", shards=sample_shards, out=str(tmp_path / "o"), run=str(run), images=32,
                          test_images=16, batch_size=8))
    assert [(x["cue"], x["countermeasure"]) for x in r["cues"]] == [
        ("frequency", "real path through the autoencoder"), ("band", "damage in feature space")]
    assert r["chance"] == 0.5 and r["network"]["step"] == 4 and 0 <= r["network"]["accuracy"] <= 1
    for x in r["cues"]:
        assert 0 <= x["accuracy_with"] <= 1 and 0 <= x["accuracy_without"] <= 1


# ---- every pipeline parameter is a --set key in train, preview and audit ---------------------

# a valid non-default value for every field of every task's pipeline parameters (tiny preset)
VALUES = {
    "artifacts": {"mask_size": 4, "theta": 0.7},
    "inpainting": {"mode": "blocks", "overlap": 3, "overlap_weight": 5.0, "block_count": 4, "block_side_min": 0.15,
                   "block_side_max": 0.25, "block_max_fraction": 0.2, "region_cells": 6, "region_fraction_min": 0.15,
                   "region_fraction_max": 0.35},
    "context": {"patch": 100, "gap": 40, "jitter": 5, "pixelate_prob": 0.5, "pixelate_min": 12, "pixelate_max": 80,
                "color_drop": False, "noise_ratio": 0.02, "projection": True},
    "jigsaw": {"crop": 240, "cell": 70, "tile": 60, "count": 50, "criterion": "min", "perm_seed": 1,
               "permutations": "PERMS", "random_gap": False, "grey_prob": 0.5, "channel_jitter": 1, "tile_norm": False},
}
COMMON = {"min_area": 0.5, "flip": False, "aberration": 0.03}  # PipelineConfig switches beside the params


def cases():
    return [(t, k, v) for t, vals in VALUES.items() for k, v in vals.items()]


def test_the_table_covers_every_field():
    for task in TASKS:
        fields = {f.name for f in dataclasses.fields(task_params_class(task))}
        assert fields == set(VALUES.get(task, {})), f"{task}: add the new field(s) to VALUES"


def text(v):
    return str(v).lower() if isinstance(v, bool) else str(v)


@pytest.fixture(scope="module")
def perms_file(tmp_path_factory):
    from spotart.pipeline.permutations import maximal_hamming_set, save_permutations

    return save_permutations(str(tmp_path_factory.mktemp("perms") / "p100"), maximal_hamming_set(100))


def want(task, key, value, perms_file):
    return perms_file if value == "PERMS" else value


@pytest.fixture
def captured(monkeypatch):
    """Patch train, preview and the audit's loader to record the config they were given."""
    import spotart.pipeline.loader
    import spotart.tools.preview
    import spotart.trainer.loop

    got = {}

    def fake_train(cfg, run_dir, resume=False):
        got["train"] = cfg
        return {"step": 0, "last": {}, "signal": 0}

    def fake_preview(pcfg, out):
        got["preview"] = pcfg
        return 1, 1

    class FakeLoader:
        def __init__(self, pcfg, device=None, state=None):
            got["audit"] = pcfg
            raise RuntimeError("captured")

    monkeypatch.setattr(spotart.trainer.loop, "train", fake_train)
    monkeypatch.setattr(spotart.tools.preview, "preview", fake_preview)
    monkeypatch.setattr(spotart.pipeline.loader, "DaliLoader", FakeLoader)
    return got


def shards_stub(tmp_path):
    (tmp_path / "s").mkdir(exist_ok=True)
    (tmp_path / "s" / "manifest.json").write_text("{}")
    return str(tmp_path / "s")


def run_stub(tmp_path, task, monkeypatch):
    """A run directory for the generator tasks: its config, and no networks (the loader is
    reached first in the patched audit)."""
    from spotart.tools.audit import generators
    from spotart.trainer.config import preset_dict

    run = tmp_path / f"run-{task}"
    run.mkdir(exist_ok=True)
    (run / "config.json").write_text(json.dumps({"train": preset_dict(task, "tiny")}))
    monkeypatch.setattr(generators, "load_generator", lambda *a, **k: (None, None))
    return ["--run", str(run)]


@pytest.mark.parametrize("task, key, value", cases() + [("context", k, v) for k, v in COMMON.items()])
def test_every_pipeline_key_reaches_the_pipeline(task, key, value, tmp_path, perms_file, captured, monkeypatch):
    value = want(task, key, value, perms_file)
    shards = shards_stub(tmp_path)
    r = CliRunner()
    common = key in COMMON

    def check(pcfg_or_cfg, where):
        got = getattr(pcfg_or_cfg, key) if common else getattr(pcfg_or_cfg.pipeline if where == "train"
                                                                 else pcfg_or_cfg.params, key)
        assert got == value, f"{where}: {key} = {got!r}, want {value!r}"

    forms = [f"{key}={text(value)}"] + ([] if common else [f"pipeline.{key}={text(value)}"])
    for form in forms:
        res = r.invoke(main, ["train", str(tmp_path / "run"), "--task", task, "--preset", "tiny", "--shards", shards,
                              "--set", form])
        assert res.exit_code == 0, res.output
        check(captured.pop("train"), "train")
    res = r.invoke(main, ["preview", "--task", task, "--preset", "tiny", "--shards", shards, "--out",
                          str(tmp_path / "p.png"), "--set", forms[-1]])
    assert res.exit_code == 0, res.output
    check(captured.pop("preview"), "preview")
    extra = run_stub(tmp_path, task, monkeypatch) if task in ("artifacts", "inpainting") else []
    res = r.invoke(main, ["audit", "--task", task, "--preset", "tiny", "--shards", shards, "--out", str(tmp_path / "a"),
                          "--set", forms[-1], "--aberration", "0", *extra])
    assert "captured" in res.output, res.output
    check(captured.pop("audit"), "audit")


def test_64px_preset_keeps_the_jigsaw_gap_the_audit_asked_for():
    """The audit found the paper's 225/75/64 geometry, scaled to 64 px (18 px tiles, 3 px of
    play), lets edge continuity place 45% of the tiles; the preset uses the released layer's
    255/85/64 (16 px tiles, 5 px of play). docs/benchmarks.md, shortcut audit."""
    from spotart.trainer.config import build_config

    geo = build_config("jigsaw", "64px").pipeline.geometry(64)
    assert (geo.cell, geo.tile) == (21, 16)
    assert build_config("jigsaw", "alexnet").pipeline.geometry(224).tile == 64  # the paper's at full scale


@pytest.mark.parametrize("drop, proj", [(True, False), (False, True)])
def test_context_probes_follow_the_countermeasure_the_task_uses(drop, proj):
    """Paper defaults (colour dropping) and `small` (projection): the countermeasure in use is the
    default probe, on = the task as it is, off = both off; the other is measured alone."""
    from spotart.pipeline.context import ContextParams
    from spotart.tools.audit.probes import probes

    params = ContextParams(color_drop=drop, projection=proj)
    ps = probes("context", params, aberration=0.5)
    used, other = ("colour dropping", "projection") if drop else ("projection", "colour dropping")
    default = [p for p in ps if p.countermeasure == used]
    assert {p.cue for p in default} == {"stats", "lowfreq", "chroma"} and all(p.default for p in default)
    for p in default:
        assert p.on.changes == () and dict(p.off.changes) == {"color_drop" if drop else "projection": False}
    alone = [p for p in ps if p.countermeasure == other]
    assert {p.cue for p in alone} == {"chroma"} and not any(p.default for p in alone)
    for p in alone:  # on: the other one alone; off: both off
        on = {**{"color_drop": drop, "projection": proj}, **dict(p.on.changes)}
        off = {**{"color_drop": drop, "projection": proj}, **dict(p.off.changes)}
        assert on == {"color_drop": not drop, "projection": not proj}
        assert off == {"color_drop": False, "projection": False}
    assert sum(p.planted for p in ps) == 2

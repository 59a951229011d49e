"""Linear evaluation: exact accuracy bookkeeping, pooling geometry, and a planted problem whose
classes are obvious in colour, through the real DALI pipeline on CPU."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from spotart.shards.build import build_shards
from spotart.shards.spec import ShardSpec
from spotart.trainer.eval_linear import (LinearEvalConfig, linear_eval, markdown_table, open_backbone,
                                         pool_size, topk_correct, write_results)
from spotart.trainer.random_backbone import export_random_backbone, parse_random_spec

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def test_topk_correct_on_a_known_case():
    logits = torch.tensor([
        [9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0],   # label 0: top-1
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],   # label 2: rank 5 -> top-5 only
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],   # label 1: rank 6 -> neither
        [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0],   # label 4: rank 5 -> top-5 only
        [1.0, 2.0, 3.0, 9.0, 4.0, 5.0, 6.0],   # label -1: unlabelled, not counted
    ])
    labels = torch.tensor([0, 2, 1, 4, -1])
    assert topk_correct(logits, labels) == {1: 1, 5: 3}
    assert topk_correct(logits, labels, ks=(1, 2, 7)) == {1: 1, 2: 1, 7: 4}
    # fewer classes than k: top-k is every class, so every labelled sample counts
    assert topk_correct(logits[:, :3], torch.tensor([0, 2, 1, 1, -1])) == {1: 2, 5: 4}


def test_pool_sizes_follow_the_zhang_protocol_for_alexnet():
    # AlexNet at 224 px: conv1 55 -> 96x10x10, conv2 27 -> 256x6x6, conv3-4 13 -> 384x5x5, conv5 13 -> 256x6x6
    assert [pool_size(c, s, 9216) for c, s in [(96, 55), (256, 27), (384, 13), (384, 13), (256, 13)]] == [10, 6, 5, 5, 6]
    assert pool_size(384, 4, 9216) == 4  # never upsampled past the layer's side
    assert pool_size(4096, 8, 16) == 1


def test_random_backbone_spec_and_file(tmp_path):
    assert parse_random_spec("random") == ("64px", 0)
    assert parse_random_spec("random:tiny:3") == ("tiny", 3)
    assert parse_random_spec("runs/a.pt") is None
    out = str(tmp_path / "r.pt")
    cfg = export_random_backbone(out, "tiny", seed=3)
    assert cfg["task"] == "random" and cfg["image_size"] == 32
    a, _ = open_backbone(out)
    b, _ = open_backbone("random:tiny:3")
    c, _ = open_backbone("random:tiny:4")
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.conv.weight"], sc["conv1.conv.weight"])
    with pytest.raises(ValueError, match="no such backbone"):
        open_backbone(str(tmp_path / "missing.pt"))


def colour_collection(root, per_class, seed, folder=lambda name: name):
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        name = folder(name)
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            img = np.asarray(rgb, float) + rng.normal(0, 25, (40, 40, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(root, name, f"{i}.png"))


@pytest.fixture(scope="module")
def colour_shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("colours")
    out = {}
    names = sorted(COLOURS)
    rotate = {a: b for a, b in zip(names, names[1:] + names[:1])}  # every colour filed under another's name
    for split, n, seed, folder in (("train", 24, 0, str), ("val", 8, 1, str), ("rotated", 8, 1, rotate.get)):
        colour_collection(str(d / f"src_{split}"), n, seed, folder)
        build_shards([str(d / f"src_{split}")], str(d / split), ShardSpec(max_count=64), progress=False)
        out[split] = str(d / split)
    return out


@pytest.mark.parametrize("cache", [True, False])
def test_planted_colour_classes_are_found(colour_shards, tmp_path, cache):
    cfg = LinearEvalConfig(train_shards=colour_shards["train"], val_shards=colour_shards["val"], image_size=32,
                           batch_size=16, epochs=4 if cache else 3, lr=3e-3, dims=512, cache=cache, device="cpu",
                           num_threads=1)
    seen = []
    result = linear_eval("random:tiny:0", cfg, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == list(range(1, cfg.epochs + 1))
    assert result["num_classes"] == 4 and result["val_samples"] == 32
    layers = result["layers"]
    assert [r["layer"] for r in layers] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    for r in layers:
        assert r["dims"] == r["channels"] * r["pool"] ** 2 and r["pool"] <= r["side"]
        assert r["top5"] == 1.0  # 4 classes: every label is in the top 5
        # a count over 32 images: top-1 is a multiple of 1/32
        assert abs(r["top1"] * 32 - round(r["top1"] * 32)) < 1e-9
    # chance is 0.25; colour is linearly separable in the early layers of any trunk
    assert max(r["top1"] for r in layers) >= 0.9
    assert layers[0]["top1"] >= 0.75
    json_path, md_path = write_results(result, str(tmp_path / "out" / "lin"))
    assert json.load(open(json_path))["layers"][0]["top1"] == layers[0]["top1"]
    md = open(md_path).read()
    assert md == markdown_table(result) and md.count("\n| conv") == 5


def test_wrong_validation_labels_score_zero(colour_shards):
    """Negative control: the val images filed under the wrong colour's class. A classifier that
    learnt colour must now miss every one; anything else would mean the score does not come from
    the val labels."""
    cfg = LinearEvalConfig(train_shards=colour_shards["train"], val_shards=colour_shards["rotated"], image_size=32,
                           batch_size=16, epochs=4, lr=3e-3, dims=512, cache=True, device="cpu", num_threads=1)
    layers = linear_eval("random:tiny:0", cfg)["layers"]
    assert layers[0]["top1"] == 0.0 and layers[0]["top5"] == 1.0


def test_mismatched_splits_and_missing_shards_are_named(colour_shards, sample_shards, tmp_path):
    with pytest.raises(ValueError, match="--train-shards"):
        LinearEvalConfig(train_shards=str(tmp_path), val_shards=colour_shards["val"])
    cfg = LinearEvalConfig(train_shards=sample_shards, val_shards=colour_shards["val"], device="cpu")
    with pytest.raises(ValueError, match="classes differ"):
        linear_eval("random:tiny", cfg)


def test_pretext_table_reports_seeds_spread_and_the_floor(tmp_path):
    from spotart.tools import comparison as bench

    def run(seed, top1, pretext=None, count=None):
        return {"seed": seed, "steps": 9 if pretext else 0, "train_seconds": 60.0 if pretext else 0.0,
                "pretext": pretext, "config": {"pipeline": {"count": count}} if count else None,
                "linear": {"layers": [{"layer": f"conv{i + 1}", "top1": t, "top5": min(1.0, 2 * t)}
                                      for i, t in enumerate(top1)]}}

    results = {"supervised": [run(0, [0.1, 0.2, 0.3, 0.5, 0.4], {"acc": 0.9}), run(1, [0.1, 0.2, 0.3, 0.3, 0.4], {"acc": 0.8})],
               "jigsaw": [run(0, [0.1, 0.15, 0.1, 0.1, 0.1], {"acc": 0.5}, 100), run(1, [0.1, 0.17, 0.1, 0.1, 0.1], {"acc": 0.3}, 100)],
               "random": [run(0, [0.05, 0.04, 0.03, 0.02, 0.01]), run(1, [0.07, 0.04, 0.03, 0.02, 0.01])]}
    info = {"machine": "test", "command": "--preset tiny", "preset": "tiny", "budget": "b", "classes": 10,
            "train_images": 30, "val_images": 20, "dims": 512, "eval_epochs": 1, "features": "f"}
    text = bench.table(results, info)
    rows = {ln.split(" | ")[0][2:]: ln for ln in text.splitlines()
            if ln.startswith("| ") and " | conv" in ln and not ln.startswith("| task")}
    assert list(rows) == ["random", "jigsaw", "supervised"]  # fixed order
    assert "**6.0 ± 1.4**" in rows["random"]  # mean ± sample std of 5 and 7, best layer in bold
    assert "**40.0 ± 14.1**" in rows["supervised"] and "| conv4 | +34.0 |" in rows["supervised"]
    assert "| conv2 | +10.0 |" in rows["jigsaw"] and "acc 0.400 ± 0.141 (chance 0.01)" in rows["jigsaw"]
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nother section\n")
    bench.write_section(str(doc), text)
    bench.write_section(str(doc), text.replace("40.0 ± 14.1", "60.0 ± 1.0"))
    out = doc.read_text()
    assert out.startswith("# Benchmarks\n\nother section\n") and out.count(bench.START) == 1
    assert "**60.0 ± 1.0**" in out and "40.0 ± 14.1" not in out
    # a section after the table keeps its blank line through every rewrite
    doc.write_text(out + "\n## after\n")
    bench.write_section(str(doc), text)
    assert f"{bench.END}\n\n## after\n" in doc.read_text()


def test_geometry_rows_say_what_each_trunk_sees():
    from spotart.tools.comparison import geometry_row

    # context and jigsaw cut a 128 px upscaled crop at 64px, so conv5 is 2x2, not 1x1
    ctx = geometry_row("context", "64px", probe_size=64)
    assert ctx["input"] == 31 and ctx["pretext_sides"] == [8, 4, 2, 2, 2] and ctx["probe_sides"][-1] == 4
    jig = geometry_row("jigsaw", "64px")
    assert jig["input"] == 32 and jig["input_norm"] == "per_image"  # the released Caffe layer's 255/85/64
    assert jig["probe_size"] == 128 and geometry_row("artifacts", "64px")["input"] == 64

"""`evaluate_pretext`: the task's own metrics on held-out data from a run's checkpoint."""

import pytest
import torch

from spotart.trainer.config import build_config
from spotart.trainer.eval_pretext import evaluate_pretext, markdown
from spotart.trainer.loop import train

BASE = ["progress=false", "log_every=5", "batch_size=16", "device=cpu", "lr_schedule=constant", "lr=1e-3"]


class Batches:
    """A finite list of batches (the DaliLoader interface, one epoch)."""

    def __init__(self, batches):
        self.batches, self.epoch = batches, 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        yield from self.batches

    def state_dict(self):
        return {"kind": "list"}

    def load_state_dict(self, state):
        pass


def test_context_accuracy_separates_a_trained_run_from_chance(sample_shards, tmp_path):
    from spotart.pipeline.config import PipelineConfig
    from spotart.pipeline.loader import DaliLoader

    cfg = build_config("context", "tiny", BASE + ["steps=60", f"shards={sample_shards}"])
    pcfg = PipelineConfig(shards=sample_shards, task="context", batch_size=16, image_size=32, device="cpu",
                          num_threads=1, params={"pixelate_prob": 0.0})
    batch = next(iter(DaliLoader(pcfg, "cpu")))
    torch.manual_seed(0)
    train(cfg, str(tmp_path / "run"), loader=Batches([batch] * 60))
    seen = evaluate_pretext(str(tmp_path / "run"), sample_shards, loader=Batches([batch, batch]))
    assert seen["task"] == "context" and seen["images"] == 32 and seen["batches"] == 2
    assert seen["headline"]["metric"] == "acc"
    assert seen["metrics"]["acc"] >= 0.75  # the memorised batch, now through eval-mode BatchNorm
    # a batch with every label moved to another position: the memorised answers are all wrong
    shifted = dict(batch, position=(batch["position"] + 1) % 8)
    wrong = evaluate_pretext(str(tmp_path / "run"), sample_shards, loader=Batches([shifted]))
    assert wrong["metrics"]["acc"] <= 1 - seen["metrics"]["acc"] + 1e-6
    assert "| acc |" in markdown(seen)


def test_artifacts_run_on_held_out_shards(sample_shards, tmp_path):
    cfg = build_config("artifacts", "tiny", BASE + ["steps=4", "ae_fraction=0.5", "data=synthetic"])
    train(cfg, str(tmp_path / "run"))
    out = evaluate_pretext(str(tmp_path / "run"), sample_shards, batch_size=8, max_batches=2, num_threads=1,
                           device="cpu")
    assert out["images"] == 16 and out["phase"] == "artifacts"
    m = out["metrics"]
    for k in ("acc_real", "acc_fake", "mask_acc", "mask_iou", "mask_auc"):
        assert 0.0 <= m[k] <= 1.0
    assert out["headline"] == {"metric": "mask_auc", "value": m["mask_auc"], "higher_is_better": True}


def test_missing_checkpoint_is_named(tmp_path, sample_shards):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        evaluate_pretext(str(tmp_path), sample_shards)


def test_cli_train_export_and_both_evaluations(sample_shards, tmp_path):
    """spotart train (the real DALI loader) -> export-backbone -> eval pretext -> eval linear."""
    import json

    from click.testing import CliRunner

    from spotart.tools.cli import main

    run, backbone = str(tmp_path / "run"), str(tmp_path / "jigsaw.pt")
    cli = CliRunner()
    r = cli.invoke(main, ["train", run, "--task", "jigsaw", "--preset", "tiny", "--shards", sample_shards,
                          "--steps", "3", "--batch-size", "8", "--device", "cpu", "--set", "num_threads=1",
                          "--set", "progress=false"])
    assert r.exit_code == 0, r.output
    r = cli.invoke(main, ["export-backbone", run, "--out", backbone])
    assert r.exit_code == 0, r.output
    r = cli.invoke(main, ["eval", "pretext", run, "--shards", sample_shards, "--max-batches", "1",
                          "--num-threads", "1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    result = json.load(open(f"{run}/pretext_eval.json"))
    assert result["task"] == "jigsaw" and result["images"] == 8 and 0 <= result["metrics"]["acc"] <= 1
    r = cli.invoke(main, ["eval", "linear", backbone, "--train-shards", sample_shards, "--val-shards", sample_shards,
                          "--epochs", "1", "--batch-size", "32", "--cache-features", "--num-threads", "1",
                          "--device", "cpu", "--dims", "256"])
    assert r.exit_code == 0, r.output
    lin = json.load(open(str(tmp_path / "jigsaw.linear.json")))
    assert lin["backbone_config"]["task"] == "jigsaw" and lin["val_samples"] == 96
    assert "| conv5 |" in open(str(tmp_path / "jigsaw.linear.md")).read()
    r = cli.invoke(main, ["eval", "linear", str(tmp_path / "nope.pt"), "--train-shards", sample_shards,
                          "--val-shards", sample_shards])
    assert r.exit_code != 0 and "no such backbone" in r.output

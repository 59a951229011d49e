"""`spotart train` and `spotart export-backbone` through click (in-process)."""

import json
import os

import torch
from click.testing import CliRunner

from spotart.tools.cli import main


def test_train_then_export_backbone(tmp_path):
    run = str(tmp_path / "run")
    r = CliRunner().invoke(main, ["train", run, "--preset", "tiny", "--synthetic", "--steps", "4", "--batch-size", "4",
                                  "--device", "cpu", "--set", "ae_fraction=0.5", "--set", "log_every=2"])
    assert r.exit_code == 0, r.output
    saved = json.load(open(os.path.join(run, "config.json")))
    assert saved["train"]["steps"] == 4 and saved["train"]["batch_size"] == 4 and saved["train"]["data"] == "synthetic"
    assert saved["precision"] == "fp32" and saved["channels_last"] is False
    # synthetic data is the task's own pipeline over procedural images: its parameters are saved too
    assert saved["pipeline"]["params"] == {"mask_size": 4, "theta": 0.6} == saved["train"]["pipeline"]
    assert os.path.getsize(os.path.join(run, "train.log")) > 0
    out = str(tmp_path / "trunk.pt")
    r = CliRunner().invoke(main, ["export-backbone", run, "--out", out])
    assert r.exit_code == 0, r.output
    assert "step 4" in r.output and torch.load(out, weights_only=True)["config"]["preset"] == "tiny"


def test_cli_errors_are_one_line(tmp_path):
    run = str(tmp_path / "run")
    r = CliRunner().invoke(main, ["train", run, "--preset", "huge", "--synthetic"])
    assert r.exit_code != 0 and "unknown preset 'huge'" in r.output
    r = CliRunner().invoke(main, ["train", run, "--preset", "tiny", "--synthetic", "--set", "thetta=0.5"])
    assert r.exit_code != 0 and "unknown config key 'thetta'" in r.output
    r = CliRunner().invoke(main, ["train", run, "--preset", "tiny", "--device", "cpu"])
    assert r.exit_code != 0 and "no shards given" in r.output
    r = CliRunner().invoke(main, ["train", run, "--resume", "--preset", "tiny", "--synthetic", "--device", "cpu"])
    assert r.exit_code != 0 and "no checkpoint" in r.output
    r = CliRunner().invoke(main, ["export-backbone", str(tmp_path), "--out", str(tmp_path / "x.pt")])
    assert r.exit_code != 0 and "no checkpoint" in r.output
    assert CliRunner().invoke(main, ["train", "--help"]).exit_code == 0

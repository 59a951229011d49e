"""Checkpoint pictures: every run draws what its task sees, with its networks' outputs."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from spotart.trainer.config import build_config
from spotart.trainer.data import pipeline_config
from spotart.trainer.loop import train
from spotart.trainer.models import build_models
from spotart.trainer.runtime import resolve_runtime
from spotart.trainer.synthetic import synthetic_batches
from spotart.trainer.tasks import get_task
from spotart.trainer.visuals import MIN_PANEL, PAD, TEXT_H, render_preview, save_task_grid

BASE = ["data=synthetic", "progress=false", "device=cpu", "batch_size=4"]


def test_every_checkpoint_writes_a_grid(tmp_path):
    cfg = build_config("artifacts", "tiny", BASE + ["steps=4", "ckpt_every=2", "ae_fraction=0.5"])
    train(cfg, str(tmp_path / "run"))
    pics = sorted(os.listdir(tmp_path / "run" / "visuals"))
    assert pics == ["step_00000002.png", "step_00000004.png"]
    with Image.open(tmp_path / "run" / "visuals" / pics[-1]) as im:
        # image | dropped cells | reconstruction | repaired | predicted heat map, 4 rows
        assert im.size[0] == PAD + 5 * (MIN_PANEL + PAD)


@pytest.mark.parametrize("name", ["artifacts", "context", "jigsaw", "inpainting"])
def test_model_outputs_have_the_batch_geometry(name, tmp_path):
    cfg = build_config(name, "tiny", BASE)
    task, models = get_task(name), build_models(cfg)
    batch = next(iter(synthetic_batches(pipeline_config(cfg, resolve_runtime(cfg)), "cpu", count=1)))
    with torch.no_grad():
        out = task.model_outputs(models, batch, cfg)
    b = batch[next(iter(batch))].shape[0]
    if name == "artifacts":
        assert out["reconstruction"].shape == out["repaired"].shape == batch["image"].shape
        assert out["dropped_prob"].shape == batch["mask"].shape and out["real_prob"].shape == (b,)
        assert 0 <= out["dropped_prob"].min() and out["dropped_prob"].max() <= 1
    elif name == "inpainting":
        hole = batch["weight"] == 0
        outside = out["fill"].masked_select(hole.expand_as(out["fill"]))
        assert torch.equal(outside, batch["target"].masked_select(hole.expand_as(out["fill"])))  # context kept
    else:
        assert out["pred"].shape == (b,) and out["pred"].dtype == torch.int64
    size = save_task_grid(task, models, batch, cfg, str(tmp_path / "g.png"))
    assert size == Image.open(tmp_path / "g.png").size


def test_heat_map_shows_the_predicted_dropped_cells(tmp_path):
    n, s = 1, 32
    batch = {"image": torch.zeros(n, 3, s, s), "mask": torch.ones(n, 1, 2, 2)}
    prob = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # only the top-left cell called dropped
    outputs = {"reconstruction": torch.zeros(n, 3, s, s), "repaired": torch.zeros(n, 3, s, s),
               "dropped_prob": prob, "real_prob": torch.tensor([0.3])}
    render_preview(batch, "artifacts", str(tmp_path / "h.png"), outputs=outputs)
    px = np.asarray(Image.open(tmp_path / "h.png").convert("RGB")).astype(int)
    x0, y0 = PAD + 4 * (MIN_PANEL + PAD), PAD + TEXT_H + PAD  # the fifth panel of the first row
    assert px[y0 + 5, x0 + 5].tolist() == [255, 255, 0]          # dropped: yellow
    assert px[y0 + MIN_PANEL - 5, x0 + MIN_PANEL - 5].tolist() == [0, 0, 0]  # kept: black

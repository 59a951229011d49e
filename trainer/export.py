"""Export the trained trunk for transfer, and load it back.

`export_backbone(run_dir, out)` writes {"state_dict": trunk weights, "config": plain dict, with the
input normalisation a probe must apply (probe.py)} that `torch.load(out, weights_only=True)` opens; `load_backbone(out)` rebuilds the `Trunk` from it
(eval mode), which is what the linear evaluation and fine-tuning start from."""

from __future__ import annotations

import os

import torch

from .models import load_models
from .nets.trunk import Trunk, TrunkConfig
from .tasks import get_task

FORMAT = "spotart-trunk-1"


def export_backbone(run_dir: str, out: str, checkpoint: str | None = None) -> dict:
    path = checkpoint or os.path.join(run_dir, "checkpoints", "last.pt")
    cfg, models, ckpt = load_models(path)
    task = get_task(cfg.task)
    trunk = task.trunk(models)
    config = {"format": FORMAT, "preset": cfg.preset, "trunk": cfg.trunk.to_dict(), "task": cfg.task,
              "step": int(ckpt["step"]), "image_size": cfg.image_size, "input_norm": task.input_norm(cfg),
              "source": os.path.abspath(path)}
    payload = {"state_dict": {k: v.detach().clone() for k, v in trunk.state_dict().items()}, "config": config}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp.{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, out)
    return config


def load_backbone(path: str, map_location="cpu") -> Trunk:
    d = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(d, dict) or d.get("config", {}).get("format") != FORMAT:
        raise ValueError(f"{path}: not a spotart backbone (write one with `spotart export-backbone RUN --out FILE`)")
    trunk = Trunk(TrunkConfig(**d["config"]["trunk"]))
    trunk.load_state_dict(d["state_dict"], strict=True)
    return trunk.eval()

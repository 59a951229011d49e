"""`spotart preview`: one batch of a task's pipeline drawn as a PNG grid (drawing in
trainer/visuals.py, which also draws a run's checkpoints with its networks' outputs)."""

from __future__ import annotations

from ..trainer.visuals import render_preview


def preview(cfg, out: str) -> tuple[int, int]:
    """One batch of the real pipeline (`cfg` as training would use it) drawn to `out`."""
    import torch

    from ..pipeline.loader import DaliLoader

    loader = DaliLoader(cfg, torch.device("cpu"))
    batch = next(iter(loader))
    perms = cfg.params.load_set() if cfg.task == "jigsaw" else None
    gap = cfg.params.geometry(cfg.image_size).gap if cfg.task == "context" else None
    return render_preview(batch, cfg.task, out, permutations=perms, context_gap=gap)

"""The floor of the comparison: an untrained trunk (the trunk's own initialisation, Kaiming
normal convolutions, BatchNorm at identity), written in the backbone format of export.py so
`spotart eval linear` reads it like any trained one. The linear evaluation spells it
`random:PRESET[:SEED]` and builds it in memory; `export_random_backbone` writes the file."""

from __future__ import annotations

import os

import torch

from .config import PRESETS
from .export import FORMAT
from .nets.trunk import Trunk, trunk_config


def random_backbone(preset: str = "64px", seed: int = 0, trunk=None, image_size: int | None = None) -> dict:
    """{"state_dict", "config"} of a freshly initialised trunk of `preset` (or of the given
    `trunk` config and image size, e.g. a preset with --set overrides)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for a random backbone; choose one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    torch.manual_seed(seed)
    trunk = Trunk(trunk_config(trunk if trunk is not None else p["trunk"]))
    config = {"format": FORMAT, "preset": preset, "trunk": trunk.config.to_dict(), "task": "random", "step": 0,
              "image_size": image_size or p["image_size"], "input_norm": None, "source": f"random:{preset}:{seed}"}
    return {"state_dict": {k: v.detach().clone() for k, v in trunk.state_dict().items()}, "config": config}


def parse_random_spec(spec: str) -> tuple[str, int] | None:
    """"random:64px:3" -> ("64px", 3); "random" -> ("64px", 0); a path -> None."""
    parts = spec.split(":")
    if parts[0] != "random" or len(parts) > 3:
        return None
    preset = parts[1] if len(parts) > 1 and parts[1] else "64px"
    try:
        seed = int(parts[2]) if len(parts) > 2 else 0
    except ValueError:
        raise ValueError(f"{spec!r}: the seed of random:PRESET:SEED must be an integer") from None
    return preset, seed


def export_random_backbone(out: str, preset: str = "64px", seed: int = 0, trunk=None,
                           image_size: int | None = None) -> dict:
    payload = random_backbone(preset, seed, trunk, image_size)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp.{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, out)
    return payload["config"]

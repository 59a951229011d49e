"""Checkpoints: everything a run needs to continue exactly, loadable with weights_only=True.

Contents: the unwrapped models' state_dicts (never DDP's `module.` or compile's `_orig_mod.`
prefixes: the loop saves the canonical modules, not their wrappers), optimiser and GradScaler
states, the step, the resolved config as a plain dict, and per rank the data position and the
RNG states. Written to a temporary file in the same directory and renamed over the target, so a
crash mid-write never leaves a truncated last.pt.
"""

from __future__ import annotations

import glob
import hashlib
import os
import random

import numpy as np
import torch

from .config import config_diff

FORMAT = 1


class CheckpointError(RuntimeError):
    pass


def rng_state(device: torch.device) -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device):
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(path: str, *, models: dict, optimizers: dict, scaler, step: int, config: dict,
                    rank_states: list, extra: dict | None = None):
    state = {
        "format": FORMAT,
        "step": step,
        "config": config,
        "models": {k: m.state_dict() for k, m in models.items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "scaler": scaler.state_dict(),
        "rank_states": rank_states,
        **(extra or {}),
    }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def keep_numbered(last: str, step: int, keep: int):
    """Link last.pt as step_XXXXXXXX.pt and delete all but the newest `keep` of those."""
    if keep <= 0:
        return
    d = os.path.dirname(last)
    numbered = os.path.join(d, f"step_{step:08d}.pt")
    tmp = numbered + ".tmp"
    if os.path.exists(tmp):
        os.remove(tmp)
    os.link(last, tmp)
    os.replace(tmp, numbered)
    for old in sorted(glob.glob(os.path.join(d, "step_*.pt")))[:-keep]:
        os.remove(old)


def load_checkpoint(path: str, device: torch.device | str = "cpu", hint: str = "") -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no checkpoint{'; ' + hint if hint else ''}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated/corrupt file, or not a spotart checkpoint
        raise CheckpointError(f"{path}: cannot be read as a checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a spotart training checkpoint (format {FORMAT})")
    return ckpt


def check_config(ckpt: dict, config: dict, path: str):
    """A checkpoint continues only the run it came from: same config up to the runtime keys."""
    diff = config_diff(ckpt["config"], config)
    if diff:
        detail = ", ".join(f"{k}: {_get(ckpt['config'], k)!r} -> {_get(config, k)!r}" for k in diff[:6])
        raise CheckpointError(f"{path} was written by a run with another config ({detail}); resume with the "
                              "run's own config (drop --preset/--set) or start a new run directory")


def _get(d, dotted):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def restore(ckpt: dict, models: dict, optimizers: dict, scaler):
    for k, m in models.items():
        m.load_state_dict(ckpt["models"][k], strict=True)
    for k, o in optimizers.items():
        o.load_state_dict(ckpt["optimizers"][k])
    scaler.load_state_dict(ckpt["scaler"])


def state_digest(models: dict) -> str:
    """sha256 over every parameter and buffer, in name order: equal digests = identical weights."""
    h = hashlib.sha256()
    for name, m in sorted(models.items()):
        for k, v in sorted(m.state_dict().items()):
            h.update(f"{name}.{k}".encode())
            h.update(v.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()

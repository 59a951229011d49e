"""Checkpoints: everything a run needs to continue exactly, loadable with weights_only=True.

Contents: the unwrapped models' state_dicts (never DDP's `module.` or compile's `_orig_mod.`
prefixes: the loop saves the canonical modules, not their wrappers), optimiser and GradScaler
states, the step, the resolved config as a plain dict, and per rank the data position and the
RNG states. Written to a temporary file in the same directory, fsynced, and renamed over the
target, then the directory is fsynced: a crash or a power cut never leaves a truncated last.pt.
The checkpoint it replaces stays as previous.pt (a hard link: no copy, no extra space until
last.pt is replaced), and `load_latest` falls back to it when last.pt cannot be read. A full
disk is a `CheckpointWriteError` saying so; the existing checkpoints are untouched.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import logging
import os
import random
import shutil

import numpy as np
import torch

from .config import TrainConfig, config_diff

FORMAT = 1
PREVIOUS = "previous.pt"

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    pass


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed (`full`: the disk is full); the files already there are intact."""

    def __init__(self, message: str, full: bool):
        super().__init__(message)
        self.full = full


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
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        _keep_previous(path)
        os.replace(tmp, path)
        _fsync_dir(d)
    except (OSError, RuntimeError) as err:
        # a failed write inside torch's zip writer surfaces as RuntimeError ("unexpected pos")
        if not isinstance(err, OSError) and not _nearly_full(d):
            raise
        raise _write_error(path, tmp, err) from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _nearly_full(d: str) -> bool:
    try:
        u = shutil.disk_usage(d)
    except OSError:
        return False
    return u.free < max(4 << 20, u.total // 1000)


def _keep_previous(path: str):
    """The checkpoint `path` still holds becomes previous.pt, before `path` is replaced."""
    if not os.path.isfile(path):
        return
    prev = os.path.join(os.path.dirname(path) or ".", PREVIOUS)
    tmp = prev + ".tmp"
    if os.path.exists(tmp):
        os.remove(tmp)
    try:
        os.link(path, tmp)
    except OSError:  # a file system without hard links
        shutil.copyfile(path, tmp)
    os.replace(tmp, prev)


def _fsync_dir(d: str):
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(path: str, tmp: str, err: Exception) -> CheckpointWriteError:
    full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or _nearly_full(os.path.dirname(path) or ".")
    if not full:
        return CheckpointWriteError(f"{path}: writing the checkpoint failed ({getattr(err, 'strerror', None) or err})",
                                    False)
    try:
        written = os.path.getsize(tmp) / 2**20 if os.path.exists(tmp) else 0.0
        free = f"{shutil.disk_usage(os.path.dirname(path) or '.').free / 2**20:.0f} MiB free"
    except OSError:
        written, free = 0.0, "free space unknown"
    return CheckpointWriteError(f"no space left on the device holding {path} ({free}; {written:.0f} MiB of the "
                                "new checkpoint were written, then removed)", True)


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


def load_latest(path: str, device: torch.device | str = "cpu", hint: str = "") -> tuple[dict, str]:
    """(checkpoint, the file it came from): `path`, or previous.pt beside it when `path` cannot be
    read (said in the log; the unreadable file is set aside as PATH.unreadable, so that the next
    checkpoint does not keep it as previous.pt)."""
    try:
        return load_checkpoint(path, device, hint), path
    except CheckpointError as err:
        prev = os.path.join(os.path.dirname(path) or ".", PREVIOUS)
        if not os.path.isfile(prev):
            raise
        ckpt = load_checkpoint(prev, device)
        if os.path.exists(path):
            os.replace(path, path + ".unreadable")
        log.warning("%s; resuming from %s (step %d) instead: the steps after it are done again", err, prev,
                    int(ckpt["step"]))
        return ckpt, prev


def check_config(ckpt: dict, config: dict, path: str):
    """A checkpoint continues only the run it came from: same config up to the runtime keys. The
    saved config is read through TrainConfig first, so a key added to spotart since the
    checkpoint was written takes its default (which keeps the old behaviour) instead of
    counting as a difference."""
    try:
        saved = TrainConfig.from_dict(ckpt["config"]).to_dict()
    except (TypeError, ValueError):
        saved = ckpt["config"]  # a key spotart no longer knows: the raw comparison names it
    diff = config_diff(saved, config)
    if diff:
        detail = ", ".join(f"{k}: {_get(saved, k)!r} -> {_get(config, k)!r}" for k in diff[:6])
        raise CheckpointError(f"{path} was written by a run with another config ({detail}); resume with the "
                              "run's own config (drop --preset/--set) or start a new run directory")


def _get(d, dotted):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


VERSION_FIX = "it was written by another spotart version: train a new run, or use the version that wrote it"


def load_weights(model: torch.nn.Module, ckpt: dict, name: str, path: str, fix: str = VERSION_FIX):
    """ckpt's `name` weights into `model` (strict); weights that do not fit are one line naming
    the file, the tensor and `fix`."""
    try:
        model.load_state_dict(ckpt["models"][name], strict=True)
    except (KeyError, RuntimeError) as err:
        lines = str(err).strip().splitlines()  # torch's last line names the offending tensor
        detail = lines[-1].strip() if lines else type(err).__name__
        raise CheckpointError(f"{path}: its {name!r} weights do not fit the network this spotart builds from its "
                              f"config ({detail}); {fix}") from err


def restore(ckpt: dict, models: dict, optimizers: dict, scaler, path: str = "checkpoint"):
    for k, m in models.items():
        load_weights(m, ckpt, k, path)
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

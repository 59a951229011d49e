"""Device, precision and memory format of a run, resolved once from the config.

One AMP path: `torch.autocast(device_type, dtype)` around the forward and the losses, plus a
GradScaler that is enabled only for fp16 (bf16 has fp32's exponent range and needs no scaling).
"auto" precision is bf16 on a GPU and fp32 on the CPU. The pipeline emits images in the
autocast dtype, so the first convolution reads them without a cast.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
_DATA = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str           # "bf16" | "fp16" | "fp32"
    channels_last: bool

    @property
    def amp_dtype(self):
        return _AMP[self.precision]

    @property
    def fp16(self) -> bool:
        return self.precision == "fp16"

    @property
    def data_dtype(self) -> str:
        return _DATA[self.precision]

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)

    def memory_format(self):
        return torch.channels_last if self.channels_last else torch.contiguous_format


def resolve_runtime(cfg, local_rank: int = 0, world_size: int = 1) -> Runtime:
    """Under torchrun (world_size > 1) each rank's GPU is cuda:LOCAL_RANK, whatever cfg.device
    names: `--device cuda:N` would put every rank on GPU N. cuda:N applies to one process only."""
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={cfg.device!r} but no CUDA device is visible; use --device cpu")
        if world_size > 1 and ":" in want and want != f"cuda:{local_rank}":
            log.warning("device %s ignored under torchrun: each rank uses cuda:LOCAL_RANK (this one cuda:%d)",
                        want, local_rank)
        device = torch.device(f"cuda:{local_rank}" if world_size > 1 or ":" not in want else want)
    else:
        device = torch.device("cpu")
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 (with GradScaler) needs a GPU; use fp32 or bf16 on the CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{torch.cuda.get_device_name(device)} has no bf16; use --set precision=fp16")
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    return Runtime(device=device, precision=precision, channels_last=bool(channels_last))


@contextmanager
def determinism(on: bool):
    """Deterministic kernels for the duration (cfg.deterministic), restored afterwards.

    "Exact" on the GPU: with the defaults a resumed run sees exactly the data it would have seen
    (the DALI pipeline's position, shuffle and random generators are in the checkpoint) and
    starts from bitwise the same weights, optimiser and RNG states; its steps then agree to
    float tolerance only: cuDNN benchmarks and picks its algorithms afresh in every process,
    and some backward kernels (adaptive pooling, bilinear upsampling, index-add) accumulate with
    atomics in no fixed order. `deterministic=true` turns off cuDNN's benchmark, asks cuDNN and
    cuBLAS for deterministic algorithms (CUBLAS_WORKSPACE_CONFIG, set before CUDA starts) and
    torch for its deterministic implementations, and the networks replace the two operations
    whose backward has none by equivalent forms that do (nets/deterministic.py: bilinear
    upsampling, adaptive pooling over evenly dividing windows); an operation still without one
    (e.g. cross-entropy's NLLLoss kernel on CUDA, pooling to a size that does not divide the map)
    is named in a torch warning rather than failing the run. Slower; the CPU is deterministic
    either way."""
    if not on:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


class TrainingOOM(RuntimeError):
    pass


@contextmanager
def oom_hint(cfg, rt: Runtime):
    """Turn an out-of-memory error into one line: the batch size that failed and what to try."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        smaller = max(1, cfg.batch_size // 2)
        tips = [f"--set batch_size={smaller}"]
        if rt.precision == "fp32":
            tips.append("--precision bf16")
        if cfg.compile:
            tips.append("running without --compile")
        tips.append("fewer GPUs' worth of work per GPU (batch_size is per rank)")
        raise TrainingOOM(
            f"out of memory on {rt.device} at batch_size {cfg.batch_size} per rank ({cfg.preset} preset, "
            f"{cfg.image_size} px, {rt.precision}); try " + ", or ".join(tips)) from err

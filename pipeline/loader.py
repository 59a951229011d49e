"""`DaliLoader`: a thin iterator over DALI's PyTorch plugin.

Yields dicts of torch tensors on the trainer's device, knows its epoch length, and saves and
restores its exact position through DALI checkpointing (reader position, shuffle buffer and
random generators), so a resumed run sees the batches it would have seen."""

from __future__ import annotations

import base64

import torch
from nvidia.dali.plugin.base_iterator import LastBatchPolicy
from nvidia.dali.plugin.pytorch import DALIGenericIterator

from .build import READER, build_pipeline
from .config import PipelineConfig

# integer outputs (labels); every other output is a float image/mask tensor
LABELS = ("label", "position", "permutation")


def to_torch(batch: dict, cfg: PipelineConfig, device: torch.device | None) -> dict:
    """DALI's outputs as the trainer takes them: on `device`, labels as int64 vectors, float
    tensors in cfg.dtype (DALI emits float16 for bf16 runs, see ops.py)."""
    out = {}
    for k, t in batch.items():
        if device is not None and t.device != device:
            t = t.to(device, non_blocking=True)
        if k in LABELS:
            t = t.reshape(-1).long()
        elif cfg.dtype == "bfloat16":
            t = t.to(torch.bfloat16)
        out[k] = t
    return out


class DaliLoader:
    def __init__(self, cfg: PipelineConfig, device: torch.device | str | None = None, state: dict | None = None):
        self.cfg = cfg
        self.device = torch.device(device) if device is not None else None
        self.epoch = 0
        checkpoint = None
        if state is not None:
            self._check_state(state)
            self.epoch = state["epoch"]
            checkpoint = base64.b64decode(state["dali"]) if state.get("dali") else None
        self.pipe, self.names = build_pipeline(cfg, checkpoint)
        # PARTIAL + the reader's pad_last_batch: every sample once per epoch, the padding trimmed,
        # and every rank runs the same number of steps (DDP would hang otherwise).
        self._it = DALIGenericIterator([self.pipe], self.names, reader_name=READER,
                                       last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=False,
                                       prepare_first_batch=False)
        self._exhausted = False

    def _check_state(self, state):
        if state.get("kind") != "dali" or state.get("config") != self.cfg.to_dict():
            raise ValueError("the saved data position belongs to another pipeline configuration; "
                             "resume with the run's own config or start a new run")

    def __len__(self) -> int:
        return len(self._it)

    def __iter__(self):
        """One epoch of batches."""
        if self._exhausted:
            self._it.reset()
            self._exhausted = False
        for b in self._it:
            yield to_torch(b[0], self.cfg, self.device)
        self._exhausted = True
        self.epoch += 1

    def state_dict(self) -> dict:
        cps = self._it.checkpoints()
        return {"kind": "dali", "epoch": self.epoch, "config": self.cfg.to_dict(),
                "dali": base64.b64encode(cps[0].encode() if isinstance(cps[0], str) else cps[0]).decode()}

    def load_state_dict(self, state: dict):
        self.__init__(self.cfg, self.device, state)

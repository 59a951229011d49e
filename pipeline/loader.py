"""`DaliLoader`: a thin iterator over DALI's PyTorch plugin.

Yields dicts of torch tensors on the trainer's device, knows its epoch length, and saves and
restores its exact position through DALI checkpointing (reader position, shuffle buffer and
random generators), so a resumed run sees the batches it would have seen.

A sample no decoder can read does not end the epoch: the loader finds it, leaves it out and
yields the batch without it (pipeline/badsamples.py); `bad` lists the samples left out and
`on_bad` hears of each as it is found."""

from __future__ import annotations

import base64
import hashlib
import json
import logging

import torch
from nvidia.dali.plugin.base_iterator import LastBatchPolicy
from nvidia.dali.plugin.pytorch import DALIGenericIterator

from .badsamples import BadSample, Exclusions, decoder_message, named_in, parse_origin, read_jpg, undecodable
from .build import READER, SAMPLE, build_pipeline, shard_files
from .config import PipelineConfig

log = logging.getLogger(__name__)

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


class ShardsChanged(ValueError):
    """The saved position belongs to other shards (rebuilt or repaired since)."""


def shards_fingerprint(manifest: dict) -> str:
    entries = [(s["path"], s["count"], s["sha256"]) for s in manifest["shards"]]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _rows(batch: dict, origins: torch.Tensor) -> dict:
    """The batch without the samples left out (they have no origin; a host tensor: no device
    sync)."""
    keep = (origins != 0).any(dim=1)
    if bool(keep.all()):
        return batch
    return {k: v[keep.to(v.device)] for k, v in batch.items()}


class DaliLoader:
    def __init__(self, cfg: PipelineConfig, device: torch.device | str | None = None, state: dict | None = None,
                 on_bad=None):
        self.cfg = cfg
        self.device = torch.device(device) if device is not None else None
        self.on_bad = on_bad
        self.epoch = 0
        self._pos = 0  # batches handed out in this epoch
        self._exhausted = False
        tars, idxs, manifest = shard_files(cfg)
        self.fingerprint = shards_fingerprint(manifest)
        self.exclusions = Exclusions(cfg.shards, tars, idxs)
        checkpoint = None
        if state is not None:
            self._check_state(state)
            self.epoch = state["epoch"]
            self._exhausted = bool(state.get("exhausted", False))
            self.exclusions.load(state.get("excluded"))
            checkpoint = base64.b64decode(state["dali"]) if state.get("dali") else None
        self._good = checkpoint  # DALI's position after the last batch handed out
        self._build(checkpoint)

    def _build(self, checkpoint, probe: bool = False):
        self.pipe, self.names = build_pipeline(self.cfg, checkpoint, index_paths=self.exclusions.index_paths(),
                                               probe=probe)
        # PARTIAL + the reader's pad_last_batch: every sample once per epoch, the padding trimmed,
        # and every rank runs the same number of steps (DDP would hang otherwise).
        self._it = DALIGenericIterator([self.pipe], self.names, reader_name=READER,
                                       last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=False,
                                       prepare_first_batch=False)

    def _check_state(self, state):
        if state.get("kind") != "dali" or state.get("config") != self.cfg.to_dict():
            raise ValueError("the saved data position belongs to another pipeline configuration; "
                             "resume with the run's own config or start a new run")
        if state.get("shards", self.fingerprint) != self.fingerprint:
            raise ShardsChanged(f"the shards in {self.cfg.shards} changed since the data position was saved")

    @property
    def bad(self) -> list[BadSample]:
        return list(self.exclusions.samples.values())

    def __len__(self) -> int:
        return len(self._it)

    def __iter__(self):
        """One epoch of batches."""
        if self._exhausted:
            self._it.reset()
            self._good = self._checkpoint()
            self._exhausted, self._pos = False, 0
        while True:
            try:
                b = next(self._it)[0]
            except StopIteration:
                break
            except RuntimeError as err:  # a decoder failed the batch (and the pipeline)
                self._recover(err)
                continue
            self._good = self._checkpoint()
            self._pos += 1
            yield to_torch(_rows(b, b.pop(SAMPLE)), self.cfg, self.device)
        self._exhausted = True
        self.epoch += 1

    def _checkpoint(self) -> bytes:
        cp = self._it.checkpoints()[0]
        return cp.encode() if isinstance(cp, str) else cp

    # ---- bad samples -----------------------------------------------------------------------------

    def _report(self, new: list[BadSample]):
        for b in new:
            log.warning("left out %s of %s: the decoder cannot read it (%s)", b.key, b.shard, b.error)
        if new and self.on_bad is not None:
            self.on_bad(new)


    def _recover(self, err: RuntimeError):
        """Find the samples of the failed batch that no decoder reads, leave them out and rebuild
        the pipeline at the last good batch; `err` again if none of them is bad."""
        self._close()
        why = decoder_message(err)
        named = [BadSample(_relative(path, self.cfg.shards), key, why) for path, _, key in named_in(err)]
        new = self.exclusions.add(named or self._find_bad())
        if not new:
            self._build(self._good)
            raise err
        self._report(new)
        self._build(self._good)

    def _find_bad(self) -> list[BadSample]:
        """The batch that failed and the ones DALI had started after it (prefetch), re-read
        without decoding, then each sample decoded alone."""
        self._build(self._good, probe=True)
        tars, idxs, _ = shard_files(self.cfg)
        index_of = dict(zip(tars, idxs, strict=True))
        found = []
        try:
            for _ in range(self.cfg.prefetch + 1):
                try:
                    b = next(self._it)[0]
                except StopIteration:
                    break
                origins = [o for o in (parse_origin(r.numpy().tobytes()) for r in b[SAMPLE]) if o is not None]
                origins = list(dict.fromkeys(origins))  # the epoch's last batch repeats its padding
                blobs = [read_jpg(path, off, index_of[path], key) for path, off, key in origins]
                for i, error in undecodable(self.cfg, blobs).items():
                    path, _, key = origins[i]
                    found.append(BadSample(_relative(path, self.cfg.shards), key, error))
                if found:
                    break
        finally:
            self._close()
        return found

    def _close(self):
        self._it = self.pipe = None

    def state_dict(self) -> dict:
        """The position after the last batch handed out. After an epoch's last batch it is the
        end of that epoch (DALI's iterator must be reset there, not read): saved as such."""
        dali = self._good if self._good is not None else self._checkpoint()
        ended = self._exhausted or self._pos >= len(self)
        epoch = self.epoch + (ended and not self._exhausted)
        return {"kind": "dali", "epoch": epoch, "exhausted": ended, "config": self.cfg.to_dict(),
                "dali": base64.b64encode(dali).decode(), "excluded": self.exclusions.state(),
                "shards": self.fingerprint}

    def load_state_dict(self, state: dict):
        self.__init__(self.cfg, self.device, state, self.on_bad)

    def restart(self, epoch: int):
        """The beginning of epoch `epoch`, in a fresh order (after the shards changed)."""
        self.__init__(self.cfg, self.device, None, self.on_bad)
        self.epoch = epoch


def _relative(path: str, shards: str) -> str:
    import os

    return os.path.relpath(path, shards)

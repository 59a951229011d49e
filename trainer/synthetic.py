"""Batches without a shard set, with the DaliLoader interface: for tests, benchmarks and the
profiler's step-alone timing.

`ReplayBatches` cycles a fixed list of batches already on the device; its cost per step is nil,
so a step fed by it is the step alone. Its batches come from the real pipeline, never from a
second implementation of a task's geometry:
  - `ReplayBatches.record(loader, n)`: the first n batches of a real loader (the profiler and
    the training benchmark: the very shapes, dtypes and statistics the run will see);
  - `synthetic_batches(pcfg, device, n)`: n batches of the task's own DALI pipeline (CPU
    backend) over procedural JPEGs fed from memory instead of the shards (`--set
    data=synthetic`): the task's crops, masks, patches, tiles, gaps, jitter and greyscale as
    they are, no data on disk.

Interface as DaliLoader: iterating yields one epoch (`length` batches, or forever when None);
`len()`; `state_dict()` / `load_state_dict()` hold the position, so a resumed run sees the
batch it would have seen. Each rank records its own batches (the pipeline's seed is per rank).
"""

from __future__ import annotations

import io
import sys

import numpy as np
import torch


class ReplayBatches:
    def __init__(self, batches: list[dict], length: int | None = None):
        if not batches:
            raise ValueError("ReplayBatches needs at least one batch")
        if length is not None and length < 1:
            raise ValueError(f"length must be >= 1 or None, got {length}")
        self.batches, self.length = list(batches), length
        self.position = 0  # batches yielded so far, all epochs

    @classmethod
    def record(cls, loader, n: int, length: int | None = None) -> "ReplayBatches":
        """The first `n` batches of `loader` (across its epochs), kept on its device."""
        out = []
        while len(out) < n:
            before = len(out)
            for b in loader:
                out.append(b)
                if len(out) == n:
                    break
            if len(out) == before:
                raise RuntimeError("the loader yielded no batch in a whole epoch")
        return cls(out, length)

    def __len__(self) -> int:
        return self.length if self.length is not None else sys.maxsize

    def __iter__(self):
        """From the current position to the end of its epoch."""
        while True:
            batch = self.batches[self.position % len(self.batches)]
            self.position += 1
            yield batch
            if self.length is not None and self.position % self.length == 0:
                return

    @property
    def epoch(self) -> int:
        return self.position // self.length if self.length else 0

    def state_dict(self) -> dict:
        return {"kind": "replay", "position": self.position, "batches": len(self.batches)}

    def load_state_dict(self, state: dict):
        if state.get("kind") != "replay" or state.get("batches") != len(self.batches):
            raise ValueError(f"the saved data position is from another batch source ({state.get('kind')!r}), "
                             "not these replayed batches")
        self.position = int(state["position"])


def procedural_jpegs(n: int, size: int, seed: int) -> list[np.ndarray]:
    """`n` encoded JPEGs of smooth random colour fields with a little fine detail (structure an
    autoencoder can learn, edges a patch task can match), `size` px square."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        coarse = rng.integers(0, 256, (max(size // 8, 2),) * 2 + (3,), dtype=np.uint8)
        img = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.float32)
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=95)
        out.append(np.frombuffer(buf.getvalue(), np.uint8))
    return out


def synthetic_batches(pcfg, device, count: int = 8, length: int | None = None) -> ReplayBatches:
    """`count` batches of `pcfg`'s task pipeline over procedural images (unlabelled), on `device`.
    The pipeline runs on DALI's CPU backend whatever the device: recording is a one-off."""
    from ..pipeline.build import build_pipeline
    from ..pipeline.loader import to_torch

    pcfg = pcfg.replace(device="cpu", device_id=None)
    rank, _ = pcfg.resolved_rank()
    bs = pcfg.batch_size
    jpegs = procedural_jpegs(count * bs, max(pcfg.image_size, 32), seed=pcfg.seed * 1000 + rank)
    empty = np.zeros(0, np.uint8)  # no class id: label -1
    source = [(jpegs[i * bs:(i + 1) * bs], [empty] * bs) for i in range(count)]
    pipe, names = build_pipeline(pcfg, source=source)
    device = torch.device(device)
    batches = []
    for _ in range(count):
        outs = pipe.run()
        arrays = {n: torch.from_numpy(np.array(o.as_tensor())) for n, o in zip(names, outs, strict=True)}
        batches.append(to_torch(arrays, pcfg, device))
    del pipe
    return ReplayBatches(batches, length)

"""What the builder's worker processes do (and the main process too, when they are busy).

- `convert`: a batch of images -> read each (path, LMDB key or pread of a tar member; bytes
  streamed by the main process only for compressed archives), decode/check/re-encode it, build
  the sample's tar members, and stage the batch in the catalog in one transaction of its own.
- `write_shard`: one planned shard -> concatenate its staged samples into the tar, write the
  DALI index, record the shard and its samples in the catalog.
LMDB lets several processes write one environment (writers take turns on its lock), so no
result travels back through the main process but a count.

The main process runs the same code on its own catalog: always with `-j 1`, and with `-j N`
whenever the N - 1 workers have enough queued."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.connection
import os
import threading
from dataclasses import dataclass

from . import catalog as cat
from .images import normalise
from .sources import Reader
from .tario import ShardWriter, sample_bytes, write_atomic


@dataclass(frozen=True)
class Job:
    """What every worker needs: picklable, sent once when the pool starts."""

    catalog: str
    out: str
    sources: tuple[tuple[str, str], ...]    # (kind, path) by source index
    resize: int | None
    quality: int
    max_pixels: int


def components(ref: str, label, class_id, jpg: bytes, info: dict, digest_hex: str) -> dict[str, bytes]:
    meta = {"source": ref, "size": info["size"], "stored": info["stored"], "sha256": digest_hex}
    comps = {"jpg": jpg}
    if label is not None:
        meta["label"] = label
        comps["cls"] = str(class_id).encode()
    comps["json"] = json.dumps(meta, ensure_ascii=True, sort_keys=True).encode()
    return comps


class Worker:
    def __init__(self, job: Job, catalog: cat.Catalog | None = None):
        self.job = job
        self.own_catalog = catalog is None
        self.catalog = catalog or cat.Catalog(job.catalog)
        self.readers: dict[int, Reader] = {}

    def close(self):
        for r in self.readers.values():
            r.close()
        if self.own_catalog:
            self.catalog.close()

    def _read(self, src: int, locator) -> bytes:
        if src not in self.readers:
            self.readers[src] = Reader(*self.job.sources[src])
        return self.readers[src].read(locator)

    def convert(self, batch) -> int:
        """batch: (source index, streamed, [(seq, bytes if streamed else locator, ref, label, class id)])."""
        src, streamed, items = batch
        j, records = self.job, []
        for seq, payload, ref, label, class_id in items:
            try:
                data = payload if streamed else self._read(src, payload)
            except OSError as err:
                records.append((seq, *cat.pack_skipped({"source": ref, "reason": f"cannot read: {err.strerror or err}"})))
                continue
            digest, jpg, info = normalise(data, j.resize, j.quality, j.max_pixels)
            if jpg is None:
                records.append((seq, *cat.pack_skipped({"source": ref, "reason": info})))
                continue
            comps = components(ref, label, class_id, jpg, info, digest.hex())
            blob, layout = sample_bytes(f"{seq:010d}", comps)
            meta = {"source": ref, "label": label, "class_id": class_id, "sha256": digest.hex(), "layout": layout}
            records.append((seq, *cat.pack_ok(digest, meta, blob)))
        self.catalog.put_staged(records)
        return len(items)

    def write_shard(self, task) -> dict:
        """task: (shard name, [seq]) -> its manifest entry."""
        name, seqs = task
        out = self.job.out
        tar, idx = os.path.join(out, name + ".tar"), os.path.join(out, name + ".idx")
        writer = ShardWriter(tar)
        samples = {}
        try:
            for seq, (meta, blob) in zip(seqs, self.catalog.staged_samples(seqs)):
                key = f"{int(seq):010d}"
                offsets = writer.add_sample(key, blob, meta["layout"])
                jpg = next(x for x in meta["layout"] if x[0] == "jpg")
                samples[key] = {
                    "shard": name + ".tar", "offset": offsets["jpg"], "size": jpg[2],
                    "sha256": meta["sha256"], "label": meta["label"],
                    "class_id": meta["class_id"], "source": meta["source"],
                }
            nbytes, sha = writer.close()
        except BaseException:
            writer.abort()
            raise
        write_atomic(idx, writer.index_text())
        rec = {"path": name + ".tar", "index": name + ".idx", "count": len(seqs), "bytes": nbytes, "sha256": sha}
        self.catalog.commit_shard(name, rec, samples)
        return rec


# pool plumbing: one Worker per process, made by the pool's initializer --------------------
_WORKER: Worker | None = None


def init(job: Job):
    global _WORKER
    _WORKER = Worker(job)
    # a worker outlives a SIGKILLed main process otherwise (its task queue never reports EOF:
    # it holds the queue's write end too); dying mid-batch only aborts that batch's transaction
    threading.Thread(target=_exit_with_parent, daemon=True).start()


def _exit_with_parent():
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)


def ready():
    return None


def convert(batch) -> int:
    return _WORKER.convert(batch)


def write_shard(task) -> dict:
    return _WORKER.write_shard(task)

"""`build_shards`: any mix of image sources -> shuffled, verified WebDataset shards.

Two passes, both resumable:
1. convert: every source is read once in its own order; worker processes decode, check and
   re-encode images; results are committed to the catalog's staging area in transactions, so a
   killed build redoes at most the last uncommitted batch.
2. write: the converted samples are shuffled by `seed` (so no shard is one class), cut into
   shards by `max_count`/`max_size`, and each shard is written to a temporary file, fsynced and
   renamed; a shard recorded in the catalog is not written again.
The same sources and options always give the same plan, hence byte-identical shards, whether
the build ran straight through or was killed and resumed any number of times."""

from __future__ import annotations

import collections
import json
import logging
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

from .. import __version__
from . import catalog as cat
from .images import process
from .sources import SourceError, open_source
from .spec import ShardSpec, fingerprint
from .tario import ShardWriter, write_atomic

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CATALOG = "catalog.lmdb"
MANIFEST = "manifest.json"
COMMIT_EVERY = 512            # staged records per LMDB transaction
WINDOW = 256                  # images handed to the pool per batch (bounds memory on huge tars)


class BuildError(RuntimeError):
    """A build that cannot go on; the message names the file and the fix."""


@dataclass(frozen=True)
class BuildResult:
    out: str
    num_samples: int
    num_shards: int
    skipped: int
    duplicates: int
    seconds: float
    converted: int               # images converted in this call (0 when already complete)

    def summary(self) -> str:
        rate = self.converted / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.num_samples} samples in {self.num_shards} shards, {self.skipped} skipped, "
                f"{self.duplicates} duplicates, {self.seconds:.1f} s ({rate:.0f} img/s) -> {self.out}")


def _owned_files(out: str) -> list[str]:
    names = []
    for n in os.listdir(out):
        if n in (MANIFEST, CATALOG, "skipped.jsonl", "duplicates.jsonl") or n.endswith((".tar", ".idx", ".tmp")):
            names.append(os.path.join(out, n))
    return names


def _prepare_dir(out: str, fp: str, spec: ShardSpec, sources: list[str], overwrite: bool) -> cat.Catalog:
    os.makedirs(out, exist_ok=True)
    if overwrite:
        for p in _owned_files(out):
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    cpath = os.path.join(out, CATALOG)
    if not os.path.isdir(cpath) and _owned_files(out):
        raise BuildError(f"{out}: holds shards or a manifest but no {CATALOG}; use --overwrite to start over or pick an empty directory")
    catalog = cat.Catalog(cpath)
    prev = catalog.get_meta("fingerprint")
    if prev is not None and prev != fp:
        old = catalog.get_meta("options", {})
        old_sources = catalog.get_meta("sources", [])
        diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in spec.output_options().items() if old.get(k) != v]
        if old_sources != sources:
            diff.append(f"sources: {old_sources} -> {sources}")
        catalog.close()
        raise BuildError(f"{out} was built with other options ({'; '.join(diff)}); "
                         "re-run with the original options to resume, or add --overwrite to start over")
    if prev is None:
        catalog.put_meta("fingerprint", fp)
        catalog.put_meta("options", spec.output_options())
        catalog.put_meta("sources", sources)
        catalog.put_meta("state", "converting")
    return catalog


def _listing(srcs):
    """-> [(source index, entry)] in global sequence order, sorted class names."""
    listed, classes = [], set()
    for i, s in enumerate(srcs):
        entries = s.list()
        if not entries:
            log.warning("%s: no image files found", s.path)
        for e in entries:
            listed.append((i, e))
            if e.label is not None:
                classes.add(e.label)
    return listed, sorted(classes)


def _tasks(srcs, mine_by_source, spec):
    for i, s in enumerate(srcs):
        for seq, entry, payload in s.read(iter(mine_by_source[i])):
            yield (seq, payload, spec.resize, spec.quality, spec.max_pixels), entry


def _convert(catalog, srcs, mine, spec, progress: bool) -> int:
    """Pass 1. -> number of images converted in this call."""
    done = catalog.staged_seqs()
    todo = collections.defaultdict(list)
    for seq, (si, e) in mine:
        if seq not in done:
            todo[si].append((seq, e))
    n_todo = sum(len(v) for v in todo.values())
    if n_todo == 0:
        return 0
    from tqdm import tqdm

    bar = tqdm(total=n_todo, desc="convert", unit="img", disable=not progress, smoothing=0.1)
    records, new_hashes = [], {}
    entries = {}

    def consume(results):
        for seq, digest, jpg, info in results:
            e = entries.pop(seq)
            key = f"{seq:010d}"
            if jpg is None:
                records.append((seq, cat.SKIPPED, {"source": e.ref, "reason": info}, b""))
            else:
                first = new_hashes.get(digest) or catalog.first_of_hash(digest)
                if first is not None and not spec.keep_duplicates:
                    records.append((seq, cat.DUPLICATE, {"source": e.ref, "duplicate_of": first.split("\t", 1)[1]}, b""))
                else:
                    if first is None:
                        new_hashes[digest] = f"{key}\t{e.ref}"
                    header = dict(info, key=key, source=e.ref, label=e.label, sha256=digest, bytes=len(jpg))
                    records.append((seq, cat.OK, header, jpg))
            if len(records) >= COMMIT_EVERY:
                flush()
        bar.update(len(results))

    def flush():
        catalog.put_staged(records, new_hashes)
        records.clear()
        new_hashes.clear()

    def windows():
        batch = []
        for task, e in _tasks(srcs, todo, spec):
            entries[task[0]] = e
            batch.append(task)
            if len(batch) == WINDOW:
                yield batch
                batch = []
        if batch:
            yield batch

    try:
        if spec.workers == 1:
            for w in windows():
                consume([process(t) for t in w])
        else:
            # spawn, not fork: callers (trainer, tests) may hold threads that fork would copy mid-lock
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(spec.workers) as pool:
                inflight = collections.deque()
                for w in windows():
                    inflight.append(pool.map_async(process, w, chunksize=8))
                    if len(inflight) > spec.workers:   # keep the pool busy, memory bounded
                        consume(inflight.popleft().get())
                while inflight:
                    consume(inflight.popleft().get())
        flush()
    finally:
        bar.close()
    return n_todo


def _survey(catalog, out, class_ids):
    """One pass over the staging area: the converted samples as [(seq, tar bytes)], the number
    labelled, and skipped.jsonl / duplicates.jsonl written in sequence order."""
    ok, labelled, lines = [], 0, {cat.SKIPPED: [], cat.DUPLICATE: []}
    for seq, kind, header, _ in catalog.iter_staged():
        if kind == cat.OK:
            ok.append((seq, _sample_tar_bytes(header, class_ids)))
            labelled += header["label"] is not None
        else:
            lines[kind].append(json.dumps(header, ensure_ascii=True, sort_keys=True) + "\n")
    write_atomic(os.path.join(out, "skipped.jsonl"), "".join(lines[cat.SKIPPED]))
    write_atomic(os.path.join(out, "duplicates.jsonl"), "".join(lines[cat.DUPLICATE]))
    return ok, labelled, len(lines[cat.SKIPPED]), len(lines[cat.DUPLICATE])


def _plan(ok, spec):
    """Shuffle the converted samples by seed and cut them into shards. -> list of [seq]."""
    order = np.random.default_rng(spec.seed).permutation(len(ok)) if ok else []
    shards, cur, cur_bytes = [], [], 0
    for j in order:
        seq, size = ok[j]
        if cur and (len(cur) >= spec.max_count or cur_bytes + size > spec.max_size):
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(seq)
        cur_bytes += size
    if cur:
        shards.append(cur)
    return shards


def _components(header, payload, class_ids) -> dict[str, bytes]:
    meta = {"source": header["source"], "size": header["size"], "stored": header["stored"],
            "sha256": header["sha256"]}
    comps = {"jpg": payload}
    if header["label"] is not None:
        meta["label"] = header["label"]
        comps["cls"] = str(class_ids[header["label"]]).encode()
    comps["json"] = json.dumps(meta, ensure_ascii=True, sort_keys=True).encode()
    return comps


def _sample_tar_bytes(header, class_ids) -> int:
    sizes = [len(v) for v in _components(header, b"", class_ids).values()]
    sizes[0] = header["bytes"]  # the jpg
    return sum(512 + -(-n // 512) * 512 for n in sizes)


def _write(catalog, out, spec, plan, class_ids, progress: bool) -> list[dict]:
    from tqdm import tqdm

    entries = []
    for k, seqs in enumerate(tqdm(plan, desc="write", unit="shard", disable=not progress)):
        name = spec.shard_name(k)
        tar, idx = os.path.join(out, name + ".tar"), os.path.join(out, name + ".idx")
        rec = catalog.shard_record(name)
        if rec is not None and os.path.isfile(tar) and os.path.getsize(tar) == rec["bytes"] and os.path.isfile(idx):
            entries.append(rec)
            continue
        writer = ShardWriter(tar)
        samples = {}
        try:
            for header, payload in catalog.get_staged(seqs):
                offsets = writer.add(header["key"], _components(header, payload, class_ids))
                samples[header["key"]] = {
                    "shard": name + ".tar", "offset": offsets["jpg"], "size": header["bytes"],
                    "sha256": header["sha256"], "label": header["label"],
                    "class_id": class_ids.get(header["label"]), "source": header["source"],
                }
            nbytes, sha = writer.close()
        except BaseException:
            writer.abort()
            raise
        write_atomic(idx, writer.index_text())
        rec = {"path": name + ".tar", "index": name + ".idx", "count": len(seqs), "bytes": nbytes, "sha256": sha}
        catalog.commit_shard(name, rec, samples)
        entries.append(rec)
    return entries


def build_shards(sources: list[str], out: str, spec: ShardSpec, overwrite: bool = False,
                 progress: bool = True) -> BuildResult:
    t0 = time.perf_counter()
    if not sources:
        raise BuildError("no sources given: pass image folders, file lists, tar archives or LMDB databases")
    try:
        srcs = [open_source(s) for s in sources]
    except SourceError as err:
        raise BuildError(str(err)) from None
    src_paths = [s.path for s in srcs]
    out = os.path.abspath(out)
    if any(os.path.commonpath([out, p]) in (out, p) for p in src_paths if os.path.isdir(p)) or out in src_paths:
        raise BuildError(f"{out}: the output directory is (inside) a source; choose another --out")
    catalog = _prepare_dir(out, fingerprint(spec, src_paths), spec, src_paths, overwrite)
    mpath = os.path.join(out, MANIFEST)
    if catalog.get_meta("state") == "done" and os.path.isfile(mpath):
        catalog.drop_staging()  # in case a kill came between "done" and the drop
        catalog.close()
        with open(mpath) as f:
            m = json.load(f)
        log.info("%s: already complete", out)
        return BuildResult(out, m["num_samples"], len(m["shards"]), m["skipped"], m["duplicates"],
                           time.perf_counter() - t0, 0)
    try:
        try:
            listed, classes = _listing(srcs)
        except SourceError as err:
            raise BuildError(str(err)) from None
        class_ids = {c: i for i, c in enumerate(classes)}
        mine = [(seq, item) for seq, item in enumerate(listed) if seq % spec.part_count == spec.part_index]
        converted = _convert(catalog, srcs, mine, spec, progress)

        ok, labelled, skipped, dups = _survey(catalog, out, class_ids)
        if mine and skipped / len(mine) > spec.max_skip_fraction:
            raise BuildError(
                f"{skipped} of {len(mine)} images ({100 * skipped / len(mine):.1f}%) could not be read, more than "
                f"--max-skip-fraction {spec.max_skip_fraction}; see {os.path.join(out, 'skipped.jsonl')}, fix the "
                "source or raise the limit (converted images are kept: the re-run resumes)")
        if not ok:
            raise BuildError(f"no readable images in {', '.join(src_paths)} (see {os.path.join(out, 'skipped.jsonl')})")
        catalog.put_meta("state", "writing")
        plan = _plan(ok, spec)
        shard_entries = _write(catalog, out, spec, plan, class_ids, progress)
        manifest = {
            "format": "spotart-shards", "version": FORMAT_VERSION, "created_by": f"spotart {__version__}",
            "options": spec.output_options(), "sources": src_paths,
            "part": [spec.part_index, spec.part_count],
            "shards": shard_entries,
            "classes": classes,
            "num_samples": sum(s["count"] for s in shard_entries),
            "num_labelled": labelled,
            "total_bytes": sum(s["bytes"] for s in shard_entries),
            "listed": len(mine), "skipped": skipped, "duplicates": dups,
        }
        write_atomic(mpath, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        catalog.put_meta("state", "done")
        catalog.drop_staging()
    finally:
        catalog.close()
    # staging was just dropped, by this call or after a resumed one that had nothing left to convert
    cat.compact(os.path.join(out, CATALOG))
    return BuildResult(out, manifest["num_samples"], len(shard_entries), skipped, dups,
                       time.perf_counter() - t0, converted)

"""`build_shards`: any mix of image sources -> shuffled, verified WebDataset shards.

Two passes, both resumable:
1. convert: every source is listed (names only), then its images are handed out in batches;
   each worker reads, decodes, checks and re-encodes its batch, builds every sample's tar
   members and stages them in the catalog in a transaction of its own, so a killed build redoes
   at most the batches in flight.
2. write: the converted samples are de-duplicated in sequence order, shuffled by `seed` (so no
   shard is one class) and cut into shards by `max_count`/`max_size`; workers write whole
   shards (temporary file, fsync, rename) and record them; a recorded shard is not written again.
The same sources and options always give the same plan, hence byte-identical shards, whether
the build ran straight through or was killed and resumed any number of times, with any `-j`.

Why the work is split this way (measured on 55,550 tiny-imagenet JPEGs, docs/benchmarks.md):
the main process used to stream every image through itself, hash-check and stage every result
and write every shard alone: at -j 2 it needed 81% of the CPU time of a whole -j 1 build, so a
second worker waited on it. Now what only it can do per image is stream compressed archives
(~15 us) and de-duplicate (~4 us); `-j N` is N processes, the main one converting or writing
a batch itself whenever the N - 1 workers have enough queued."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from array import array
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from . import catalog as cat
from . import work
from .labels import LabelError, LabelTable, class_list, read_classes
from .sources import SourceError, list_source, open_source
from .spec import ShardSpec, fingerprint
from .tario import AtomicLines, write_atomic

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CATALOG = "catalog.lmdb"
MANIFEST = "manifest.json"
WINDOW = 256                  # images per convert batch: one staging transaction
BATCH_BYTES = 8 << 20         # streamed bytes per batch: at most 2 x (N - 1) x 8 MiB queued at -j N
INFLIGHT = 2                  # batches queued per worker: busy workers, bounded memory


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
    stages: dict = field(default_factory=dict)   # seconds per stage: list, convert, survey, write

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
        what = "; ".join(diff) or "the --labels or --classes file changed"
        raise BuildError(f"{out} was built with other options ({what}); "
                         "re-run with the original options to resume, or add --overwrite to start over")
    if prev is not None and catalog.get_meta("state") != "done" and catalog.get_meta("staging") != cat.STAGING_FORMAT:
        catalog.close()
        raise BuildError(f"{out}: an unfinished build by an older spotart; re-run with --overwrite to start over")
    if prev is None:
        catalog.put_meta("fingerprint", fp)
        catalog.put_meta("options", spec.output_options())
        catalog.put_meta("sources", sources)
        catalog.put_meta("staging", cat.STAGING_FORMAT)
        catalog.put_meta("state", "converting")
    return catalog


def _run(pool, fn_name: str, inline, tasks, on_result, limit: int):
    """Run `tasks`: through `work.<fn_name>` in the pool while it has fewer than `limit`
    queued, here (`inline`) while it is full. So `-j N` is N busy processes, this one included:
    on 2 cores `-j 2` is one worker and us, not two workers fighting us for the cores."""
    if pool is None:
        for t in tasks:
            on_result(inline(t))
        return
    fn = getattr(work, fn_name)
    pending = set()
    for t in tasks:
        finished = {f for f in pending if f.done()}
        for f in finished:
            on_result(f.result())
        pending -= finished
        if len(pending) < limit:
            pending.add(pool.submit(fn, t))
        else:
            on_result(inline(t))
    for f in as_completed(pending):
        on_result(f.result())


def _list_sources(srcs, pool):
    """One listing per source; several sources are listed in parallel, the first one here
    while the workers are still starting."""
    if pool is not None and len(srcs) > 1:
        futures = [pool.submit(list_source, s.path) for s in srcs[1:]]
        listings = [srcs[0].list()] + [f.result() for f in futures]
    else:
        listings = [s.list() for s in srcs]
    for s, lst in zip(srcs, listings):
        if not len(lst):
            log.warning("%s: no image files found", s.path)
    return listings


def _label_files(spec: ShardSpec):
    """The --labels table and --classes list, read before any listing: bad files fail fast."""
    try:
        table = LabelTable(spec.labels) if spec.labels is not None else None
        classes = read_classes(spec.classes) if spec.classes is not None else None
    except LabelError as err:
        raise BuildError(str(err)) from None
    return table, classes


def _classes(listings, table, classes, classes_file) -> list[str]:
    try:
        if table is not None:
            for lst in listings:
                table.apply(lst)
        return class_list(listings, classes, classes_file)
    except LabelError as err:
        raise BuildError(str(err)) from None


def _batches(srcs, listings, bases, done, spec: ShardSpec, class_ids):
    """Convert batches (source index, streamed, items) of this part's images not yet staged.
    Images a worker can read itself go as locators; compressed archives are streamed here."""
    for i, (src, lst) in enumerate(zip(srcs, listings)):
        base, direct, streamed = bases[i], [], array("q")
        for o in range((spec.part_index - base) % spec.part_count, len(lst), spec.part_count):
            if done[base + o]:
                continue
            loc = lst.locator(o)
            if loc is None:
                streamed.append(o)
                continue
            lab = lst.labels[o]
            direct.append((base + o, loc, lst.ref(o), lab, class_ids.get(lab)))
            if len(direct) == WINDOW:
                yield i, False, direct
                direct = []
        if direct:
            yield i, False, direct
        batch, nbytes = [], 0
        for o, data in src.stream(iter(streamed)) if streamed else ():
            lab = lst.labels[o]
            batch.append((base + o, data, lst.ref(o), lab, class_ids.get(lab)))
            nbytes += len(data)
            if len(batch) == WINDOW or nbytes >= BATCH_BYTES:
                yield i, True, batch
                batch, nbytes = [], 0
        if batch:
            yield i, True, batch


def _convert(catalog, worker, pool, batches, n_todo: int, spec: ShardSpec, progress: bool):
    from tqdm import tqdm

    with tqdm(total=n_todo, desc="convert", unit="img", disable=not progress, smoothing=0.1) as bar:
        try:
            _run(pool, "convert", worker.convert, batches, bar.update, INFLIGHT * (spec.workers - 1))
        except SourceError as err:
            raise BuildError(str(err)) from None


@dataclass
class Survey:
    seqs: array          # converted, de-duplicated samples in seq order ...
    sizes: array         # ... and their bytes in a shard
    labelled: int
    skipped: int
    duplicates: int


def _survey(catalog, out: str, spec: ShardSpec) -> Survey:
    """One pass over the staging area in seq order: the first copy of each source digest is
    kept (the same choice for any -j and any kill), skipped.jsonl / duplicates.jsonl written."""
    sv = Survey(array("q"), array("q"), 0, 0, 0)
    with AtomicLines(os.path.join(out, "skipped.jsonl")) as skipped, \
            AtomicLines(os.path.join(out, "duplicates.jsonl")) as dups:
        for seq, kind, digest, size, labelled, info in catalog.iter_outcomes():
            if kind == cat.SKIPPED:   # info: {source, reason}
                skipped.write(json.dumps(info, ensure_ascii=True, sort_keys=True) + "\n")
                sv.skipped += 1
                continue
            key = f"{seq:010d}"
            first = catalog.first_of(digest, key, info)   # info: the source
            if not spec.keep_duplicates and not first.startswith(key + "\t"):
                rec = {"source": info, "duplicate_of": first.split("\t", 1)[1]}
                dups.write(json.dumps(rec, ensure_ascii=True, sort_keys=True) + "\n")
                sv.duplicates += 1
                continue
            sv.seqs.append(seq)
            sv.sizes.append(size)
            sv.labelled += labelled
        catalog.flush()
    return sv


def _plan(sv: Survey, spec: ShardSpec) -> list[np.ndarray]:
    """Shuffle the converted samples by seed and cut them into shards. -> seqs per shard."""
    n = len(sv.seqs)
    if n == 0:
        return []
    order = np.random.default_rng(spec.seed).permutation(n)
    seqs = np.frombuffer(sv.seqs, dtype=np.int64)[order]
    cuts, count, nbytes = [0], 0, 0
    for j, size in enumerate(np.frombuffer(sv.sizes, dtype=np.int64)[order].tolist()):
        if count and (count >= spec.max_count or nbytes + size > spec.max_size):
            cuts.append(j)
            count, nbytes = 0, 0
        count += 1
        nbytes += size
    cuts.append(n)
    return [seqs[a:b] for a, b in zip(cuts, cuts[1:])]


def _write(catalog, worker, pool, out: str, spec: ShardSpec, plan, progress: bool) -> list[dict]:
    from tqdm import tqdm

    entries, tasks, where = [None] * len(plan), [], {}
    for k, seqs in enumerate(plan):
        name = spec.shard_name(k)
        tar, idx = os.path.join(out, name + ".tar"), os.path.join(out, name + ".idx")
        rec = catalog.shard_record(name)
        if rec is not None and os.path.isfile(tar) and os.path.getsize(tar) == rec["bytes"] and os.path.isfile(idx):
            entries[k] = rec
            continue
        where[name + ".tar"] = k
        tasks.append((name, seqs))
    with tqdm(total=len(tasks), desc="write", unit="shard", disable=not progress) as bar:
        def done(rec):
            entries[where[rec["path"]]] = rec
            bar.update()

        _run(pool, "write_shard", worker.write_shard, tasks, done, INFLIGHT * (spec.workers - 1))
    return entries


def _open_sources(sources: list[str], spec: ShardSpec):
    if not sources:
        raise BuildError("no sources given: pass image folders, file lists, tar archives or LMDB databases")
    for what, path in (("--labels", spec.labels), ("--classes", spec.classes)):
        if path is not None and not os.path.isfile(path):
            raise BuildError(f"{path}: no such file; {what} needs "
                             + ("a CSV/TSV of name,label" if what == "--labels" else "one class name per line"))
    try:
        return [open_source(s) for s in sources]
    except SourceError as err:
        raise BuildError(str(err)) from None


def _manifest(spec, src_paths, shard_entries, classes, sv: Survey, listed: int) -> dict:
    return {
        "format": "spotart-shards", "version": FORMAT_VERSION, "created_by": f"spotart {__version__}",
        "options": spec.output_options(), "sources": src_paths,
        "part": [spec.part_index, spec.part_count],
        "shards": shard_entries,
        "classes": classes,
        "class_ids": {c: i for i, c in enumerate(classes)},
        "num_samples": sum(s["count"] for s in shard_entries),
        "num_labelled": sv.labelled,
        "total_bytes": sum(s["bytes"] for s in shard_entries),
        "listed": listed, "skipped": sv.skipped, "duplicates": sv.duplicates,
    }


def _already_done(catalog, mpath: str, out: str, t0: float):
    catalog.drop_staging()  # in case a kill came between "done" and the drop
    catalog.close()
    with open(mpath) as f:
        m = json.load(f)
    log.info("%s: already complete", out)
    return BuildResult(out, m["num_samples"], len(m["shards"]), m["skipped"], m["duplicates"],
                       time.perf_counter() - t0, 0)


def build_shards(sources: list[str], out: str, spec: ShardSpec, overwrite: bool = False,
                 progress: bool = True) -> BuildResult:
    t0 = time.perf_counter()
    srcs = _open_sources(sources, spec)
    src_paths = [s.path for s in srcs]
    out = os.path.abspath(out)
    if any(os.path.commonpath([out, p]) in (out, p) for p in src_paths if os.path.isdir(p)) or out in src_paths:
        raise BuildError(f"{out}: the output directory is (inside) a source; choose another --out")
    catalog = _prepare_dir(out, fingerprint(spec, src_paths), spec, src_paths, overwrite)
    mpath = os.path.join(out, MANIFEST)
    if catalog.get_meta("state") == "done" and os.path.isfile(mpath):
        return _already_done(catalog, mpath, out, t0)
    job = work.Job(os.path.join(out, CATALOG), out, tuple((s.kind, s.path) for s in srcs),
                   spec.resize, spec.quality, spec.max_pixels)
    worker = work.Worker(job, catalog)   # -j 1: the workers' code, run here on our catalog
    pool = None
    if spec.workers > 1:   # -j N: N - 1 worker processes, and this one
        # spawn, not fork: callers (trainer, tests) may hold threads that fork would copy mid-lock
        import multiprocessing

        pool = ProcessPoolExecutor(spec.workers - 1, multiprocessing.get_context("spawn"), work.init, (job,))
        for _ in range(spec.workers - 1):  # start them now: their imports overlap the listing
            pool.submit(work.ready)
    try:
        try:
            manifest, converted, stages = _build(catalog, worker, pool, srcs, src_paths, out, spec, progress)
        except BrokenProcessPool:
            raise BuildError("a worker process died (killed, or out of memory: try a lower -j); the work done "
                             "is kept, re-run the same command to resume") from None
        write_atomic(mpath, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        catalog.put_meta("state", "done")
        catalog.drop_staging()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        worker.close()
        catalog.close()
    # staging was just dropped, by this call or after a resumed one that had nothing left to convert
    cat.compact(os.path.join(out, CATALOG))
    return BuildResult(out, manifest["num_samples"], len(manifest["shards"]), manifest["skipped"],
                       manifest["duplicates"], time.perf_counter() - t0, converted, stages)


def _build(catalog, worker, pool, srcs, src_paths, out, spec, progress):
    """The passes. -> (manifest, images converted, seconds per stage)."""
    stages, t = {}, time.perf_counter()
    table, fixed_classes = _label_files(spec)
    try:
        listings = _list_sources(srcs, pool)
    except SourceError as err:
        raise BuildError(str(err)) from None
    classes = _classes(listings, table, fixed_classes, spec.classes)
    class_ids = {c: i for i, c in enumerate(classes)}
    bases = np.cumsum([0] + [len(x) for x in listings]).tolist()
    total, listed = bases[-1], len(range(spec.part_index, bases[-1], spec.part_count))
    done = catalog.staged_mask(total)
    n_todo = listed - sum(done[spec.part_index::spec.part_count])
    stages["list"], t = time.perf_counter() - t, time.perf_counter()
    if n_todo:
        _convert(catalog, worker, pool, _batches(srcs, listings, bases, done, spec, class_ids), n_todo, spec, progress)
    del listings, done
    stages["convert"], t = time.perf_counter() - t, time.perf_counter()

    sv = _survey(catalog, out, spec)
    if listed and sv.skipped / listed > spec.max_skip_fraction:
        raise BuildError(
            f"{sv.skipped} of {listed} images ({100 * sv.skipped / listed:.1f}%) could not be read, more than "
            f"--max-skip-fraction {spec.max_skip_fraction}; see {os.path.join(out, 'skipped.jsonl')}, fix the "
            "source or raise the limit (converted images are kept: the re-run resumes)")
    if not len(sv.seqs):
        raise BuildError(f"no readable images in {', '.join(src_paths)} (see {os.path.join(out, 'skipped.jsonl')})")
    catalog.put_meta("state", "writing")
    plan = _plan(sv, spec)
    stages["survey"], t = time.perf_counter() - t, time.perf_counter()
    entries = _write(catalog, worker, pool, out, spec, plan, progress)
    stages["write"] = time.perf_counter() - t
    return _manifest(spec, src_paths, entries, classes, sv, listed), n_todo, stages

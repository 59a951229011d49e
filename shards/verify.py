"""`verify_shards`: re-check a shard directory against its manifest; `repair_shards`: make it
consistent again; `preflight_shard`: the trainer's cheap check before a run.

Per shard: the file exists, its size and sha256 match, the sample count matches, the index file
is exactly what the tar gives, and every image decodes. Repair rewrites a failed shard from its
samples (found through its index, which survives damaged tar headers, or its tar), without the
ones PIL or DALI's decoder cannot read or whose class id is bad, and updates its index, the
manifest and the catalog; the report names every sample dropped."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field

from PIL import Image

from .tario import index_components, index_of_tar


@dataclass
class ShardReport:
    path: str
    count: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        status = "ok" if self.ok else "FAIL: " + "; ".join(self.problems)
        return f"{self.path}: {self.count} samples, {status}"


def load_manifest(out: str) -> dict:
    path = os.path.join(out, "manifest.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no manifest; is {out} a finished `spotart build-shards` output?")
    try:
        with open(path) as f:
            m = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); rebuild with `spotart build-shards ... --overwrite`") from None
    if m.get("format") != "spotart-shards":
        raise ValueError(f"{path}: not a spotart shard manifest")
    return m


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_shard(base: str, entry: dict, num_classes: int, decode: bool = True) -> ShardReport:
    tar = os.path.join(base, entry["path"])
    rep = ShardReport(entry["path"])
    if not os.path.isfile(tar):
        rep.problems.append("missing")
        return rep
    size = os.path.getsize(tar)
    if size != entry["bytes"]:
        rep.problems.append(f"size {size} != manifest {entry['bytes']}")
    if _sha256(tar) != entry["sha256"]:
        rep.problems.append("sha256 differs from manifest")
    try:
        keys = set()
        with tarfile.open(tar, "r:") as tf:
            for m in tf:
                key, _, ext = m.name.partition(".")
                keys.add(key)
                if not decode or ext not in ("jpg", "cls"):
                    continue
                data = tf.extractfile(m).read()
                if ext == "jpg":
                    try:
                        with Image.open(io.BytesIO(data)) as im:
                            im.load()
                    except Exception as err:  # noqa: BLE001 - any decoder error is a finding
                        rep.problems.append(f"{m.name} does not decode ({_why(err)})")
                elif not (data.isdigit() and int(data) < num_classes):
                    rep.problems.append(f"{m.name}: bad class id {data[:20]!r}")
        rep.count = len(keys)
        if rep.count != entry["count"]:
            rep.problems.append(f"{rep.count} samples != manifest {entry['count']}")
        idx = os.path.join(base, entry["index"])
        if not os.path.isfile(idx):
            rep.problems.append(f"index {entry['index']} missing")
        else:
            with open(idx) as f:
                if f.read() != index_of_tar(tar):
                    rep.problems.append(f"index {entry['index']} does not match the tar")
    except (tarfile.TarError, OSError, EOFError) as err:
        rep.problems.append(f"not a readable tar ({err})")
    return rep


def verify_shards(out: str, decode: bool = True):
    """Yields one ShardReport per shard of the manifest in `out`."""
    m = load_manifest(out)
    for entry in m["shards"]:
        yield verify_shard(out, entry, len(m["classes"]), decode)


# ---- the cheap check before training ---------------------------------------------------------------

def preflight_shard(base: str, entry: dict) -> list[str]:
    """What a glance finds wrong with one shard (no hashing): missing files, a size other than the
    manifest's, an index whose header or last entry does not fit the manifest and the tar."""
    tar, idx = os.path.join(base, entry["path"]), os.path.join(base, entry["index"])
    if not os.path.isfile(tar):
        return [f"{entry['path']} missing"]
    size = os.path.getsize(tar)
    problems = [] if size == entry["bytes"] else [f"{entry['path']}: {size} bytes, manifest says {entry['bytes']}"]
    if not os.path.isfile(idx):
        return problems + [f"{entry['index']} missing"]
    with open(idx, "rb") as f:
        head = f.readline().split()
        f.seek(max(0, os.path.getsize(idx) - 4096))
        tail = f.read().splitlines()
    if len(head) != 2 or head[1] != str(entry["count"]).encode():
        problems.append(f"{entry['index']}: header {b' '.join(head).decode(errors='replace')!r}, manifest says "
                        f"{entry['count']} samples")
    elif entry["count"]:
        last = tail[-1].split() if tail else []
        ends = [int(last[i + 1]) + int(last[i + 2]) for i in range(0, len(last) - 3, 4) if last[i + 1].isdigit()]
        if not ends or max(ends) > size:
            problems.append(f"{entry['index']}: its last sample lies beyond the end of {entry['path']}")
    return problems


# ---- repair -----------------------------------------------------------------------------------------

@dataclass
class RepairReport:
    path: str
    kept: int = 0
    dropped: list[tuple[str, str]] = field(default_factory=list)   # (key, why)
    dropped_labelled: int = 0
    error: str | None = None                                       # the shard could not be repaired

    def line(self) -> str:
        if self.error:
            return f"{self.path}: NOT repaired: {self.error}"
        gone = "; ".join(f"{k} ({why})" for k, why in self.dropped[:10])
        more = f" and {len(self.dropped) - 10} more" if len(self.dropped) > 10 else ""
        return (f"{self.path}: repaired, {self.kept} samples kept, {len(self.dropped)} dropped"
                + (f": {gone}{more}" if self.dropped else ""))


def _read_by_index(tar: str, text: str):
    """[(key, {ext: bytes} or None where a tar header is damaged)] through index `text`; None when
    most entries do not point at their own tar members (then the index is the damaged part)."""
    out, misses = [], 0
    with open(tar, "rb") as f:
        for line in text.splitlines()[1:]:
            members, comps = index_components(line), {}
            for ext, (off, size, name) in members.items():
                f.seek(max(0, off - 512))
                header = f.read(512)
                if len(header) < 512 or (len(name) < 100 and header[:100].rstrip(b"\0") != name.encode()):
                    comps = None
                    break
                comps[ext] = f.read(size)
            misses += comps is None
            out.append((next(iter(members.values()))[2].rsplit(".", 1)[0], comps))
    return None if misses > len(out) // 2 else out


def _samples_of(base: str, entry: dict):
    """[(key, {ext: bytes} or None)] of a shard: through the build's index when it fits the tar
    (it survives damaged tar headers), else through the index read back from the tar."""
    tar, idx = os.path.join(base, entry["path"]), os.path.join(base, entry["index"])
    if os.path.isfile(idx):
        try:
            with open(idx) as f:
                samples = _read_by_index(tar, f.read())
            if samples is not None and len(samples) == entry["count"]:
                return samples
        except (ValueError, IndexError, OSError):
            pass
    samples = _read_by_index(tar, index_of_tar(tar))
    if samples is None:
        raise ValueError("its members do not match their headers")
    return samples


def _why(err: Exception) -> str:
    """A decoder error in words, without PIL's object addresses."""
    text = str(err)
    if type(err).__name__ == "UnidentifiedImageError":
        return "not an image PIL knows (damaged header?)"
    return text.split(" <_io.")[0]


def _undecodable(blobs: list[bytes]) -> dict[int, str]:
    """{i: why} for the images PIL or DALI's CPU decoder (the trainer's) cannot read."""
    import numpy as np

    from ..pipeline.badsamples import undecodable
    from ..pipeline.config import PipelineConfig

    bad = {}
    for i, data in enumerate(blobs):
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
        except Exception as err:  # noqa: BLE001 - any decoder error is a finding
            bad[i] = f"does not decode: {_why(err)}"
    rest = [i for i in range(len(blobs)) if i not in bad]
    cfg = PipelineConfig(shards="", task="images", device="cpu", image_size=16, num_threads=1)
    for j, why in undecodable(cfg, [np.frombuffer(blobs[i], np.uint8) for i in rest]).items():
        bad[rest[j]] = f"DALI cannot decode it: {why}"
    return bad


def repair_shard(base: str, entry: dict, num_classes: int) -> tuple[RepairReport, dict | None]:
    """Rewrite one shard without its undecodable samples (or bad class ids), and its index.
    -> (report, the manifest entry of the new shard; None when it could not be repaired)."""
    from .tario import ShardWriter, write_atomic

    rep = RepairReport(entry["path"])
    try:
        samples = _samples_of(base, entry)
    except (OSError, ValueError, IndexError, tarfile.TarError, EOFError) as err:
        rep.error = f"cannot read it ({err}); rebuild the shards or restore this file"
        return rep, None
    bad = {k: "its tar header is damaged" for k, (_, c) in enumerate(samples) if c is None}
    readable = [k for k in range(len(samples)) if k not in bad]
    for j, why in _undecodable([samples[k][1].get("jpg", b"") for k in readable]).items():
        bad[readable[j]] = why
    for k, (key, comps) in enumerate(samples):
        cls = comps.get("cls") if comps else None
        if k not in bad and cls is not None and not (cls.isdigit() and int(cls) < num_classes):
            bad[k] = f"bad class id {cls[:20]!r}"
    tar = os.path.join(base, entry["path"])
    writer = ShardWriter(tar)
    try:
        for k, (key, comps) in enumerate(samples):
            if k in bad:
                rep.dropped.append((key, bad[k]))
                rep.dropped_labelled += comps is None or "cls" in comps
            else:
                writer.add(key, comps)
        nbytes, sha = writer.close()
    except BaseException:
        writer.abort()
        raise
    write_atomic(os.path.join(base, entry["index"]), writer.index_text())
    rep.kept = len(samples) - len(bad)
    return rep, dict(entry, count=rep.kept, bytes=nbytes, sha256=sha)


def repair_shards(out: str, reports: list[ShardReport]) -> list[RepairReport]:
    """Repair the shards whose verification failed, then the manifest (counts, sizes, hashes)
    and the catalog (the dropped samples' records go, the kept ones' offsets follow)."""
    from .tario import write_atomic

    m = load_manifest(out)
    failed = {r.path for r in reports if not r.ok}
    results, entries = [], []
    for entry in m["shards"]:
        if entry["path"] not in failed:
            entries.append(entry)
            continue
        rep, new = repair_shard(out, entry, len(m["classes"]))
        results.append(rep)
        entries.append(new or entry)
        if new is not None:
            _update_catalog(out, entry["path"], new, rep.dropped)
    m["shards"] = entries
    m["num_samples"] = sum(e["count"] for e in entries)
    m["num_labelled"] = m.get("num_labelled", 0) - sum(r.dropped_labelled for r in results)
    m["total_bytes"] = sum(e["bytes"] for e in entries)
    m["repaired"] = m.get("repaired", 0) + sum(len(r.dropped) for r in results)
    write_atomic(os.path.join(out, "manifest.json"), json.dumps(m, indent=1, sort_keys=True) + "\n")
    return results


def _update_catalog(out: str, shard: str, entry: dict, dropped: list[tuple[str, str]]):
    from . import catalog as cat

    path = os.path.join(out, "catalog.lmdb")
    if not os.path.isdir(path):
        return
    c = cat.Catalog(path)
    try:
        name = shard[:-4] if shard.endswith(".tar") else shard
        with open(os.path.join(out, entry["index"])) as f:
            offsets = {}
            for line in f.read().splitlines()[1:]:
                if (jpg := index_components(line).get("jpg")) is not None:
                    offsets[jpg[2].rsplit(".", 1)[0]] = jpg[0]
        moved = {}
        for key, off in offsets.items():
            rec = c.sample(key)
            if rec is not None:
                moved[key] = dict(rec, offset=off)
        rec = c.shard_record(name) or {}
        c.commit_shard(name, dict(rec, **{k: entry[k] for k in ("path", "index", "count", "bytes", "sha256")}), moved)
        c.drop_samples([k for k, _ in dropped])
    finally:
        c.close()

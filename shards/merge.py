"""`merge_manifests`: join the outputs of `build-shards --part I/N` runs into one shard set.

Each part lives in its own directory; the merged manifest (and catalog) go to `out`, naming the
shards by paths relative to `out`, so the DALI reader sees one dataset."""

from __future__ import annotations

import json
import os

from . import catalog as cat
from .tario import write_atomic
from .verify import load_manifest


class MergeError(ValueError):
    pass


def merge_manifests(parts: list[str], out: str) -> dict:
    if not parts:
        raise MergeError("no part directories given")
    manifests = [(os.path.abspath(p), load_manifest(p)) for p in parts]
    first = manifests[0][1]
    n = first["part"][1]
    base_opts = {k: v for k, v in first["options"].items() if k != "part_index"}
    seen = {}
    for path, m in manifests:
        opts = {k: v for k, v in m["options"].items() if k != "part_index"}
        if opts != base_opts or m["sources"] != first["sources"]:
            raise MergeError(f"{path}: built with other options or sources than {manifests[0][0]}; parts must come from one command")
        if m["classes"] != first["classes"]:
            raise MergeError(f"{path}: class list differs from {manifests[0][0]}")
        if m["part"][1] != n:
            raise MergeError(f"{path}: part of {m['part'][1]}, others of {n}")
        if m["part"][0] in seen:
            raise MergeError(f"{path}: part {m['part'][0]} given twice (also {seen[m['part'][0]]})")
        seen[m["part"][0]] = path
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise MergeError(f"parts {missing} of {n} are missing; build them with --part I/{n} first")
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    shards = []
    mcat = cat.Catalog(os.path.join(out, "catalog.lmdb"))
    try:
        for path, m in sorted(manifests, key=lambda pm: pm[1]["part"][0]):
            rel = os.path.relpath(path, out)
            pcat = cat.Catalog(os.path.join(path, "catalog.lmdb"), readonly=True)
            try:
                by_shard = {}
                for key, rec in pcat.iter_samples():
                    by_shard.setdefault(rec["shard"], {})[key] = rec
                for entry in m["shards"]:
                    e = dict(entry, path=os.path.join(rel, entry["path"]), index=os.path.join(rel, entry["index"]))
                    shards.append(e)
                    samples = {k: dict(r, shard=e["path"]) for k, r in by_shard.get(entry["path"], {}).items()}
                    mcat.commit_shard(os.path.splitext(e["path"])[0], e, samples)
            finally:
                pcat.close()
        mcat.put_meta("state", "merged")
    finally:
        mcat.close()
    merged = {k: first[k] for k in ("format", "version", "created_by", "sources", "classes")}
    merged["class_ids"] = {c: i for i, c in enumerate(first["classes"])}
    merged.update(
        options=dict(first["options"], part_index=None), part=None, merged_from=[p for p, _ in manifests],
        shards=shards, num_samples=sum(s["count"] for s in shards), total_bytes=sum(s["bytes"] for s in shards),
        num_labelled=sum(m["num_labelled"] for _, m in manifests), listed=sum(m["listed"] for _, m in manifests),
        skipped=sum(m["skipped"] for _, m in manifests), duplicates=sum(m["duplicates"] for _, m in manifests),
    )
    write_atomic(os.path.join(out, "manifest.json"), json.dumps(merged, indent=1, sort_keys=True) + "\n")
    return merged

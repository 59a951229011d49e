"""`verify_shards`: re-check a shard directory against its manifest.

Per shard: the file exists, its size and sha256 match, the sample count matches, the index file
is exactly what the tar gives, and every image decodes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field

from PIL import Image

from .tario import index_of_tar


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
                        rep.problems.append(f"{m.name} does not decode ({err})")
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

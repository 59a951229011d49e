"""The LMDB catalog in a shard directory: the build's memory.

Named databases:
- `meta`    build fingerprint and state;
- `staged`  seq -> converted sample (or skip/duplicate record) while the build runs; what makes a
            killed build resumable without redoing finished conversions; dropped at the end;
- `hashes`  sha256 of source bytes -> "key<TAB>source" of the first sample with those bytes (de-duplication);
- `shards`  shard name -> {count, bytes, sha256} once the shard is on disk;
- `samples` key -> {shard, offset, size, sha256, label, source, ...}: provenance of every sample.
Every write is one LMDB transaction, so a kill leaves the catalog at a transaction boundary."""

from __future__ import annotations

import json
import os
import struct

import lmdb

# LMDB reserves address space, not disk: the file grows with the data (sparse on Linux).
MAP_SIZE = 1 << 42
OK, SKIPPED, DUPLICATE = b"O", b"S", b"D"


def _seq_key(seq: int) -> bytes:
    return struct.pack(">Q", seq)


def _pack(kind: bytes, header: dict, payload: bytes = b"") -> bytes:
    h = json.dumps(header, ensure_ascii=True).encode()
    return kind + struct.pack(">I", len(h)) + h + payload


def _unpack(buf) -> tuple[bytes, dict, bytes]:
    buf = bytes(buf)
    (n,) = struct.unpack(">I", buf[1:5])
    return buf[:1], json.loads(buf[5 : 5 + n]), buf[5 + n :]


class Catalog:
    def __init__(self, path: str, readonly: bool = False):
        self.path = path
        if readonly and not os.path.isdir(path):
            raise FileNotFoundError(f"{path}: no catalog here")
        self.env = lmdb.open(path, map_size=MAP_SIZE, max_dbs=8, readonly=readonly, lock=not readonly,
                             subdir=True, sync=True, metasync=True)
        create = not readonly
        self.meta = self.env.open_db(b"meta", create=create)
        self.staged = self.env.open_db(b"staged", create=create)
        self.hashes = self.env.open_db(b"hashes", create=create)
        self.shards = self.env.open_db(b"shards", create=create)
        self.samples = self.env.open_db(b"samples", create=create)

    def close(self):
        self.env.close()

    # meta -------------------------------------------------------------------------------
    def get_meta(self, key: str, default=None):
        with self.env.begin(db=self.meta) as txn:
            v = txn.get(key.encode())
        return default if v is None else json.loads(v)

    def put_meta(self, key: str, value):
        with self.env.begin(db=self.meta, write=True) as txn:
            txn.put(key.encode(), json.dumps(value).encode())

    # staging ----------------------------------------------------------------------------
    def staged_seqs(self) -> set[int]:
        with self.env.begin(db=self.staged) as txn:
            return {struct.unpack(">Q", k)[0] for k in txn.cursor().iternext(values=False)}

    def first_of_hash(self, digest: str) -> str | None:
        with self.env.begin(db=self.hashes) as txn:
            v = txn.get(digest.encode())
        return None if v is None else v.decode()

    def put_staged(self, records: list[tuple[int, bytes, dict, bytes]], new_hashes: dict[str, str]):
        """One transaction: converted/skipped/duplicate records and their hash entries."""
        with self.env.begin(write=True) as txn:
            for seq, kind, header, payload in records:
                txn.put(_seq_key(seq), _pack(kind, header, payload), db=self.staged)
            for digest, key in new_hashes.items():
                txn.put(digest.encode(), key.encode(), db=self.hashes)

    def iter_staged(self, with_payload: bool = False):
        """(seq, kind, header, payload or b"") in seq order."""
        with self.env.begin(db=self.staged, buffers=True) as txn:
            for k, v in txn.cursor():
                kind, header, payload = _unpack(v) if with_payload else _unpack_header(v)
                yield struct.unpack(">Q", bytes(k))[0], kind, header, payload

    def get_staged(self, seqs: list[int]) -> list[tuple[dict, bytes]]:
        with self.env.begin(db=self.staged) as txn:
            out = []
            for s in seqs:
                _, header, payload = _unpack(txn.get(_seq_key(s)))
                out.append((header, payload))
            return out

    # shards and samples ---------------------------------------------------------------
    def shard_record(self, name: str) -> dict | None:
        with self.env.begin(db=self.shards) as txn:
            v = txn.get(name.encode())
        return None if v is None else json.loads(v)

    def commit_shard(self, name: str, info: dict, samples: dict[str, dict]):
        with self.env.begin(write=True) as txn:
            for key, rec in samples.items():
                txn.put(key.encode(), json.dumps(rec, ensure_ascii=True).encode(), db=self.samples)
            txn.put(name.encode(), json.dumps(info).encode(), db=self.shards)

    def drop_samples(self, keys: list[str]):
        """Forget samples (verify-shards --repair dropped them from their shard)."""
        with self.env.begin(write=True, db=self.samples) as txn:
            for k in keys:
                txn.delete(k.encode())

    def iter_samples(self):
        with self.env.begin(db=self.samples) as txn:
            for k, v in txn.cursor():
                yield bytes(k).decode(), json.loads(v)

    def sample(self, key: str) -> dict | None:
        with self.env.begin(db=self.samples) as txn:
            v = txn.get(key.encode())
        return None if v is None else json.loads(v)

    def count(self, db) -> int:
        with self.env.begin(db=db) as txn:
            return txn.stat(db)["entries"]

    def drop_staging(self):
        with self.env.begin(write=True) as txn:
            txn.drop(self.staged, delete=False)


def _unpack_header(buf) -> tuple[bytes, dict, bytes]:
    (n,) = struct.unpack(">I", bytes(buf[1:5]))
    return bytes(buf[:1]), json.loads(bytes(buf[5 : 5 + n])), b""


def compact(path: str):
    """Rewrite the catalog without the free pages the dropped staging data left behind."""
    env = lmdb.open(path, map_size=MAP_SIZE, max_dbs=8, subdir=True)
    tmp = path + ".compact"
    if os.path.isdir(tmp):
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
    else:
        os.makedirs(tmp)
    env.copy(tmp, compact=True)
    env.close()
    for f in ("data.mdb",):
        os.replace(os.path.join(tmp, f), os.path.join(path, f))
    for f in os.listdir(tmp):
        os.remove(os.path.join(tmp, f))
    os.rmdir(tmp)

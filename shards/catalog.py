"""The LMDB catalog in a shard directory: the build's memory.

Named databases:
- `meta`    build fingerprint and state;
- `staged`  seq -> converted sample, as the tar members it will be in its shard, written by the
            worker that converted it; what makes a killed build resumable without redoing
            finished conversions; dropped at the end;
- `outcomes` seq -> what became of each image (converted: source digest, size, label flag,
            source; or skipped: the reason), written in the same transaction as `staged`; small
            records, so the survey after conversion does not page through the samples;
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
OK, SKIPPED = b"O", b"S"
HASH_BATCH = 65536
STAGING_FORMAT = 2   # staged: meta length, meta JSON, sample bytes; outcomes: see pack_ok
_OUTCOME = struct.Struct(">32sIB")   # source sha256, sample bytes in a shard, labelled


def _seq_key(seq: int) -> bytes:
    return struct.pack(">Q", seq)


def pack_ok(digest: bytes, meta: dict, blob: bytes) -> tuple[bytes, bytes]:
    """A converted sample -> (outcome, staged value). `digest` is the sha256 of its source
    bytes (de-duplication), `meta` its provenance and member layout, `blob` its tar members."""
    m = json.dumps(meta, ensure_ascii=True).encode()
    outcome = OK + _OUTCOME.pack(digest, len(blob), meta["label"] is not None) + meta["source"].encode("utf-8", "surrogateescape")
    return outcome, struct.pack(">I", len(m)) + m + blob


def pack_skipped(header: dict) -> tuple[bytes, None]:
    return SKIPPED + json.dumps(header, ensure_ascii=True).encode(), None


def _unpack_staged(buf) -> tuple[dict, memoryview]:
    """-> (meta, sample bytes as a view: no copy)."""
    (n,) = struct.unpack(">I", bytes(buf[:4]))
    return json.loads(bytes(buf[4 : 4 + n])), memoryview(buf)[4 + n :]


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
        try:
            self.outcomes = self.env.open_db(b"outcomes", create=create)
        except lmdb.NotFoundError:   # a catalog written before it existed, opened read-only
            self.outcomes = None
        self._htxn = None

    def close(self):
        if self._htxn is not None:
            self._htxn.abort()
            self._htxn = None
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
    def staged_mask(self, n: int) -> bytearray:
        """mask[seq] == 1 for every staged seq < n (1.3 M seqs: 1.3 MB, not a set of ints)."""
        mask = bytearray(n)
        with self.env.begin(db=self.outcomes) as txn:
            for k in txn.cursor().iternext(values=False):
                seq = struct.unpack(">Q", k)[0]
                if seq < n:
                    mask[seq] = 1
        return mask

    def put_staged(self, records: list[tuple[int, bytes, bytes | None]]):
        """One transaction: (seq, outcome, staged value or None) records."""
        with self.env.begin(write=True) as txn:
            for seq, outcome, value in records:
                k = _seq_key(seq)
                if value is not None:
                    txn.put(k, value, db=self.staged)
                txn.put(k, outcome, db=self.outcomes)

    def iter_outcomes(self):
        """(seq, kind, digest, sample size, labelled, source) of converted images and
        (seq, kind, None, 0, False, skip record) of skipped ones, in seq order."""
        with self.env.begin(db=self.outcomes, buffers=True) as txn:
            for k, v in txn.cursor():
                seq, kind = struct.unpack(">Q", bytes(k))[0], bytes(v[:1])
                if kind == SKIPPED:
                    yield seq, kind, None, 0, False, json.loads(bytes(v[1:]))
                    continue
                digest, size, labelled = _OUTCOME.unpack(bytes(v[1 : 1 + _OUTCOME.size]))
                yield seq, kind, digest, size, bool(labelled), bytes(v[1 + _OUTCOME.size :]).decode("utf-8", "surrogateescape")

    def first_of(self, digest: bytes, key: str, source: str) -> str:
        """"key<TAB>source" of the first sample with these source bytes: this one unless an
        earlier seq holds them (call in seq order). Idempotent, so a survey redone after a kill
        gives the same. Written in transactions of HASH_BATCH; `flush()` commits the last."""
        if self._htxn is None:
            self._htxn, self._hcount = self.env.begin(write=True, db=self.hashes), 0
        h = digest.hex().encode()
        mine = f"{key}\t{source}"
        if self._htxn.put(h, mine.encode("utf-8", "surrogateescape"), overwrite=False):
            first = mine
        else:
            first = bytes(self._htxn.get(h)).decode("utf-8", "surrogateescape")
        self._hcount += 1
        if self._hcount >= HASH_BATCH:  # bounded dirty pages: 1.3 M hashes in one txn would sit in RAM
            self.flush()
        return first

    def flush(self):
        if self._htxn is not None:
            self._htxn.commit()
            self._htxn = None

    def staged_samples(self, seqs):
        """(meta, sample bytes as a view) for each seq, in one read transaction; consume each
        before the next (the view is only valid until then)."""
        with self.env.begin(db=self.staged, buffers=True) as txn:
            for s in seqs:
                v = txn.get(_seq_key(int(s)))
                if v is None:
                    raise KeyError(f"{self.path}: sample {int(s)} is not staged")
                yield _unpack_staged(v)

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
            txn.drop(self.outcomes, delete=False)


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

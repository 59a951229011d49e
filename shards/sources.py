"""Image sources: folders, CSV/TSV file lists, tar/tar.gz archives (streamed), LMDB databases.

A source is listed once (names only: cheap, and it fixes every sample's sequence number, its
label and which `--part` it belongs to) and read once (bytes, in the same order). Both walks
are deterministic: folders are walked sorted, archives in stream order, LMDB in key order."""

from __future__ import annotations

import csv
import os
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Iterator

from . import tarstream

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
LIST_SUFFIXES = (".csv", ".tsv", ".txt", ".lst")


class SourceError(ValueError):
    """A source that cannot be used at all (missing, unreadable, unknown kind)."""


def is_image_name(name: str) -> bool:
    base = posixpath.basename(name)
    # AppleDouble/hidden files ("._x.jpg", ".DS_Store") are metadata, not images: ignored silently
    return not base.startswith(".") and posixpath.splitext(base)[1].lower() in IMAGE_EXTS


@dataclass(frozen=True)
class Entry:
    ref: str            # where the sample came from: path, "archive::member" or "db::key"
    label: str | None   # class name, or None when the source is unlabelled
    locator: object     # what read() needs: a path (str) for files, the member/key otherwise


def _folder_labels(rel_paths: list[str]) -> list[str | None]:
    """Class-per-subfolder gives labels, a flat folder none. A chain of single top folders
    (archives usually hold `train/<class>/x.jpg`) is stripped first."""
    parts = [p.split("/") for p in rel_paths]
    if not parts:
        return []
    depth = 0
    while all(len(p) > depth + 1 for p in parts) and len({p[depth] for p in parts}) == 1:
        depth += 1
    if all(len(p) > depth + 1 for p in parts):
        return [p[depth] for p in parts]
    return [None] * len(parts)


class FolderSource:
    kind = "folder"

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def list(self) -> list[Entry]:
        rels = []
        for root, dirs, files in os.walk(self.path, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if is_image_name(f):
                    rels.append(os.path.relpath(os.path.join(root, f), self.path).replace(os.sep, "/"))
        labels = _folder_labels(rels)
        return [Entry(os.path.join(self.path, r), lab, os.path.join(self.path, r)) for r, lab in zip(rels, labels)]

    def read(self, entries: Iterator[tuple[int, Entry]]) -> Iterator[tuple[int, Entry, object]]:
        # workers open the files themselves: the payload is the path
        for seq, e in entries:
            yield seq, e, e.locator


class ListSource:
    """CSV/TSV lines `path[,label]`; relative paths are relative to the list file. A first line
    whose path column is literally `path` (or `filename`, `file`) is a header."""

    kind = "list"

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def list(self) -> list[Entry]:
        base = os.path.dirname(self.path)
        with open(self.path, newline="", encoding="utf-8") as f:
            text = f.read()
        delim = "\t" if self.path.endswith(".tsv") or ("\t" in text.split("\n", 1)[0]) else ","
        out = []
        for lineno, row in enumerate(csv.reader(text.splitlines(), delimiter=delim), 1):
            if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                continue
            if lineno == 1 and row[0].strip().lower() in ("path", "filename", "file", "image"):
                continue
            if len(row) > 2:
                raise SourceError(f"{self.path}:{lineno}: expected `path[,label]`, got {len(row)} columns")
            p = row[0].strip()
            full = p if os.path.isabs(p) else os.path.join(base, p)
            label = row[1].strip() if len(row) == 2 and row[1].strip() else None
            out.append(Entry(full, label, full))
        return out

    read = FolderSource.read


class TarSource:
    """A tar archive (optionally gz/bz2/xz compressed) read as a stream, never extracted."""

    kind = "tar"

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def _members(self):
        try:
            for name, _, f in tarstream.members(self.path):
                if is_image_name(name):
                    yield name, f
        except tarstream.TarStreamError as err:
            raise SourceError(f"{err}; re-download or re-create it") from None

    def list(self) -> list[Entry]:
        names = [n for n, _ in self._members()]
        labels = _folder_labels([n.lstrip("./") for n in names])
        # the locator is the member's ordinal among image members: names may repeat in a tar
        return [Entry(f"{self.path}::{n}", lab, i) for i, (n, lab) in enumerate(zip(names, labels))]

    def read(self, entries):
        wanted = iter(entries)
        nxt = next(wanted, None)
        if nxt is None:
            return
        for i, (_, f) in enumerate(self._members()):
            seq, e = nxt
            if i != e.locator:
                continue  # not ours (other --part, or already done): stream past it
            try:
                data = f.read()
            except tarstream.TarStreamError as err:
                raise SourceError(f"{self.path}: {err}; re-download or re-create it") from None
            yield seq, e, data
            nxt = next(wanted, None)
            if nxt is None:
                return


class LmdbSource:
    """An LMDB database of encoded images, key -> image bytes (LSUN style). Unlabelled."""

    kind = "lmdb"

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def _env(self):
        import lmdb

        subdir = os.path.isdir(self.path)
        try:
            return lmdb.open(self.path, subdir=subdir, readonly=True, lock=False, readahead=False, max_dbs=0)
        except lmdb.Error as err:
            raise SourceError(f"{self.path}: not a readable LMDB database ({err})") from err

    @staticmethod
    def _key_text(key: bytes) -> str:
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            return "0x" + key.hex()

    def list(self) -> list[Entry]:
        env = self._env()
        try:
            with env.begin() as txn:
                keys = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
        finally:
            env.close()
        return [Entry(f"{self.path}::{self._key_text(k)}", None, k) for k in keys]

    def read(self, entries):
        env = self._env()
        try:
            with env.begin(buffers=False) as txn:
                for seq, e in entries:
                    yield seq, e, txn.get(e.locator) or b""
        finally:
            env.close()


def open_source(path: str):
    """The source kind of `path`, from what it is on disk."""
    if not os.path.exists(path):
        raise SourceError(f"{path}: no such file or directory")
    low = path.lower()
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "data.mdb")):
            return LmdbSource(path)
        return FolderSource(path)
    if low.endswith(".mdb") or low.endswith(".lmdb"):
        return LmdbSource(path)
    if low.endswith(TAR_SUFFIXES) or tarfile.is_tarfile(path):
        return TarSource(path)
    if low.endswith(LIST_SUFFIXES):
        return ListSource(path)
    raise SourceError(
        f"{path}: unknown source kind; give an image folder, a .csv/.tsv file list, a tar/tar.gz archive or an LMDB database"
    )

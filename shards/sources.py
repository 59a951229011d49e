"""Image sources: folders, CSV/TSV file lists, tar archives (plain, compressed, nested), LMDB.

A source is listed once (names only: cheap, and it fixes every sample's sequence number, its
label and which `--part` it belongs to) and read once, in parallel where it can be: files,
LMDB records and images in an uncompressed tar (at any nesting depth) are read by the worker
processes themselves, given a path, a key or an (offset, size); only compressed archives are
streamed by the main process, which hands the bytes on. Both walks are deterministic: folders
are walked sorted, archives in stream order, LMDB in key order.

A listing is stored by columns (names, interned labels, offsets in an array), not as one object
per image: ILSVRC2012's 1.28 M names must fit comfortably in the main process."""

from __future__ import annotations

import csv
import os
import tarfile
from array import array
from dataclasses import dataclass
from typing import Iterator

from . import tarstream
from .tarstream import TAR_SUFFIXES, tar_stem

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
LIST_SUFFIXES = (".csv", ".tsv", ".txt", ".lst")
SEP = "::"  # between an archive and a member, and between nested archives' members


class SourceError(ValueError):
    """A source that cannot be used at all (missing, unreadable, unknown kind)."""


def is_image_name(name: str) -> bool:
    base = name.rpartition("/")[2]
    dot = base.rfind(".")
    # AppleDouble/hidden files ("._x.jpg", ".DS_Store") are metadata, not images: ignored silently
    return dot > 0 and not base.startswith(".") and base[dot:].lower() in IMAGE_EXTS


@dataclass
class Listing:
    """The images of one source in read order. Image i is `prefix + names[i]` (its ref, the
    provenance written into every sample); `labels[i]` is its class name or None."""

    prefix: str
    names: list[str]
    labels: list
    offsets: array | None = None     # tar: data offset in the file, -1 where a compressed layer is above
    sizes: array | None = None       # tar: data size
    keys: list | None = None         # LMDB: raw keys

    def __len__(self) -> int:
        return len(self.names)

    def ref(self, i: int) -> str:
        return self.prefix + self.names[i]

    def locator(self, i: int):
        """What a worker needs to read image i itself, or None when the main process must
        stream it (inside a compressed archive)."""
        if self.offsets is not None:
            off = self.offsets[i]
            return None if off < 0 else (off, self.sizes[i])
        if self.keys is not None:
            return self.keys[i]
        return self.ref(i)


def intern_labels(labels) -> list:
    """One string object per class, not per image."""
    seen: dict = {}
    return [seen.setdefault(x, x) for x in labels]


def _folder_labels(rel_paths: list[str]) -> list[str | None]:
    """Class-per-subfolder gives labels, a flat folder none. A chain of single top folders
    (archives usually hold `train/<class>/x.jpg`) is stripped first."""
    depth = 0
    while rel_paths:
        tops = set()
        for p in rel_paths:
            parts = p.split("/", depth + 1)
            if len(parts) < depth + 2:
                return [None] * len(rel_paths)  # an image at this depth: no class folders
            tops.add(parts[depth])
        if len(tops) > 1:
            return intern_labels(p.split("/", depth + 1)[depth] for p in rel_paths)
        depth += 1
    return []


def _as_path(chain: str) -> str:
    """`a.tar::b/c.tar::x.jpg` -> `a/b/c/x.jpg`: nested archives count as folders."""
    parts = chain.split(SEP)
    return "/".join([tar_stem(p) for p in parts[:-1]] + parts[-1:])


def _tar_labels(names: list[str]) -> list[str | None]:
    """Labels inside one archive, nested archives included. An inner archive with class
    folders keeps its own labels; a flat one (ILSVRC2012 train's `n01440764.tar`) counts as a
    folder named by its stem at the level that holds it, so all its images share one label and
    one path (its shallowest) stands for them: 1.3 M names need no second copy."""
    if not any(SEP in n for n in names):
        return _folder_labels([n.lstrip("./") for n in names])
    labels: list = [None] * len(names)
    units = []   # (path, start, end): images [start, end) get the label of path
    i = 0
    while i < len(names):
        head, sep, _ = names[i].partition(SEP)
        if not sep:
            units.append((names[i].lstrip("./"), i, i + 1))
            i += 1
            continue
        j = i + 1
        while j < len(names) and names[j].startswith(head + SEP):  # an archive's members are contiguous
            j += 1
        sub = _tar_labels([names[k].split(SEP, 1)[1] for k in range(i, j)])
        if any(sub):
            labels[i:j] = sub
        else:
            rep = min(range(i, j), key=lambda k: names[k].count("/") + names[k].count(SEP))
            units.append((_as_path(names[rep]).lstrip("./"), i, j))
        i = j
    for (_, a, b), lab in zip(units, _folder_labels([u[0] for u in units])):
        labels[a:b] = [lab] * (b - a)
    return intern_labels(labels)


class FolderSource:
    kind = "folder"

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def list(self) -> Listing:
        rels = []
        for root, dirs, files in os.walk(self.path, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel_root = os.path.relpath(root, self.path).replace(os.sep, "/")
            for f in sorted(files):
                if is_image_name(f):
                    rels.append(f if rel_root == "." else f"{rel_root}/{f}")
        return Listing(self.path + "/", rels, _folder_labels(rels))


class ListSource:
    """CSV/TSV lines `path[,label]`; relative paths are relative to the list file. A first line
    whose path column is literally `path` (or `filename`, `file`) is a header."""

    kind = "list"

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def list(self) -> Listing:
        base = os.path.dirname(self.path)
        with open(self.path, newline="", encoding="utf-8") as f:
            text = f.read()
        delim = "\t" if self.path.endswith(".tsv") or ("\t" in text.split("\n", 1)[0]) else ","
        names, labels = [], []
        for lineno, row in enumerate(csv.reader(text.splitlines(), delimiter=delim), 1):
            if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                continue
            if lineno == 1 and row[0].strip().lower() in ("path", "filename", "file", "image"):
                continue
            if len(row) > 2:
                raise SourceError(f"{self.path}:{lineno}: expected `path[,label]`, got {len(row)} columns")
            p = row[0].strip()
            names.append(p if os.path.isabs(p) else os.path.join(base, p))
            labels.append(row[1].strip() if len(row) == 2 and row[1].strip() else None)
        return Listing("", names, intern_labels(labels))


class TarSource:
    """A tar archive (optionally gz/bz2/xz compressed, archives inside walked in place), never
    extracted. Uncompressed images are read by offset; compressed ones are streamed."""

    kind = "tar"

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def _images(self) -> Iterator[tarstream.Member]:
        try:
            for m in tarstream.walk(self.path):
                if is_image_name(m.name):
                    yield m
        except tarstream.TarStreamError as err:
            raise SourceError(f"{err}; re-download or re-create it") from None

    def list(self) -> Listing:
        names, offsets, sizes = [], array("q"), array("q")
        for m in self._images():
            names.append(SEP.join(m.path))
            offsets.append(-1 if m.offset is None else m.offset)
            sizes.append(m.size)
        # a plain tar's images are all at known offsets: no streaming needed
        return Listing(self.path + SEP, names, _tar_labels(names), offsets, sizes)

    def stream(self, wanted: Iterator[int]) -> Iterator[tuple[int, bytes]]:
        """(ordinal, bytes) of the wanted images (ascending ordinals among image members)."""
        nxt = next(wanted, None)
        if nxt is None:
            return
        for i, m in enumerate(self._images()):
            if i != nxt:
                continue  # not ours (other --part, already done, or read by offset): stream past it
            try:
                data = m.read()
            except tarstream.TarStreamError as err:
                raise SourceError(f"{self.path}: {err}; re-download or re-create it") from None
            yield i, data
            nxt = next(wanted, None)
            if nxt is None:
                return


class LmdbSource:
    """An LMDB database of encoded images, key -> image bytes (LSUN style). Unlabelled."""

    kind = "lmdb"

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def open_env(self):
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

    def list(self) -> Listing:
        env = self.open_env()
        try:
            with env.begin() as txn:
                keys = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
        finally:
            env.close()
        return Listing(self.path + SEP, [self._key_text(k) for k in keys], [None] * len(keys), keys=keys)


class Reader:
    """Worker side: the bytes of an image from its locator (path, (offset, size) or key).
    Opened lazily and kept open for the life of a worker process."""

    def __init__(self, kind: str, path: str):
        self.kind, self.path = kind, path
        self._fd = self._env = self._txn = None

    def read(self, locator) -> bytes:
        if self.kind == "tar":
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            off, size = locator
            data = os.pread(self._fd, size, off)
            if len(data) < size:
                raise OSError(f"{self.path} ends inside this member (truncated archive)")
            return data
        if self.kind == "lmdb":
            if self._env is None:
                self._env = LmdbSource(self.path).open_env()
                self._txn = self._env.begin(buffers=False)
            return self._txn.get(locator) or b""
        with open(locator, "rb") as f:
            return f.read()

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
        if self._env is not None:
            self._txn.abort()
            self._env.close()
        self._fd = self._env = self._txn = None


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


def list_source(path: str) -> Listing:
    """Picklable entry point: list one source in a worker process."""
    return open_source(path).list()

"""Labels from a file (`--labels`) and a fixed class order (`--classes`).

ImageNet's validation images ship flat, their classes in a separate list; train and val must
give every class the same id. So:
- `--labels FILE`: CSV/TSV rows `name,label` (a header row is allowed; Kaggle's
  `LOC_val_solution.csv`, `ImageId,PredictionString`, is read by the first word of its second
  column). An image is matched by its file name, else by its stem (the name without an image
  extension), whatever its source; the file's labels replace those from folders or archives.
- `--classes FILE`: one class per line (`wnids.txt`; anything after a tab is ignored, so
  `words.txt` works too, and a line starting with a WordNet id and a space, as in Kaggle's
  `LOC_synset_mapping.txt`, gives the id), or the `manifest.json` of another build (val takes
  train's classes). Ids follow this order; every label must be in it."""

from __future__ import annotations

import csv
import json
import os
import posixpath
import re

from .sources import IMAGE_EXTS, SEP, Listing, intern_labels

HEADER_NAMES = ("name", "filename", "file", "image", "imageid", "image_id", "path")
_AMBIGUOUS = object()
_WNID_LINE = re.compile(r"(n\d{8}) ")


class LabelError(ValueError):
    """A labels or classes file that cannot be used; the message names the file and the fix."""


def stem(name: str) -> str:
    root, ext = posixpath.splitext(name)
    return root if ext.lower() in IMAGE_EXTS else name


def _base(name: str) -> str:
    return posixpath.basename(name.rsplit(SEP, 1)[-1].replace("\\", "/"))


class LabelTable:
    """name or stem -> label, read from a `--labels` file."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.by_stem: dict = {}     # stem -> label, or _AMBIGUOUS when two names share it
        self.by_name: dict = {}     # only for stems shared by names with different labels
        try:
            self._read()
        except (UnicodeDecodeError, csv.Error) as err:
            raise LabelError(f"{self.path}: not a UTF-8 CSV/TSV ({err}); save it as UTF-8 text with rows name,label") from None

    def _rows(self):
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            first = f.readline()
            f.seek(0)
            delim = "\t" if self.path.lower().endswith(".tsv") or "\t" in first else ","
            yield from enumerate(csv.reader(f, delimiter=delim), 1)

    def _read(self):
        first_word, seen = False, {}
        for lineno, row in self._rows():
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if lineno == 1 and row[0].strip().lower() in HEADER_NAMES:
                first_word = len(row) > 1 and row[1].strip().lower() == "predictionstring"
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise LabelError(f"{self.path}:{lineno}: expected `name,label` (e.g. ILSVRC2012_val_00000001.JPEG,"
                                 f"n01751748), got {row!r}; fix or delete this row")
            name, label = _base(row[0].strip()), row[1].strip()
            if first_word:
                label = label.split()[0]
            if seen.get(name, label) != label:
                raise LabelError(f"{self.path}:{lineno}: {name} is labelled {label!r} here and {seen[name]!r} "
                                 "above; keep one row per image")
            seen[name] = label
            s = stem(name)
            prev = self.by_stem.get(s)
            if prev is None:
                self.by_stem[s] = label
            elif prev is not _AMBIGUOUS and prev != label:
                self.by_stem[s] = _AMBIGUOUS
        if not seen:
            raise LabelError(f"{self.path}: no `name,label` rows; pass a CSV/TSV with one row per image")
        for name, label in seen.items():  # names behind an ambiguous stem must match in full
            if self.by_stem.get(stem(name)) is _AMBIGUOUS:
                self.by_name[name] = label

    def lookup(self, name: str) -> str | None:
        base = _base(name)
        label = self.by_stem.get(stem(base))
        if label is _AMBIGUOUS:
            return self.by_name.get(base)
        return label

    def apply(self, listing: Listing) -> None:
        """Replace the listing's labels by the file's; every image must have one."""
        labels, missing, first = [], 0, None
        for i, n in enumerate(listing.names):
            lab = self.lookup(n)
            if lab is None:
                missing += 1
                first = first or listing.ref(i)
            labels.append(lab)
        if missing:
            more = f" (and {missing - 1} more)" if missing > 1 else ""
            raise LabelError(f"{self.path}: no label for {first}{more}, by file name or stem; add a "
                             f"`{stem(_base(first))},<label>` row or build that source without --labels")
        listing.labels = intern_labels(labels)


def _manifest_classes(path: str) -> list[str] | None:
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(m, dict) or m.get("format") != "spotart-shards":
        raise LabelError(f"{path}: JSON but not a spotart manifest; pass one class per line or a shards' manifest.json")
    return list(m["classes"])


def read_classes(path: str) -> list[str]:
    path = os.path.abspath(path)
    try:
        return _read_classes(path)
    except UnicodeDecodeError as err:
        raise LabelError(f"{path}: not UTF-8 text ({err}); save it with one class name per line") from None


def _read_classes(path: str) -> list[str]:
    if path.endswith(".json"):
        classes = _manifest_classes(path)
        if classes is not None:
            if not classes:
                raise LabelError(f"{path}: the manifest lists no classes (an unlabelled build); pass another --classes")
            return classes
    classes, where = [], {}
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            name = line.split("\t", 1)[0].strip()
            m = _WNID_LINE.match(name)
            name = m.group(1) if m else name
            if not name or name.startswith("#"):
                continue
            if name in where:
                raise LabelError(f"{path}:{lineno}: class {name!r} is listed twice (also line {where[name]}); "
                                 "keep one line per class")
            where[name] = lineno
            classes.append(name)
    if not classes:
        raise LabelError(f"{path}: no class names; pass a file with one class per line (e.g. wnids.txt)")
    return classes


def class_list(listings: list[Listing], classes: list[str] | None, classes_file: str = "--classes") -> list[str]:
    """The id order: the given classes (from --classes), or the sorted labels found."""
    found = set()
    for lst in listings:
        found.update(lab for lab in set(lst.labels) if lab is not None)
    if classes is None:
        return sorted(found)
    unknown = found - set(classes)
    if unknown:
        lab = min(unknown)
        lst = next(x for x in listings if lab in set(x.labels))
        ref = lst.ref(lst.labels.index(lab))
        more = f" (and {len(unknown) - 1} more labels)" if len(unknown) > 1 else ""
        raise LabelError(f"{classes_file}: has no class {lab!r} (label of {ref}){more}; "
                         "add it to the classes file or fix the label")
    return classes

"""Samples no decoder can read, found while training and left out without stopping the run.

DALI decodes a batch at a time; one undecodable JPEG fails the batch and leaves the pipeline
unusable (and DALI's decoder may crash on it: the pipeline parses every header first, see
build.guard, so that the failure comes from the parser, cleanly). The loader (loader.py) keeps
the DALI checkpoint of the last batch it handed out and, when a batch fails:
1. takes the sample the error names (DALI's decoders say "Failed to decode sample #i : origin"),
   or, when it names none, rebuilds the pipeline from that checkpoint in probe mode (every image
   replaced by a placeholder, nothing decoded), reads the batch again to learn the samples it
   held, and decodes each alone in full (`undecodable`; a random crop could miss a truncated
   image's missing rows): the ones that fail are the bad ones. If none is, the error was not
   the data's and is raised as it was;
2. leaves them out (`Exclusions`: copies of their shards' index files without their jpg) and
   rebuilds the pipeline from the same checkpoint. The batch comes again, short of the bad
   samples; every other sample, crop and mask is what it would have been.
The exclusions are part of the loader's saved position, so a resumed run leaves out the same
samples. Nothing here runs while the data is good.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass

import numpy as np

from ..shards.tario import index_components


@dataclass(frozen=True)
class BadSample:
    shard: str   # tar file, relative to the shard directory (as in the manifest)
    key: str     # the sample's key inside it
    error: str   # what the decoder said

    def to_dict(self) -> dict:
        return {"shard": self.shard, "key": self.key, "error": self.error}


def named_in(err: BaseException) -> list[tuple[str, int, str]]:
    """The samples a DALI error message names by origin ("...: /path/shard.tar:OFFSET:KEY.jpg")."""
    import re

    return [(p, int(o), k.rsplit(".", 1)[0]) for p, o, k in re.findall(r"(\S+\.tar):(\d+):(\S+\.\w+)", str(err))]


def parse_origin(raw: bytes) -> tuple[str, int, str] | None:
    """DALI's source_info of a webdataset sample, "PATH.tar:OFFSET:KEY.jpg" -> (path, offset, key)."""
    text = bytes(raw).rstrip(b"\0").decode("utf-8", "surrogateescape")
    path, sep, rest = text.rpartition(".tar:")
    if not sep:
        return None
    offset, _, member = rest.partition(":")
    key = member.rsplit(".", 1)[0]
    return path + ".tar", int(offset), key


def read_index(path: str) -> list[str]:
    with open(path) as f:
        return f.read().splitlines()


def jpg_entry(line: str) -> tuple[int, int, str] | None:
    """(offset, size, member) of the jpg component on one index line (shards.tario's parser)."""
    return index_components(line).get("jpg")


def jpg_members(shards: str) -> list[tuple[str, int, int, str]]:
    """(shard file, offset, size, key) of every sample's JPEG in a shard set, read through its
    manifest and index files (what fault injection and its tests damage)."""
    import json

    with open(os.path.join(shards, "manifest.json")) as f:
        entries = json.load(f)["shards"]
    out = []
    for e in entries:
        for line in read_index(os.path.join(shards, e["index"]))[1:]:
            if (entry := jpg_entry(line)) is not None:
                out.append((e["path"], entry[0], entry[1], entry[2].rsplit(".", 1)[0]))
    return out


def without_jpg(line: str) -> str:
    parts = line.split()
    keep = [parts[i:i + 4] for i in range(0, len(parts) - 3, 4) if parts[i] != "jpg"]
    return " ".join(" ".join(c) for c in keep)


class Exclusions:
    """The samples left out, and the index files that leave them out: the shards' own where a
    shard has none, private copies (in a temporary directory of this process) where it has."""

    def __init__(self, shards_dir: str, tars: list[str], idxs: list[str]):
        self.dir, self.tars, self.idxs = shards_dir, tars, idxs
        self.samples: dict[tuple[str, str], BadSample] = {}
        self._tmp = None

    def __len__(self):
        return len(self.samples)

    def add(self, bad: list[BadSample]) -> list[BadSample]:
        new = [b for b in bad if (b.shard, b.key) not in self.samples]
        self.samples.update({(b.shard, b.key): b for b in new})
        return new

    def index_paths(self) -> list[str] | None:
        """The index files the reader should use; None: the shards' own (nothing left out)."""
        if not self.samples:
            return None
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="spotart-excluded-")
            weakref.finalize(self, shutil.rmtree, self._tmp, True)
        out = []
        for k, (tar, idx) in enumerate(zip(self.tars, self.idxs, strict=True)):
            rel = os.path.relpath(tar, self.dir)
            keys = {key for shard, key in self.samples if shard == rel}
            if not keys:
                out.append(idx)
                continue
            lines = read_index(idx)
            for i, line in enumerate(lines[1:], start=1):
                entry = jpg_entry(line)
                if entry and entry[2].rsplit(".", 1)[0] in keys:
                    lines[i] = without_jpg(line)
            path = os.path.join(self._tmp, f"{k:06d}.idx")
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
            out.append(path)
        return out

    def state(self) -> list[dict]:
        return [b.to_dict() for b in self.samples.values()]

    def load(self, state: list[dict]):
        self.samples = {}
        self.add([BadSample(**d) for d in state or ()])


def read_jpg(path: str, offset: int, idx_path: str, key: str) -> np.ndarray:
    """The encoded image of `key`, as the reader reads it (offset from DALI, size from the index)."""
    size = None
    for line in read_index(idx_path)[1:]:
        entry = jpg_entry(line)
        if entry and entry[0] == offset:
            size = entry[1]
            break
    if size is None:
        raise ValueError(f"{idx_path}: no jpg of {key} at offset {offset}")
    with open(path, "rb") as f:
        f.seek(offset)
        return np.frombuffer(f.read(size), np.uint8)


def decoder_message(err: BaseException) -> str:
    """The operator's own words from a DALI pipeline error (after "encountered:"), on one line,
    without the origin it may name."""
    import re

    text = str(err)
    _, sep, rest = text.partition("encountered:")
    body = re.sub(r"\s*:?\s*\S+\.tar:\d+:\S+", "", rest if sep else text).replace(" sample #", " #")
    body = re.sub(r" #\d+", "", body)
    lines = [ln.strip() for ln in body.splitlines() if ln.strip() and "pipeline object is no longer valid" not in ln]
    return " ".join(lines)[:300] or type(err).__name__


def undecodable(cfg, blobs: list[np.ndarray]) -> dict[int, str]:
    """{i: error} for the encoded images in `blobs` the run's decoder (its device) cannot turn
    into an image, each decoded alone and in full. The probe pipeline is rebuilt after each failure."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    from .build import device_id

    one = cfg.replace(batch_size=1)
    dev = "mixed" if cfg.device == "gpu" else "cpu"

    @pipeline_def(batch_size=1, num_threads=1, device_id=device_id(one), prefetch_queue_depth=1,
                  exec_async=False, exec_pipelined=False, seed=cfg.seed)
    def probe():  # the header parsed first, as in the pipeline's guard, then the whole image decoded
        jpg = fn.external_source(name="jpg", dtype=types.UINT8)
        size = jpg.shape(dtype=types.INT64) + 0 * fn.peek_image_shape(jpg, dtype=types.INT64)[0]
        return fn.decoders.image(fn.reshape(jpg, shape=size), device=dev, output_type=types.RGB)

    bad, pipe = {}, None
    for i, blob in enumerate(blobs):
        if pipe is None:
            pipe = probe()
            pipe.build()
        try:
            pipe.feed_input("jpg", [blob])
            pipe.run()
        except RuntimeError as err:
            bad[i] = decoder_message(err)
            pipe = None
    return bad

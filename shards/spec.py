"""`ShardSpec`: the options of one shard build, validated on construction.

The fields that change the bytes of the output make up its fingerprint; a build refuses to
resume into a directory whose fingerprint differs (mixing two option sets would silently give
shards that are neither)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass

# PIL's own default limit (~89.5 Mpx, a 0.25 GiB RGB buffer): a larger image is treated as a
# decompression bomb and skipped. Raise it for gigapixel satellite tiles on purpose only.
DEFAULT_MAX_PIXELS = 89_478_485


def parse_part(text: str | None) -> tuple[int, int]:
    """"I/N" -> (I, N) with 0 <= I < N; None -> (0, 1)."""
    if text is None:
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"--part must look like I/N (e.g. 0/8), got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--part {text}: need 0 <= I < N")
    return i, n


@dataclass(frozen=True)
class ShardSpec:
    prefix: str = "shard"
    max_count: int = 10_000          # samples per shard before rolling over
    max_size: int = 1 << 30          # bytes per shard before rolling over (1 GiB)
    seed: int = 0                    # shuffles samples across shards
    resize: int | None = None        # shorter side to at most this many px (downscale only)
    quality: int = 95                # JPEG quality for re-encoded images
    keep_duplicates: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_skip_fraction: float = 0.1   # more skipped than this -> non-zero exit
    part_index: int = 0
    part_count: int = 1
    workers: int = 1
    labels: str | None = None        # CSV/TSV `name,label`: labels by file name or stem, for any source
    classes: str | None = None       # one class per line: fixes the id order (train and val agree)

    # fields that do not change the output bytes: excluded from the fingerprint
    _RUNTIME = ("max_skip_fraction", "workers")

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]*", self.prefix):
            raise ValueError(f"prefix {self.prefix!r}: use letters, digits, '_' and '-' only (no dots or slashes)")
        if self.max_count < 1:
            raise ValueError(f"max_count must be >= 1, got {self.max_count}")
        if self.max_size < 1024:
            raise ValueError(f"max_size must be >= 1024 bytes, got {self.max_size}")
        if self.resize is not None and self.resize < 8:
            raise ValueError(f"resize must be >= 8 px, got {self.resize}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")
        if self.max_pixels < 64:
            raise ValueError(f"max_pixels must be >= 64, got {self.max_pixels}")
        if not 0.0 <= self.max_skip_fraction <= 1.0:
            raise ValueError(f"max_skip_fraction must be in [0, 1], got {self.max_skip_fraction}")
        if self.part_count < 1 or not 0 <= self.part_index < self.part_count:
            raise ValueError(f"part {self.part_index}/{self.part_count}: need 0 <= I < N")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        for name in ("labels", "classes"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v):
                raise ValueError(f"{name} must be a file path or None, got {v!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def output_options(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in self._RUNTIME}

    def shard_name(self, k: int) -> str:
        if self.part_count > 1:
            return f"{self.prefix}-part{self.part_index:03d}-{k:06d}"
        return f"{self.prefix}-{k:06d}"


def fingerprint(spec: ShardSpec, sources: list[str]) -> str:
    opts = spec.output_options()
    for name in ("labels", "classes"):
        # by content: an edited labels file gives other shards. Absent keys when unused, so
        # builds made before these options existed keep their fingerprint.
        path = opts.pop(name)
        if path is not None:
            with open(path, "rb") as f:
                opts[name] = [path, hashlib.sha256(f.read()).hexdigest()]
    blob = json.dumps({"options": opts, "sources": sources}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()

"""Samples the loader left out (pipeline/badsamples.py): RUN/skipped.jsonl, the shard set's
pre-flight check, and the clean stop past `max_bad_samples`.

skipped.jsonl holds one line per sample left out, as it was found: the step that would have
used it, the epoch, the rank, the shard, the key and the decoder's words. Every rank appends its
own (one write of one short line, O_APPEND). On resume the lines past the resumed step go, as in
metrics.jsonl: the run finds those samples again."""

from __future__ import annotations

import collections
import json
import logging
import os

from ..shards.verify import load_manifest, preflight_shard, verify_shard

log = logging.getLogger(__name__)


class SkippedLog:
    def __init__(self, path: str, rank: int):
        self.path, self.rank, self.step, self.epoch = path, rank, 0, 0

    def truncate(self, step: int):
        """Drop the lines past `step` (rank 0, before the loop)."""
        if os.path.exists(self.path):
            keep = [r for r in read_lines(self.path) if r["step"] <= step]
            with open(self.path + ".tmp", "w") as f:
                f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in keep)
            os.replace(self.path + ".tmp", self.path)

    def add(self, samples):
        """The loader's `on_bad`: samples found while fetching the batch of step `self.step`. A
        full disk costs the line, not the run (the loader's saved position keeps the samples)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                for s in samples:
                    line = {"step": self.step, "epoch": self.epoch, "rank": self.rank, **s.to_dict()}
                    os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode())
            finally:
                os.close(fd)
        except OSError as err:
            log.error("%s: %d sample(s) left out but not recorded here (%s)", self.path, len(samples), err)


def read_lines(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def too_many(total: int, limit: int, path: str, shards: str, run_dir: str, step: int) -> str | None:
    """The message that ends a run with more than `limit` samples left out (None: go on)."""
    if total <= limit:
        return None
    per_shard = collections.Counter(r["shard"] for r in read_lines(path))
    where = ", ".join(f"{s} ({n})" for s, n in per_shard.most_common(8))
    return (f"{total} samples could not be decoded, more than --max-bad-samples {limit}: {where} (see {path}). "
            f"Stopped with a checkpoint at step {step}. Fix the shards with `spotart verify-shards {shards} --repair`, "
            f"then continue with `spotart train {run_dir} --resume`; or allow more with "
            f"`spotart train {run_dir} --resume --max-bad-samples N`.")


class ShardSetError(ValueError):
    pass


def preflight(shards: str, full: bool = False) -> None:
    """Before training: every shard of the manifest is there with its size, and its index file
    lists its samples (cheap: sizes and the index header and last line). `full`: the sha256 of
    every shard and its index recomputed from the tar (reads everything; images not decoded)."""
    m = load_manifest(shards)
    problems = []
    for entry in m["shards"]:
        if full:
            rep = verify_shard(shards, entry, len(m["classes"]), decode=False)
            problems += [f"{rep.path}: {p}" for p in rep.problems]
        else:
            problems += preflight_shard(shards, entry)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ShardSetError(f"{shards} does not match its manifest: " + "; ".join(problems[:5]) + more
                            + f". Run `spotart verify-shards {shards}` to see every problem and "
                            f"`spotart verify-shards {shards} --repair` to fix what can be fixed, or rebuild the "
                            "shards.")

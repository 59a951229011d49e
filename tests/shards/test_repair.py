"""`verify-shards --repair` heals a damaged shard set; a full disk during build-shards loses
nothing and the build resumes once there is space."""

import errno
import hashlib
import json
import os
import shutil

import pytest
from click.testing import CliRunner

from spotart.shards import catalog as cat
from spotart.shards.verify import repair_shards, verify_shards
from spotart.tools.cli import main


def manifest(d):
    with open(os.path.join(d, "manifest.json")) as f:
        return json.load(f)


@pytest.fixture
def copy(sample_shards, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(sample_shards, d)
    return str(d)


def test_repair_drops_exactly_the_undecodable_samples(copy, damage, sample_shards):
    damaged = damage(copy, 3, seed=1)
    reports = list(verify_shards(copy))
    assert {r.path for r in reports if not r.ok} == {s for s, _ in damaged}
    fixed = repair_shards(copy, reports)
    dropped = sorted((r.path, k) for r in fixed for k, _ in r.dropped)
    assert dropped == sorted(damaged) and all(r.error is None for r in fixed)
    assert all(r.ok for r in verify_shards(copy))  # sha256, counts, index, every image
    m, before = manifest(copy), manifest(sample_shards)
    assert m["num_samples"] == before["num_samples"] - 3 == sum(s["count"] for s in m["shards"])
    assert m["num_labelled"] == before["num_labelled"] - 3 and m["repaired"] == 3
    c = cat.Catalog(os.path.join(copy, "catalog.lmdb"), readonly=True)
    try:
        keys = dict(c.iter_samples())
        assert all(c.sample(k) is None for _, k in damaged) and len(keys) == m["num_samples"]
        for e in m["shards"]:  # the kept samples' offsets follow their shard
            with open(os.path.join(copy, e["index"])) as f:
                for line in f.read().splitlines()[1:]:
                    p = line.split()
                    j = p.index("jpg")
                    assert keys[p[j + 3][:-4]]["offset"] == int(p[j + 1]) and keys[p[j + 3][:-4]]["shard"] == e["path"]
            assert c.shard_record(e["path"][:-4])["count"] == e["count"]
    finally:
        c.close()


def test_a_damaged_tar_header_costs_its_sample_only(copy):
    m = manifest(copy)
    e = m["shards"][0]
    with open(os.path.join(copy, e["index"])) as f:
        line = f.read().splitlines()[5]
    p = line.split()
    key, jpg_off = p[3][:-4], int(p[p.index("jpg") + 1])
    with open(os.path.join(copy, e["path"]), "r+b") as f:
        f.seek(jpg_off - 512)
        f.write(b"\xff" * 512)  # the jpg member's header
    reports = list(verify_shards(copy))
    assert not reports[0].ok
    (fixed,) = repair_shards(copy, reports)
    assert fixed.dropped == [(key, "its tar header is damaged")] and fixed.kept == e["count"] - 1
    assert all(r.ok for r in verify_shards(copy))


def test_the_cli_reports_what_was_dropped(copy, damage):
    damaged = damage(copy, 2, seed=3)
    r = CliRunner().invoke(main, ["verify-shards", copy])
    assert r.exit_code == 1
    r = CliRunner().invoke(main, ["verify-shards", copy, "--repair"])
    assert r.exit_code == 0, r.output
    assert "2 samples dropped" in r.output and all(k in r.output for _, k in damaged)
    assert "<_io." not in r.output
    assert CliRunner().invoke(main, ["verify-shards", copy]).exit_code == 0
    r = CliRunner().invoke(main, ["verify-shards", copy, "--repair", "--no-decode"])
    assert r.exit_code == 2 and "--no-decode" in r.output


def digests(d):
    return {n: hashlib.sha256(open(os.path.join(d, n), "rb").read()).hexdigest()
            for n in sorted(os.listdir(d)) if n.endswith((".tar", ".idx", ".json", ".jsonl"))}


def test_a_full_disk_during_build_shards_loses_nothing_and_the_build_resumes(sample_dir, sample_shards, tmp_path,
                                                                             monkeypatch):
    from spotart.shards import tario

    out = str(tmp_path / "out")
    real, calls = tario.ShardWriter.add_sample, [0]

    def add_sample(self, key, blob, layout):
        calls[0] += 1
        if calls[0] == 60:  # inside the second shard (40 a shard)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, key, blob, layout)

    monkeypatch.setattr(tario.ShardWriter, "add_sample", add_sample)
    # -j 1: the one process writes the shards, so the patched writer is the one that runs
    r = CliRunner().invoke(main, ["build-shards", sample_dir, "--out", out, "--max-count", "40", "--no-progress",
                                  "-j", "1"])
    assert r.exit_code == 1 and "no space left on the device" in r.output and "resumes where it stopped" in r.output
    assert "Traceback" not in r.output
    assert os.path.isfile(os.path.join(out, "shard-000000.tar"))  # the finished shard stays
    monkeypatch.undo()
    r = CliRunner().invoke(main, ["build-shards", sample_dir, "--out", out, "--max-count", "40", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert digests(out) == digests(sample_shards)  # as if it had run straight through


def test_an_lmdb_error_on_a_full_disk_is_one_line(sample_dir, tmp_path, monkeypatch):
    """On a full tmpfs LMDB's commit fails with EIO (lmdb.Error), not ENOSPC."""
    import collections

    import lmdb

    import spotart.tools.commands.shards as cmd

    def put_staged(self, records, *rest):
        raise lmdb.Error("mdb_txn_commit: Input/output error")

    monkeypatch.setattr(cat.Catalog, "put_staged", put_staged)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(cmd.shutil, "disk_usage", lambda d: usage(96 << 20, 95 << 20, 1 << 20))
    r = CliRunner().invoke(main, ["build-shards", sample_dir, "--out", str(tmp_path / "o"), "--no-progress"])
    assert r.exit_code == 1 and "no space left" in r.output and "Input/output error" in r.output
    assert "resumes where it stopped" in r.output and "Traceback" not in r.output

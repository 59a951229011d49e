"""The cluster path: `--part I/N` built by parallel processes, joined by merge-manifests."""

import json
import multiprocessing
import os
import tarfile

from spotart.shards.build import build_shards
from spotart.shards.merge import merge_manifests
from spotart.shards.sources import open_source
from spotart.shards.spec import ShardSpec
from spotart.shards.verify import verify_shards


def _build_part(src, out, i, n):
    build_shards([src], out, ShardSpec(max_count=7, part_index=i, part_count=n, workers=1 + i % 2), progress=False)


def sources_in(d):
    """Every sample's source, read from the merged set's tars through its manifest."""
    m = json.loads(open(os.path.join(d, "manifest.json")).read())
    got = []
    for s in m["shards"]:
        with tarfile.open(os.path.join(d, s["path"])) as tf:
            got += [json.loads(tf.extractfile(x).read())["source"] for x in tf if x.name.endswith(".json")]
    return got, m


def test_four_parts_in_parallel_processes_merge_to_every_input_once(sample_dir, tmp_path):
    ctx = multiprocessing.get_context("spawn")   # like array jobs: independent fresh processes
    procs = [ctx.Process(target=_build_part, args=(sample_dir, str(tmp_path / f"part-{i:03d}"), i, 4)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    merged = merge_manifests([str(tmp_path / f"part-{i:03d}") for i in range(4)], str(tmp_path))
    got, m = sources_in(tmp_path)
    lst = open_source(sample_dir).list()
    listed = [lst.ref(i) for i in range(len(lst))]
    assert sorted(got) == sorted(listed) and len(set(got)) == len(got) == 96
    assert merged["num_samples"] == m["num_samples"] == 96 and m["listed"] == 96
    assert all(s["path"].startswith("part-") for s in m["shards"])
    assert all(r.ok for r in verify_shards(str(tmp_path)))

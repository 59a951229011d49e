"""The shard builder end to end: sources, labels, determinism, resume after SIGKILL, parts."""

import hashlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tarfile

import lmdb
import numpy as np
import pytest
from PIL import Image

from spotart.shards import catalog as cat
from spotart.shards import tario
from spotart.shards.build import BuildError, build_shards
from spotart.shards.merge import merge_manifests
from spotart.shards.spec import ShardSpec
from spotart.shards.verify import verify_shards


def manifest(d):
    with open(os.path.join(d, "manifest.json")) as f:
        return json.load(f)


def samples(d):
    """{source: (class name or None, jpg sha256)} read back from the tars themselves."""
    out = {}
    m = manifest(d)
    for s in m["shards"]:
        with tarfile.open(os.path.join(d, s["path"])) as tf:
            members = {mm.name: tf.extractfile(mm).read() for mm in tf}
        for name, data in members.items():
            if name.endswith(".json"):
                key = name[:-5]
                meta = json.loads(data)
                cls = members.get(key + ".cls")
                label = m["classes"][int(cls)] if cls is not None else None
                assert label == meta.get("label")
                out[meta["source"]] = (label, hashlib.sha256(members[key + ".jpg"]).hexdigest())
    return out


def file_digests(d):
    return {n: hashlib.sha256(open(os.path.join(d, n), "rb").read()).hexdigest()
            for n in sorted(os.listdir(d)) if n.endswith((".tar", ".idx"))}


def test_folder_labels_manifest_index_and_verify(sample_dir, sample_shards):
    m = manifest(sample_shards)
    assert m["num_samples"] == 96 and m["num_labelled"] == 96 and m["skipped"] == 0
    assert m["classes"] == sorted(os.listdir(sample_dir))
    assert [s["count"] for s in m["shards"]] == [40, 40, 16]
    got = samples(sample_shards)
    for src, (label, _) in got.items():
        assert os.path.basename(os.path.dirname(src)) == label
    # shuffled across shards: the first shard holds many classes
    with tarfile.open(os.path.join(sample_shards, m["shards"][0]["path"])) as tf:
        classes = {tf.extractfile(x).read() for x in tf if x.name.endswith(".cls")}
    assert len(classes) >= 5
    for s in m["shards"]:
        # our index is exactly what the reference tool computes from the tar
        with open(os.path.join(sample_shards, s["index"])) as f:
            assert f.read() == tario.index_of_tar(os.path.join(sample_shards, s["path"]))
    assert all(r.ok for r in verify_shards(sample_shards))


def test_index_matches_dalis_wds2idx(sample_shards, tmp_path):
    wds2idx = shutil.which("wds2idx") or os.path.join(os.path.dirname(sys.executable), "wds2idx")
    if not os.path.exists(wds2idx):
        pytest.skip("DALI's wds2idx not installed")
    m = manifest(sample_shards)
    s = m["shards"][0]
    subprocess.run([wds2idx, os.path.join(sample_shards, s["path"]), str(tmp_path / "ref.idx")], check=True, capture_output=True)
    assert (tmp_path / "ref.idx").read_text() == open(os.path.join(sample_shards, s["index"])).read()


def test_two_builds_are_byte_identical(sample_dir, tmp_path):
    for d in ("a", "b"):
        build_shards([sample_dir], str(tmp_path / d), ShardSpec(max_count=30, seed=5), progress=False)
    assert file_digests(tmp_path / "a") == file_digests(tmp_path / "b")
    build_shards([sample_dir], str(tmp_path / "c"), ShardSpec(max_count=30, seed=6), progress=False)
    assert file_digests(tmp_path / "a") != file_digests(tmp_path / "c")


def test_workers_give_the_same_shards(sample_dir, tmp_path):
    build_shards([sample_dir], str(tmp_path / "a"), ShardSpec(max_count=50), progress=False)
    build_shards([sample_dir], str(tmp_path / "b"), ShardSpec(max_count=50, workers=2), progress=False)
    assert file_digests(tmp_path / "a") == file_digests(tmp_path / "b")


def test_max_size_rolls_over(sample_dir, tmp_path):
    build_shards([sample_dir], str(tmp_path), ShardSpec(max_size=64 * 1024), progress=False)
    m = manifest(tmp_path)
    assert len(m["shards"]) > 1 and sum(s["count"] for s in m["shards"]) == 96
    assert all(s["bytes"] <= 64 * 1024 + 10240 for s in m["shards"])


def write_img(path, seed, size=(24, 20), fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(a).save(path, fmt)


def test_every_source_kind_mixed_in_one_call(tmp_path):
    src = tmp_path / "src"
    # flat folder (unlabelled), nested labelled folder, file list, tar, tar.gz, LMDB
    for i in range(3):
        write_img(str(src / "flat" / f"f{i}.jpg"), i)
    for c in ("cat", "dog"):
        for i in range(2):
            write_img(str(src / "lab" / c / "deeper" / f"{c}{i}.png"), 10 + i + (c == "dog") * 5)
    for i in range(2):
        write_img(str(src / "listed" / f"l{i}.jpg"), 20 + i)
    (src / "list.csv").write_text("path,label\nlisted/l0.jpg,bird\nlisted/l1.jpg,\n")
    tree = tmp_path / "tree"
    for c in ("fish", "owl"):
        write_img(str(tree / "train" / c / f"{c}.jpg"), 30 + (c == "owl"))
    (tree / "train" / "fish" / "notes.txt").write_text("ignored")
    with tarfile.open(tmp_path / "a.tar", "w") as tf:
        tf.add(tree / "train", arcname="train")
    with tarfile.open(tmp_path / "b.tar.gz", "w:gz") as tf:
        tf.add(tree / "train" / "owl", arcname="val/owl")
        tf.add(tree / "train" / "fish", arcname="val/fish")
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(2):
            b = io.BytesIO()
            Image.fromarray(np.full((8, 8, 3), 40 + i, np.uint8)).save(b, "WEBP")
            txn.put(f"lsun-{i}".encode(), b.getvalue())
    env.close()
    srcs = [src / "flat", src / "lab", src / "list.csv", tmp_path / "a.tar", tmp_path / "b.tar.gz", tmp_path / "db"]
    out = tmp_path / "out"
    res = build_shards([str(s) for s in srcs], str(out), ShardSpec(max_count=4), progress=False)
    got = samples(out)
    # a.tar and b.tar.gz hold the same bytes: the second copies are duplicates
    assert res.duplicates == 2 and res.num_samples == 3 + 4 + 2 + 2 + 2
    by_name = {os.path.basename(k.split("::")[-1]): v[0] for k, v in got.items()}
    assert by_name["f0.jpg"] is None and by_name["cat0.png"] == "cat" and by_name["dog1.png"] == "dog"
    assert by_name["l0.jpg"] == "bird" and by_name["l1.jpg"] is None
    assert by_name["fish.jpg"] == "fish" and by_name["owl.jpg"] == "owl"
    assert by_name["lsun-0"] is None and by_name["lsun-1"] is None
    assert manifest(out)["classes"] == ["bird", "cat", "dog", "fish", "owl"]
    assert all(r.ok for r in verify_shards(str(out)))
    # workers read files, LMDB records and plain-tar members themselves, the tar.gz is streamed
    # to them: the same bytes as one process doing everything
    build_shards([str(s) for s in srcs], str(tmp_path / "j3"), ShardSpec(max_count=4, workers=3), progress=False)
    assert file_digests(out) == file_digests(tmp_path / "j3")
    assert (out / "duplicates.jsonl").read_text() == (tmp_path / "j3" / "duplicates.jsonl").read_text()
    # provenance in the catalog
    c = cat.Catalog(str(out / "catalog.lmdb"), readonly=True)
    recs = dict(c.iter_samples())
    c.close()
    assert len(recs) == res.num_samples
    r = next(v for v in recs.values() if v["source"].endswith("cat0.png"))
    with open(out / r["shard"], "rb") as f:
        f.seek(r["offset"])
        assert hashlib.sha256(f.read(r["size"])).hexdigest() == got[r["source"]][1]


def hostile_collection(root):
    """Every kind of bad or odd file a real collection has."""
    good = root / "good"
    rng = np.random.default_rng(0)
    write_img(str(good / "ok.jpg"), 1)
    write_img(str(good / "caf\u00e9 \u65e5\u672c.jpg"), 2)          # unicode name
    write_img(str(good / "full.jpg"), 3, (64, 64))
    data = (good / "full.jpg").read_bytes()
    (good / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (good / "empty.jpg").write_bytes(b"")
    (good / "text.jpg").write_text("hello, I am text\n")
    (good / "random.png").write_bytes(rng.bytes(3000))
    from test_images import bomb_png  # noqa: E402 - same folder
    (good / "bomb.png").write_bytes(bomb_png())
    Image.new("CMYK", (16, 16), (0, 200, 0, 0)).save(good / "cmyk.jpg")
    Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 250).save(good / "deep16.png")
    Image.new("RGBA", (16, 16), (5, 5, 5, 100)).save(good / "alpha.png")
    Image.new("P", (16, 16), 4).save(good / "palette.png")
    frames = [Image.new("P", (12, 12), i) for i in (1, 2)]
    frames[0].save(good / "anim.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif(); exif[0x0112] = 8
    Image.fromarray(rng.integers(0, 255, (10, 30, 3), dtype=np.uint8)).save(good / "rot.jpg", exif=exif)
    (good / ".DS_Store").write_bytes(b"\0\1\2")
    (good / "readme.txt").write_text("not an image by extension")
    return good


def test_hostile_inputs(tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    src = hostile_collection(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(BuildError, match="max-skip-fraction"):
        build_shards([str(src)], str(out), ShardSpec(), progress=False)
    # nothing lost: the re-run with a looser limit resumes and finishes
    res = build_shards([str(src)], str(out), ShardSpec(max_skip_fraction=0.5), progress=False)
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    reasons = {os.path.basename(s["source"]): s["reason"] for s in skipped}
    assert set(reasons) == {"truncated.jpg", "empty.jpg", "text.jpg", "random.png", "bomb.png"}
    assert "bomb" in reasons["bomb.png"] and "empty" in reasons["empty.jpg"]
    assert res.skipped == 5 and res.num_samples == 9
    got = {os.path.basename(k): v for k, v in samples(out).items()}
    assert "caf\u00e9 \u65e5\u672c.jpg" in got and ".DS_Store" not in got and "readme.txt" not in got
    assert all(r.ok for r in verify_shards(str(out)))


def test_duplicates_dropped_and_counted(tmp_path):
    write_img(str(tmp_path / "src" / "a.jpg"), 1)
    shutil.copy(tmp_path / "src" / "a.jpg", tmp_path / "src" / "b.jpg")
    write_img(str(tmp_path / "src" / "c.jpg"), 2)
    res = build_shards([str(tmp_path / "src")], str(tmp_path / "o1"), ShardSpec(), progress=False)
    assert (res.num_samples, res.duplicates) == (2, 1)
    assert "a.jpg" in (tmp_path / "o1" / "duplicates.jsonl").read_text()
    res = build_shards([str(tmp_path / "src")], str(tmp_path / "o2"), ShardSpec(keep_duplicates=True), progress=False)
    assert (res.num_samples, res.duplicates) == (3, 0)


def test_other_options_refused_and_overwrite(sample_dir, tmp_path):
    build_shards([sample_dir], str(tmp_path), ShardSpec(max_count=50), progress=False)
    with pytest.raises(BuildError, match="max_count: 50 -> 20"):
        build_shards([sample_dir], str(tmp_path), ShardSpec(max_count=20), progress=False)
    again = build_shards([sample_dir], str(tmp_path), ShardSpec(max_count=50, workers=2), progress=False)
    assert again.converted == 0 and again.num_samples == 96
    res = build_shards([sample_dir], str(tmp_path), ShardSpec(max_count=20), overwrite=True, progress=False)
    assert res.num_shards == 5 and len([n for n in os.listdir(tmp_path) if n.endswith(".tar")]) == 5


def test_output_inside_source_refused(sample_dir):
    with pytest.raises(BuildError, match="inside"):
        build_shards([sample_dir], os.path.join(sample_dir, "out"), ShardSpec(), progress=False)


def _killed_build(sources, out, spec, where, after):
    """Child process: SIGKILL ourselves at the `after`-th call of `where` (mid-shard / mid-convert)."""
    import spotart.shards.build as b

    calls = {"n": 0}
    if where.startswith("pool"):  # -j 2: the main process dies after a worker's first batch / shard
        orig_run = b._run

        def run(pool, fn_name, inline, tasks, on_result, limit):
            def hook(r):
                calls["n"] += 1
                if calls["n"] == after:
                    os.kill(os.getpid(), signal.SIGKILL)
                on_result(r)
            return orig_run(pool, fn_name, inline, tasks, hook if where == f"pool-{fn_name}" else on_result, limit)

        b._run = run
    elif where == "add":
        orig = tario.ShardWriter.add_sample

        def hook(self, *a, **k):
            calls["n"] += 1
            if calls["n"] == after:
                os.kill(os.getpid(), signal.SIGKILL)
            return orig(self, *a, **k)

        tario.ShardWriter.add_sample = hook
    else:
        orig = cat.Catalog.put_staged

        def hook(self, *a, **k):
            calls["n"] += 1
            r = orig(self, *a, **k)
            if calls["n"] == after:
                os.kill(os.getpid(), signal.SIGKILL)
            return r

        cat.Catalog.put_staged = hook
    b.build_shards(sources, out, spec, progress=False)


@pytest.mark.parametrize("where,after,workers", [("add", 55, 1), ("staged", 1, 1), ("pool-convert", 1, 2),
                                                 ("pool-write_shard", 1, 2)])
def test_resume_after_sigkill_gives_the_clean_build(sample_dir, tmp_path, monkeypatch, where, after, workers):
    import spotart.shards.build as b

    monkeypatch.setattr(b, "WINDOW", 16)
    spec = ShardSpec(max_count=40, workers=workers)
    clean, killed = str(tmp_path / "clean"), str(tmp_path / "killed")
    build_shards([sample_dir], clean, spec, progress=False)
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_killed_build, args=([sample_dir], killed, spec, where, after))
    p.start()
    p.join(60)
    assert p.exitcode == -signal.SIGKILL
    if where == "pool-convert":  # killed mid-convert: some batches staged, not all
        c = cat.Catalog(os.path.join(killed, "catalog.lmdb"), readonly=True)
        assert 0 < c.count(c.staged) < 96
        c.close()
    if where == "pool-write_shard":  # killed mid-write: a shard on disk, the manifest not
        assert any(n.endswith(".tar") for n in os.listdir(killed))
        assert not os.path.exists(os.path.join(killed, "manifest.json"))
    if where == "add":  # killed mid-shard: one finished shard, one half-written temporary file
        assert any(n.endswith(".tar.tmp") for n in os.listdir(killed))
        assert not os.path.exists(os.path.join(killed, "manifest.json"))
    res = build_shards([sample_dir], killed, spec, progress=False)
    assert res.num_samples == 96
    assert file_digests(clean) == file_digests(killed)
    assert not any(n.endswith(".tmp") for n in os.listdir(killed))
    cats = []
    for d in (clean, killed):
        c = cat.Catalog(os.path.join(d, "catalog.lmdb"), readonly=True)
        cats.append(dict(c.iter_samples()))
        c.close()
    assert cats[0] == cats[1]


def test_parts_and_merge_cover_the_input_once(sample_dir, tmp_path):
    full = str(tmp_path / "full")
    build_shards([sample_dir], full, ShardSpec(max_count=25), progress=False)
    parts = []
    for i in range(3):
        d = str(tmp_path / f"p{i}")
        build_shards([sample_dir], d, ShardSpec(max_count=25, part_index=i, part_count=3), progress=False)
        parts.append(d)
        assert all(n.startswith(f"shard-part{i:03d}-") for n in os.listdir(d) if n.endswith(".tar"))
    merged = merge_manifests(parts, str(tmp_path / "all"))
    assert merged["num_samples"] == 96
    whole = samples(full)
    got = {}
    for d in parts:
        got.update(samples(d))
    assert got == whole
    assert all(r.ok for r in verify_shards(str(tmp_path / "all")))
    from spotart.shards.merge import MergeError
    with pytest.raises(MergeError, match="missing"):
        merge_manifests(parts[:2], str(tmp_path / "bad"))

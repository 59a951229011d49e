"""ImageNet as it ships: the train tar of per-class tars, the flat val images with a ground-truth
list, and the README's recipes through the CLI; bad label and class files give one clear line."""

import io
import json
import os
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from spotart.shards.build import BuildError, build_shards
from spotart.shards.spec import ShardSpec
from spotart.shards.verify import verify_shards
from spotart.tools.cli import main

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]


def jpeg(seed, size=(20, 16)) -> bytes:
    a = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    b = io.BytesIO()
    Image.fromarray(a).save(b, "JPEG", quality=90)
    return b.getvalue()


def add(tf, name, data):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))


def ilsvrc_train(path, per_class=5, inner_mode="w", outer_mode="w"):
    """ILSVRC2012_img_train.tar's shape: `<wnid>.tar` members holding `<wnid>_<n>.JPEG`."""
    truth = {}
    with tarfile.open(path, outer_mode) as outer:
        for c, wnid in enumerate(WNIDS):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode=inner_mode) as inner:
                for i in range(per_class):
                    name = f"{wnid}_{1000 + i}.JPEG"
                    add(inner, name, jpeg(100 * c + i))
                    truth[name] = wnid
            ext = ".tar" if inner_mode == "w" else ".tar.gz"
            add(outer, wnid + ext, buf.getvalue())
    return truth


def ilsvrc_val(folder, n=10, classes=WNIDS[:3]):
    """The val images, flat, and their ground truth as `name,label` rows."""
    os.makedirs(folder, exist_ok=True)
    truth = {}
    for i in range(1, n + 1):
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        with open(os.path.join(folder, name), "wb") as f:
            f.write(jpeg(10_000 + i))
        truth[name] = classes[i % len(classes)]
    return truth


def labels_by_name(d):
    """{image file name: class name from the shard's cls id} read back from the tars."""
    m = json.loads(open(os.path.join(d, "manifest.json")).read())
    out = {}
    for s in m["shards"]:
        with tarfile.open(os.path.join(d, s["path"])) as tf:
            members = {mm.name: tf.extractfile(mm).read() for mm in tf}
        for name, data in members.items():
            if name.endswith(".json"):
                meta = json.loads(data)
                cls = members.get(name[:-5] + ".cls")
                base = meta["source"].split("::")[-1].split("/")[-1]
                out[base] = m["classes"][int(cls)] if cls is not None else None
    return out, m


def test_readme_imagenet_recipes(tmp_path):
    """Train from the tar of tars, val from a flat folder + labels, with train's class ids."""
    train_truth = ilsvrc_train(tmp_path / "ILSVRC2012_img_train.tar")
    val_truth = ilsvrc_val(str(tmp_path / "val"))
    rows = ["ImageId,PredictionString"] + [f"{n[:-5]},{lab} 1 2 30 40" for n, lab in val_truth.items()]
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")   # Kaggle's shape: stems
    r = CliRunner()
    res = r.invoke(main, ["build-shards", str(tmp_path / "ILSVRC2012_img_train.tar"), "--out", str(tmp_path / "train"),
                          "-j", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert r.invoke(main, ["verify-shards", str(tmp_path / "train")]).exit_code == 0
    res = r.invoke(main, ["build-shards", str(tmp_path / "val"), "--labels", str(tmp_path / "LOC_val_solution.csv"),
                          "--classes", str(tmp_path / "train" / "manifest.json"), "--out", str(tmp_path / "shards-val"),
                          "--no-progress"])
    assert res.exit_code == 0, res.output
    assert r.invoke(main, ["verify-shards", str(tmp_path / "shards-val")]).exit_code == 0
    got_train, mt = labels_by_name(tmp_path / "train")
    got_val, mv = labels_by_name(tmp_path / "shards-val")
    assert got_train == train_truth and got_val == val_truth
    # ILSVRC2012_img_val.tar itself: a flat tar of the same images, labelled the same way
    with tarfile.open(tmp_path / "ILSVRC2012_img_val.tar", "w") as tf:
        for name in sorted(val_truth):
            tf.add(tmp_path / "val" / name, arcname=name)
    res = r.invoke(main, ["build-shards", str(tmp_path / "ILSVRC2012_img_val.tar"), "--labels",
                          str(tmp_path / "LOC_val_solution.csv"), "--classes", str(tmp_path / "train" / "manifest.json"),
                          "--out", str(tmp_path / "shards-val-tar"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert labels_by_name(tmp_path / "shards-val-tar")[0] == val_truth
    # val lacks a class, yet the ids agree: the class table is train's
    assert mt["classes"] == mv["classes"] == WNIDS and mv["class_ids"] == {w: i for i, w in enumerate(WNIDS)}
    assert set(got_val.values()) != set(WNIDS)


@pytest.mark.parametrize("outer,inner", [("w", "w:gz"), ("w:gz", "w")])
def test_nested_compressed_archives_give_the_same_samples(tmp_path, outer, inner):
    """A tar of tar.gz (inner streamed) and a tar.gz of tars (all streamed) hold the same images
    as the plain tar of tars (read by offset): same labels, same image bytes."""
    ilsvrc_train(tmp_path / "plain.tar")
    ilsvrc_train(tmp_path / "other.tar", inner_mode=inner, outer_mode=outer)
    plain = build_shards([str(tmp_path / "plain.tar")], str(tmp_path / "a"), ShardSpec(), progress=False)
    other = build_shards([str(tmp_path / "other.tar")], str(tmp_path / "b"), ShardSpec(workers=2), progress=False)
    assert plain.num_samples == other.num_samples == 20
    assert labels_by_name(tmp_path / "a")[0] == labels_by_name(tmp_path / "b")[0]
    jpgs = []
    for d in ("a", "b"):
        with open(tmp_path / d / "shard-000000.tar", "rb") as f:
            with tarfile.open(fileobj=f) as tf:
                jpgs.append(sorted(tf.extractfile(m).read() for m in tf if m.name.endswith(".jpg")))
    assert jpgs[0] == jpgs[1]


def test_plain_and_compressed_inner_archives_in_one_tar(tmp_path):
    """Images read by offset and images streamed, from one source: -j 1 and -j 2 agree."""
    with tarfile.open(tmp_path / "mixed.tar", "w") as outer:
        for c, (wnid, mode) in enumerate(zip(WNIDS, ("w", "w:gz", "w", "w:xz"))):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode=mode) as inner:
                for i in range(3):
                    add(inner, f"{wnid}_{i}.JPEG", jpeg(50 * c + i))
            add(outer, wnid + (".tar" if mode == "w" else ".tar." + mode[2:]), buf.getvalue())
    a = build_shards([str(tmp_path / "mixed.tar")], str(tmp_path / "a"), ShardSpec(max_count=5), progress=False)
    build_shards([str(tmp_path / "mixed.tar")], str(tmp_path / "b"), ShardSpec(max_count=5, workers=2), progress=False)
    assert a.num_samples == 12
    assert labels_by_name(tmp_path / "a")[0] == {f"{w}_{i}.JPEG": w for w in WNIDS for i in range(3)}
    for name in sorted(os.listdir(tmp_path / "a")):
        if name.endswith((".tar", ".idx")):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_inner_archives_with_class_folders_keep_their_labels(tmp_path):
    """A tar of part archives, each with class folders: labels come from inside, not the parts."""
    with tarfile.open(tmp_path / "parts.tar", "w") as outer:
        for p in range(2):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as inner:
                for c in ("cat", "dog"):
                    add(inner, f"{c}/{c}{p}.jpg", jpeg(hash((p, c)) % 1000))
            add(outer, f"part{p}.tar", buf.getvalue())
    build_shards([str(tmp_path / "parts.tar")], str(tmp_path / "o"), ShardSpec(), progress=False)
    got, m = labels_by_name(tmp_path / "o")
    assert got == {"cat0.jpg": "cat", "dog0.jpg": "dog", "cat1.jpg": "cat", "dog1.jpg": "dog"}
    assert m["classes"] == ["cat", "dog"]


def test_labels_file_for_tar_and_list_sources_and_classes_order(tmp_path):
    truth = ilsvrc_train(tmp_path / "t.tar", per_class=2)
    rows = [f"{n},{'even' if int(n[-6]) % 2 == 0 else 'odd'}" for n in truth]  # relabel every image
    (tmp_path / "labels.tsv").write_text("\n".join(r.replace(",", "\t") for r in rows) + "\n")
    (tmp_path / "classes.txt").write_text("odd\teven numbers last\neven\n")
    spec = ShardSpec(labels=str(tmp_path / "labels.tsv"), classes=str(tmp_path / "classes.txt"))
    build_shards([str(tmp_path / "t.tar")], str(tmp_path / "o"), spec, progress=False)
    got, m = labels_by_name(tmp_path / "o")
    assert m["classes"] == ["odd", "even"]
    assert got == {r.split(",")[0]: r.split(",")[1] for r in rows}


def test_classes_from_wordnet_mapping_lines(tmp_path):
    ilsvrc_train(tmp_path / "t.tar", per_class=1)
    (tmp_path / "LOC_synset_mapping.txt").write_text("".join(f"{w} some fish, Tinca tinca\n" for w in reversed(WNIDS)))
    build_shards([str(tmp_path / "t.tar")], str(tmp_path / "o"),
                 ShardSpec(classes=str(tmp_path / "LOC_synset_mapping.txt")), progress=False)
    assert labels_by_name(tmp_path / "o")[1]["classes"] == WNIDS[::-1]


@pytest.mark.parametrize("labels,classes,match", [
    ("name,label\nILSVRC2012_val_00000001.JPEG,n01440764\nILSVRC2012_val_00000002.JPEG\n", None,
     r"labels.csv:3: expected `name,label`"),
    ("ILSVRC2012_val_00000001.JPEG,n01440764\n", None,
     r"labels.csv: no label for .*ILSVRC2012_val_00000002.JPEG \(and 8 more\).*add a `ILSVRC2012_val_00000002,<label>` row"),
    ("".join(f"ILSVRC2012_val_{i:08d},n0{i}\n" for i in range(1, 11)), "n01\nn02\nn03\nn04\nn05\nn06\nn07\nn08\nn09\n",
     r"classes.txt: has no class 'n010' \(label of .*ILSVRC2012_val_00000010.JPEG\); add it"),
    ("a.JPEG,x\na.JPEG,y\n", None, r"labels.csv:2: a.JPEG is labelled 'y' here and 'x' above"),
    ("x,y\n", "n01\nn01\n", r"classes.txt:2: class 'n01' is listed twice"),
])
def test_bad_label_and_class_files_one_line_errors(tmp_path, labels, classes, match):
    ilsvrc_val(str(tmp_path / "val"))
    (tmp_path / "labels.csv").write_text(labels)
    cpath = None
    if classes is not None:
        cpath = str(tmp_path / "classes.txt")
        (tmp_path / "classes.txt").write_text(classes)
    with pytest.raises(BuildError, match=match) as err:
        build_shards([str(tmp_path / "val")], str(tmp_path / "o"),
                     ShardSpec(labels=str(tmp_path / "labels.csv"), classes=cpath), progress=False)
    assert "\n" not in str(err.value)
    # through the CLI: one line, exit code 1
    args = ["build-shards", str(tmp_path / "val"), "--out", str(tmp_path / "o2"), "--labels", str(tmp_path / "labels.csv")]
    res = CliRunner().invoke(main, args + (["--classes", cpath] if cpath else []))
    assert res.exit_code == 1 and res.output.startswith("Error: ") and res.output.count("\n") == 1


def test_edited_labels_file_refuses_resume(tmp_path):
    ilsvrc_val(str(tmp_path / "val"), n=3)
    lab = tmp_path / "labels.csv"
    lab.write_text("".join(f"ILSVRC2012_val_{i:08d}.JPEG,a\n" for i in range(1, 4)))
    spec = ShardSpec(labels=str(lab))
    build_shards([str(tmp_path / "val")], str(tmp_path / "o"), spec, progress=False)
    lab.write_text("".join(f"ILSVRC2012_val_{i:08d}.JPEG,b\n" for i in range(1, 4)))
    with pytest.raises(BuildError, match="labels or --classes file changed"):
        build_shards([str(tmp_path / "val")], str(tmp_path / "o"), spec, progress=False)
    res = build_shards([str(tmp_path / "val")], str(tmp_path / "o"), spec, overwrite=True, progress=False)
    assert res.num_samples == 3 and all(r.ok for r in verify_shards(str(tmp_path / "o")))

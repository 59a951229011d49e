"""The fast tar reader and header writer agree with Python's tarfile on every layout."""

import io
import os
import tarfile

import pytest

from spotart.shards import tarstream
from spotart.shards.tario import FIXED_MTIME, ShardWriter, index_of_tar, member_header


def make_tar(path, fmt, mode="w"):
    files = {"a.jpg": b"x" * 700, "d/" + "long" * 40 + ".png": b"y" * 3, "caf\u00e9/\u65e5.jpg": b"z" * 512,
             "p" * 90 + "/" + "q" * 90 + ".jpg": b"w" * 10, "empty.jpg": b""}
    if fmt == tarfile.USTAR_FORMAT:  # ustar holds long paths only as prefix + name, no GNU/pax records
        del files["d/" + "long" * 40 + ".png"], files["caf\u00e9/\u65e5.jpg"]
    with tarfile.open(path, mode, format=fmt) as tf:
        d = tarfile.TarInfo("adir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        link = tarfile.TarInfo("link.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "a.jpg"
        tf.addfile(link)
    return files


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("mode,suffix", [("w", ".tar"), ("w:gz", ".tar.gz"), ("w:bz2", ".tar.bz2"), ("w:xz", ".tar.xz")])
def test_members_match_tarfile(tmp_path, fmt, mode, suffix):
    path = str(tmp_path / ("t" + suffix))
    files = make_tar(path, fmt, mode)
    got = {}
    for i, (name, size, f) in enumerate(tarstream.members(path)):
        if i % 2 == 0:  # read every other member; the reader skips the rest itself
            got[name] = f.read()
        else:
            got[name] = None
    assert set(got) == set(files)
    assert all(v is None or v == files[k] for k, v in got.items())


def test_truncated_and_damaged_archives_raise(tmp_path):
    path = tmp_path / "t.tar"
    make_tar(str(path), tarfile.GNU_FORMAT)
    data = path.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:1100])
    with pytest.raises(tarstream.TarStreamError, match="truncated"):
        for _, _, f in tarstream.members(str(tmp_path / "cut.tar")):
            f.read()
    bad = bytearray(data)
    bad[10] ^= 0x55
    (tmp_path / "bad.tar").write_bytes(bytes(bad))
    with pytest.raises(tarstream.TarStreamError, match="checksum"):
        list(tarstream.members(str(tmp_path / "bad.tar")))


@pytest.mark.parametrize("name,size", [("0000000001.jpg", 1234), ("a.json", 0), ("x" * 99, 10**9), ("y" * 150, 3)])
def test_member_header_is_what_tarfile_writes(name, size):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = size, FIXED_MTIME, 0o444, 0, 0, "", ""
    assert member_header(name, size) == ti.tobuf(format=tarfile.GNU_FORMAT)


def test_shard_writer_index_matches_reading_the_tar(tmp_path):
    w = ShardWriter(str(tmp_path / "s.tar"))
    for k in range(5):
        w.add(f"{k:04d}", {"jpg": os.urandom(100 * k + 1), "cls": b"3", "json": b"{}"})
    w.close()
    assert w.index_text() == index_of_tar(str(tmp_path / "s.tar"))
    with tarfile.open(tmp_path / "s.tar") as tf:
        assert [m.name for m in tf][:3] == ["0000.cls", "0000.jpg", "0000.json"]
    assert os.path.getsize(tmp_path / "s.tar") % 10240 == 0 and not os.path.exists(tmp_path / "s.tar.tmp")


def nested_tar(path, outer_mode="w"):
    """An outer archive holding a plain tar, a tar.gz and a top-level file."""
    def tar_bytes(files, mode):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tf:
            for name, data in files.items():
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        return buf.getvalue()

    inner = {"c/x.jpg": b"x" * 700, "y.jpg": b"y" * 1025}
    outer = {"top.jpg": b"t" * 10, "a/plain.tar": tar_bytes(inner, "w"), "z.tar.gz": tar_bytes(inner, "w:gz")}
    with open(path, "wb") as f:
        f.write(tar_bytes(outer, outer_mode))
    return inner


def test_nested_archives_walked_in_place_with_offsets(tmp_path):
    path = str(tmp_path / "n.tar")
    inner = nested_tar(path)
    got = [(m.path, m.offset, m.read()) for m in tarstream.walk(path)]
    assert [p for p, _, _ in got] == [("top.jpg",), ("a/plain.tar", "c/x.jpg"), ("a/plain.tar", "y.jpg"),
                                       ("z.tar.gz", "c/x.jpg"), ("z.tar.gz", "y.jpg")]
    assert [d for _, _, d in got] == [b"t" * 10] + list(inner.values()) * 2
    raw = open(path, "rb").read()
    for p, off, data in got[:3]:  # uncompressed all the way down: the data is at its offset in the file
        assert raw[off : off + len(data)] == data
    assert [off for _, off, _ in got[3:]] == [None, None]   # under gzip there is no file offset
    # walked without reading anything: same members (skips seek or stream past the data)
    assert [m.path for m in tarstream.walk(path)] == [p for p, _, _ in got]
    assert [m.name for m in tarstream.walk(path, nested=False)] == ["top.jpg", "a/plain.tar", "z.tar.gz"]


def test_nested_under_compression_and_truncation(tmp_path):
    path = str(tmp_path / "n.tar.gz")
    nested_tar(path, "w:gz")
    assert [(m.path, m.offset) for m in tarstream.walk(path)][1] == (("a/plain.tar", "c/x.jpg"), None)
    plain = str(tmp_path / "n.tar")
    nested_tar(plain)
    data = open(plain, "rb").read()
    cut = data.index(b"x" * 700) + 300   # inside the nested tar's first member
    (tmp_path / "cut.tar").write_bytes(data[:cut])
    for read in (True, False):  # reading the member, or seeking past it
        with pytest.raises(tarstream.TarStreamError, match="truncated"):
            for m in tarstream.walk(str(tmp_path / "cut.tar")):
                if read:
                    m.read()

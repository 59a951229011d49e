import json
import os

from click.testing import CliRunner

from spotart.tools.cli import main


def test_make_sample_build_verify_roundtrip(tmp_path):
    r = CliRunner()
    res = r.invoke(main, ["make-sample", str(tmp_path / "img"), "--count", "40", "--classes", "4"])
    assert res.exit_code == 0, res.output
    assert len(os.listdir(tmp_path / "img")) == 4
    res = r.invoke(main, ["build-shards", str(tmp_path / "img"), "--out", str(tmp_path / "s"), "--max-count", "16",
                          "--no-progress", "-j", "2"])
    assert res.exit_code == 0, res.output
    assert "40 samples in 3 shards, 0 skipped, 0 duplicates" in res.output
    res = r.invoke(main, ["verify-shards", str(tmp_path / "s")])
    assert res.exit_code == 0 and "3 of 3 shards ok" in res.output
    # corrupt one byte of a shard: verify names it and fails
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    p = tmp_path / "s" / m["shards"][1]["path"]
    b = bytearray(p.read_bytes())
    b[2000] ^= 0xFF
    p.write_bytes(bytes(b))
    res = r.invoke(main, ["verify-shards", str(tmp_path / "s")])
    assert res.exit_code == 1 and f"{m['shards'][1]['path']}: " in res.output and "sha256" in res.output


def test_bad_options_give_one_line_errors(tmp_path):
    r = CliRunner()
    (tmp_path / "img").mkdir()
    res = r.invoke(main, ["build-shards", str(tmp_path / "img"), "--out", str(tmp_path / "o"), "--part", "3/2"])
    assert res.exit_code != 0 and "--part 3/2" in res.output
    res = r.invoke(main, ["build-shards", str(tmp_path / "img"), "--out", str(tmp_path / "o"), "--prefix", "a.b"])
    assert res.exit_code != 0 and "prefix" in res.output
    res = r.invoke(main, ["verify-shards", str(tmp_path / "img")])
    assert res.exit_code != 0 and "no manifest" in res.output
    (tmp_path / "list.csv").write_text("a.jpg,x,y\n")
    res = r.invoke(main, ["build-shards", str(tmp_path / "list.csv"), "--out", str(tmp_path / "o2")])
    assert res.exit_code != 0 and "list.csv:1" in res.output


def test_part_and_merge_cli(tmp_path):
    r = CliRunner()
    r.invoke(main, ["make-sample", str(tmp_path / "img"), "--count", "20"])
    for i in range(2):
        res = r.invoke(main, ["build-shards", str(tmp_path / "img"), "--out", str(tmp_path / f"p{i}"), "--part", f"{i}/2", "--no-progress"])
        assert res.exit_code == 0, res.output
    res = r.invoke(main, ["merge-manifests", str(tmp_path / "p0"), str(tmp_path / "p1"), "--out", str(tmp_path / "all")])
    assert res.exit_code == 0 and "20 samples" in res.output

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


def test_slurm_array_script_builds_parts_that_merge(tmp_path):
    """tools/slurm/build_shards.sbatch run as 3 array tasks at once (Slurm's environment
    simulated), then merge-manifests: every image once."""
    import subprocess
    import sys

    r = CliRunner()
    r.invoke(main, ["make-sample", str(tmp_path / "img"), "--count", "30"])
    script = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "slurm", "build_shards.sbatch")
    out = tmp_path / "set"
    procs = []
    for i in range(3):
        env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(i), SLURM_ARRAY_TASK_COUNT="3", SLURM_ARRAY_TASK_MIN="0",
                   SLURM_ARRAY_TASK_MAX="2", SLURM_CPUS_PER_TASK="1", SPOTART=f"{sys.executable} -m spotart.tools.cli")
        procs.append(subprocess.Popen(["bash", script, str(out), str(tmp_path / "img"), "--max-count", "4"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert sorted(os.listdir(out)) == ["part-000", "part-001", "part-002"]
    res = r.invoke(main, ["merge-manifests", *[str(out / f"part-{i:03d}") for i in range(3)], "--out", str(out)])
    assert res.exit_code == 0 and "30 samples" in res.output, res.output
    m = json.loads((out / "manifest.json").read_text())
    sources = [s for p in range(3) for s in json.loads((out / f"part-{p:03d}" / "manifest.json").read_text())["sources"]]
    assert m["listed"] == 30 and len(set(sources)) == 1
    res = r.invoke(main, ["verify-shards", str(out)])
    assert res.exit_code == 0, res.output
    # a task re-run alone must be told the number of parts
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="1", SLURM_ARRAY_TASK_MIN="1",
               SLURM_ARRAY_TASK_MAX="1")
    p = subprocess.run(["bash", script, str(out), str(tmp_path / "img")], env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "PARTS=N" in p.stderr

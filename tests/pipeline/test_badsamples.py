"""Undecodable samples in real shards: the loader leaves them out and hands out everything else
exactly as it would have, across epochs and through a saved position."""

import shutil

import pytest
import torch

from spotart.pipeline.badsamples import BadSample, parse_origin
from spotart.pipeline.config import PipelineConfig
from spotart.pipeline.loader import DaliLoader


def cfg(shards, **kw):
    base = dict(shards=shards, task="artifacts", batch_size=8, image_size=32, device="cpu", num_threads=1,
                initial_fill=32, params={"mask_size": 2})
    base.update(kw)
    return PipelineConfig(**base)


@pytest.fixture(params=["zeroed", "tables"])
def broken(sample_shards, tmp_path, damage, request):
    """Two samples damaged: zeroed (no JPEG start marker) or with their tables overwritten; the
    header parser fails their batches and the loader finds them."""
    d = tmp_path / "broken"
    shutil.copytree(sample_shards, d)
    return str(d), damage(str(d), 2, seed=5, kind=request.param)


def without_row(clean: dict, short: dict) -> bool:
    """`short` is `clean` less one row (every output, bitwise)."""
    n = clean["image"].shape[0]
    for i in range(n):
        keep = [j for j in range(n) if j != i]
        if all(torch.equal(clean[k][keep], short[k]) for k in clean):
            return True
    return False


def test_bad_samples_are_left_out_and_everything_else_is_unchanged(sample_shards, broken):
    shards, damaged = broken
    found = []
    clean, dirty = DaliLoader(cfg(sample_shards)), DaliLoader(cfg(shards), on_bad=found.extend)
    for epoch in range(2):
        a, b = list(clean), list(dirty)
        assert len(a) == len(b) == len(clean) == 12
        short = 0
        for x, y in zip(a, b, strict=True):
            if y["image"].shape[0] == x["image"].shape[0]:
                assert all(torch.equal(x[k], y[k]) for k in x)  # images, masks, labels
            else:
                short += 1
                assert without_row(x, y)
        assert short == 2  # each bad sample costs its batch one row, every epoch
    assert sorted((b.shard, b.key) for b in found) == sorted(damaged)
    assert all(isinstance(b, BadSample) and b.error for b in found) and dirty.bad == found


def test_a_saved_position_keeps_its_exclusions_and_resumes_exactly(broken):
    shards, damaged = broken
    first = DaliLoader(cfg(shards))
    it = iter(first)
    seen = [next(it) for _ in range(11)]
    assert sum(b["image"].shape[0] for b in seen) <= 88
    state = first.state_dict()
    ref = list(it) + list(first)
    again = DaliLoader(cfg(shards), state=state)
    got = list(again) + list(again)
    assert len(got) == len(ref) > 0
    assert all(torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
               for x, y in zip(ref, got, strict=True))
    assert {(b.shard, b.key) for b in again.bad} == set(damaged)


def test_an_error_that_is_not_the_datas_is_raised(sample_shards, tmp_path, monkeypatch):
    import spotart.pipeline.loader as loader_mod

    d = tmp_path / "s"
    shutil.copytree(sample_shards, d)
    dl = DaliLoader(cfg(str(d)))
    real = dl._it

    class Failing:  # the pipeline fails although every sample decodes
        def __next__(self):
            raise RuntimeError("Critical error in pipeline: something else")

        def __len__(self):
            return len(real)

    dl._it = Failing()
    monkeypatch.setattr(loader_mod.DaliLoader, "_build",
                        lambda self, cp, probe=False: setattr(self, "_it", real if probe else Failing()))
    with pytest.raises(RuntimeError, match="something else"):
        next(iter(dl))


def test_origins_parse():
    raw = b"/data/s/shard-000001.tar:13312:0000000070.jpg\0\0"
    assert parse_origin(raw) == ("/data/s/shard-000001.tar", 13312, "0000000070")
    assert parse_origin(b"\0\0") is None


def test_the_last_position_of_an_epoch_resumes_into_the_next(sample_shards):
    c = cfg(sample_shards)
    a = DaliLoader(c)
    it = iter(a)
    for _ in range(len(a)):
        next(it)
    state = a.state_dict()  # after an epoch's last batch, before its end is seen
    rest = list(it)
    assert rest == [] and a.epoch == 1
    nxt = [b["image"] for b in a]
    b = DaliLoader(c, state=state)
    got = [x["image"] for x in b]
    assert b.epoch == 2 and len(got) == len(nxt) and all(torch.equal(x, y) for x, y in zip(nxt, got, strict=True))


def test_damaged_tables_in_a_full_batch_do_not_crash_the_process(sample_shards, tmp_path, damage):
    """DALI 2.4's CPU decoder can die with SIGSEGV on a JPEG whose tables are damaged when the
    batch holds good images too (docs/benchmarks.md); the guard's header parse stops such a
    sample first. Run in a child process, so that a crash fails the test instead of pytest."""
    import subprocess
    import sys

    d = tmp_path / "tables"
    shutil.copytree(sample_shards, d)
    damaged = damage(str(d), 4, seed=11, kind="tables")
    code = (f"from spotart.pipeline.config import PipelineConfig\n"
            f"from spotart.pipeline.loader import DaliLoader\n"
            f"c = PipelineConfig(shards={str(d)!r}, task='images', batch_size=48, image_size=32, device='cpu', "
            f"num_threads=2)\n"
            f"L = DaliLoader(c)\n"
            f"n = [sum(b['image'].shape[0] for b in L) for _ in range(3)]\n"
            f"print(n, sorted((b.shard, b.key) for b in L.bad))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == f"[92, 92, 92] {sorted(damaged)}"


@pytest.mark.gpu
def test_the_guard_changes_no_pixel_of_the_gpu_decoders(sample_shards):
    """The placeholder the guard appends after every image must be ignored by nvJPEG and the
    hardware decoder as it is by the CPU decoder (they stop at the image's end marker)."""
    import tarfile

    import numpy as np
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    from spotart.pipeline.build import guard

    jpgs = []
    with tarfile.open(f"{sample_shards}/shard-000000.tar") as tf:
        jpgs = [np.frombuffer(tf.extractfile(m).read(), np.uint8) for m in tf if m.name.endswith(".jpg")][:16]

    @pipeline_def(batch_size=16, num_threads=2, device_id=0)
    def pipe():
        j = fn.external_source(source=lambda: jpgs, batch=True, dtype=types.UINT8)
        return (fn.decoders.image(j, device="mixed", hw_decoder_load=0.65),
                fn.decoders.image(guard(j), device="mixed", hw_decoder_load=0.65))

    p = pipe()
    p.build()
    a, b = (o.as_cpu() for o in p.run())
    assert all(np.array_equal(np.array(a[i]), np.array(b[i])) for i in range(16))

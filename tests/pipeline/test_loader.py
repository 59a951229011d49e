"""The common pipeline part and the loader on DALI's CPU backend: every sample once per epoch
across ranks, determinism by seed, exact save/restore of the position."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from spotart.pipeline.build import ShardsError
from spotart.pipeline.config import PipelineConfig
from spotart.pipeline.loader import DaliLoader
from spotart.shards.build import build_shards
from spotart.shards.spec import ShardSpec


@pytest.fixture(scope="module")
def unique_shards(tmp_path_factory):
    """37 images, each its own class: labels identify samples."""
    d = tmp_path_factory.mktemp("uniq")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(37):
        p = d / "img" / f"{i:03d}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20 + i % 5, 24, 3), dtype=np.uint8)).save(p)
        lines.append(f"img/{i:03d}.png,c{i:03d}")
    (d / "list.csv").write_text("\n".join(lines) + "\n")
    build_shards([str(d / "list.csv")], str(d / "out"), ShardSpec(max_count=10), progress=False)
    return str(d / "out")


def cfg(shards, **kw):
    base = dict(shards=shards, task="images", batch_size=8, image_size=16, device="cpu", num_threads=1, initial_fill=16)
    base.update(kw)
    return PipelineConfig(**base)


def epoch_labels(loader):
    return torch.cat([b["label"] for b in loader]).tolist()


def test_batches_are_typed_and_normalised(unique_shards):
    b = next(iter(DaliLoader(cfg(unique_shards))))
    assert b["image"].shape == (8, 3, 16, 16) and b["image"].dtype == torch.float32
    assert -1.0 <= b["image"].min() and b["image"].max() <= 1.0 and b["label"].dtype == torch.int64
    b = next(iter(DaliLoader(cfg(unique_shards, dtype="bfloat16"))))
    assert b["image"].dtype == torch.bfloat16


@pytest.mark.parametrize("ranks", [1, 3])
def test_each_epoch_visits_every_sample_once_across_ranks(unique_shards, ranks):
    per_rank = []
    for r in range(ranks):
        loader = DaliLoader(cfg(unique_shards, shard_id=r, num_shards=ranks))
        e1, e2 = epoch_labels(loader), epoch_labels(loader)
        assert sorted(e1) == sorted(e2) and loader.epoch == 2
        per_rank.append(e1)
    lens = {len(DaliLoader(cfg(unique_shards, shard_id=r, num_shards=ranks))) for r in range(ranks)}
    assert len(lens) == 1  # every rank runs the same number of steps (DDP)
    allseen = sum(per_rank, [])
    assert sorted(allseen) == list(range(37))


def test_shuffle_is_seeded(unique_shards):
    a = epoch_labels(DaliLoader(cfg(unique_shards, seed=1)))
    b = epoch_labels(DaliLoader(cfg(unique_shards, seed=1)))
    c = epoch_labels(DaliLoader(cfg(unique_shards, seed=2)))
    assert a == b and a != c


def test_eval_mode_is_deterministic_and_in_order(unique_shards):
    a = [b["image"] for b in DaliLoader(cfg(unique_shards, training=False))]
    b = [b["image"] for b in DaliLoader(cfg(unique_shards, training=False, seed=9))]
    assert len(a) == len(b) > 0 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_save_restore_resumes_exactly(unique_shards):
    c = cfg(unique_shards, prefetch=2)
    ref_loader = DaliLoader(c)
    it = iter(ref_loader)
    for _ in range(2):
        next(it)
    state = ref_loader.state_dict()
    ref = [b["image"] for b in it] + [b["image"] for b in ref_loader]
    resumed = DaliLoader(c, state=state)
    got = [b["image"] for b in resumed] + [b["image"] for b in resumed]
    assert len(got) == len(ref) > 0 and all(torch.equal(x, y) for x, y in zip(ref, got, strict=True))
    with pytest.raises(ValueError, match="another pipeline configuration"):
        DaliLoader(cfg(unique_shards, seed=5), state=state)


def test_missing_or_empty_shards_are_clear_errors(tmp_path, unique_shards):
    with pytest.raises(FileNotFoundError, match="build-shards"):
        DaliLoader(cfg(str(tmp_path)))
    import shutil
    d = tmp_path / "copy"
    shutil.copytree(unique_shards, d)
    tar = next(n for n in os.listdir(d) if n.endswith(".tar"))
    os.remove(d / tar)
    with pytest.raises(ShardsError, match="verify-shards"):
        DaliLoader(cfg(str(d)))


def test_config_validation():
    with pytest.raises(ValueError, match="unknown task"):
        PipelineConfig(shards="x", task="nope")
    with pytest.raises(ValueError, match="device"):
        PipelineConfig(shards="x", task="images", device="tpu")
    with pytest.raises(ValueError, match="shard_id"):
        PipelineConfig(shards="x", task="images", shard_id=1)
    with pytest.raises(ValueError, match="unknown pipeline config key"):
        PipelineConfig.from_dict({"shards": "x", "bogus": 1})


def test_labels_parse_multi_digit_and_unlabelled(tmp_path):
    """Class ids of several digits come back exact; samples without `cls` come back as -1."""
    import collections

    from spotart.shards import catalog as cat

    rng = np.random.default_rng(3)
    lines = []
    for i in range(15):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(p)
        lines.append(f"img/{i}.png,k{i:02d}" if i < 12 else f"img/{i}.png")
    (tmp_path / "l.csv").write_text("\n".join(lines) + "\n")
    build_shards([str(tmp_path / "l.csv")], str(tmp_path / "s"), ShardSpec(), progress=False)
    c = cat.Catalog(str(tmp_path / "s" / "catalog.lmdb"), readonly=True)
    want = collections.Counter(-1 if r["class_id"] is None else r["class_id"] for _, r in c.iter_samples())
    c.close()
    got = collections.Counter(epoch_labels(DaliLoader(cfg(str(tmp_path / "s"), batch_size=4))))
    assert got == want and want[-1] == 3 and want[11] == 1


def test_parse_labels_any_width():
    import nvidia.dali.fn as fn
    from nvidia.dali import pipeline_def

    from spotart.pipeline.build import parse_labels

    values = [b"0", b"7", b"42", b"1000", b"999999999", b"", b"123456"]

    @pipeline_def(batch_size=len(values), num_threads=1, device_id=None)
    def p():
        cls = fn.external_source(source=lambda: [np.frombuffer(v, np.uint8) for v in values], batch=True)
        return parse_labels(cls)

    pipe = p()
    pipe.build()
    out = pipe.run()[0]
    got = [int(np.array(out[i])[0]) for i in range(len(values))]
    assert got == [0, 7, 42, 1000, 999999999, -1, 123456]


def test_full_operator_concurrency_changes_when_not_what(sample_shards):
    """`concurrency="full"` lets independent DALI operators overlap; each operator keeps its own
    random state, so the batches equal the default executor's, sample for sample."""
    def batches(concurrency):
        c = PipelineConfig(shards=sample_shards, task="context", batch_size=8, image_size=48, device="cpu",
                           num_threads=2, initial_fill=16, seed=3, concurrency=concurrency)
        it = iter(DaliLoader(c))
        return [next(it) for _ in range(3)]

    a, b = batches("backend"), batches("full")
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], torch.Tensor):
                assert torch.equal(x[k], y[k]), k


def test_concurrency_is_validated(unique_shards):
    with pytest.raises(ValueError, match="concurrency must be one of"):
        cfg(unique_shards, concurrency="max")

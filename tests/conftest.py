import os

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """A small labelled procedural collection shared by tests that only read it."""
    from spotart.shards.sample import make_sample

    d = tmp_path_factory.mktemp("sample")
    make_sample(str(d), count=96, size=48, seed=1)
    return str(d)


@pytest.fixture(scope="session")
def sample_shards(sample_dir, tmp_path_factory):
    from spotart.shards.build import build_shards
    from spotart.shards.spec import ShardSpec

    out = tmp_path_factory.mktemp("shards")
    build_shards([sample_dir], str(out), ShardSpec(max_count=40), progress=False)
    return str(out)


def zero_jpgs(shards: str, count: int, seed: int = 0, kind: str = "zeroed") -> list[tuple[str, str]]:
    """Damage `count` random images in a shard set (tar headers, sizes and index files
    unchanged): "zeroed", every byte 0, as a flaky copy would; "tables", 256 random bytes after
    the start marker (the header's tables gone: the decoder fails, or crashes). -> [(shard file,
    key)] damaged."""
    import random

    from spotart.pipeline.badsamples import jpg_members

    out, rng = [], random.Random(seed)
    for shard, off, size, key in rng.sample(jpg_members(shards), count):
        with open(os.path.join(shards, shard), "r+b") as f:
            if kind == "zeroed":
                f.seek(off)
                f.write(b"\0" * size)
            else:
                f.seek(off + 3)
                f.write(rng.randbytes(min(256, size - 3)))
        out.append((shard, key))
    return out


@pytest.fixture
def damage():
    return zero_jpgs

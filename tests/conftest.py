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

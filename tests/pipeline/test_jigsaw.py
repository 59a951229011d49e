"""Jigsaw generator contracts on DALI's CPU backend, with images whose pixels encode their
coordinates so every tile can be traced back to where it was cut."""

import numpy as np
import nvidia.dali.fn as fn
import pytest
from nvidia.dali import pipeline_def

from spotart.pipeline import jigsaw
from spotart.pipeline.config import PipelineConfig
from spotart.pipeline.permutations import maximal_hamming_set, save_permutations

COUNT = 100


@pytest.fixture(scope="module")
def perm_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("perms") / "p100.npy"
    return save_permutations(path, maximal_hamming_set(COUNT, seed=0), {"criterion": "avg", "seed": 0})


def ramp_image(size):
    """channel 0 = 4x, 1 = 4y, 2 = 2x + 2y: exact in uint8 and through [-1, 1] for size <= 64."""
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([4 * x, 4 * y, 2 * x + 2 * y], -1).astype(np.uint8)


def mod16_image(size):
    """every channel = 16 (y mod 16) + (x mod 16): a channel's read position modulo 16."""
    y, x = np.mgrid[0:size, 0:size]
    return np.repeat((16 * (y % 16) + x % 16)[..., None], 3, -1).astype(np.uint8)


def run(image, batches, batch_size=16, seed=1, device="cpu", dtype="float32", gather=None, **params):
    size = image.shape[0]
    cfg = PipelineConfig(shards="unused", task="jigsaw", batch_size=batch_size, image_size=size,
                         device=device, dtype=dtype, params=params)

    @pipeline_def(batch_size=batch_size, num_threads=2, device_id=None if device == "cpu" else 0, seed=seed)
    def pipe():
        images = fn.external_source(source=lambda: [image] * batch_size, batch=True, layout="HWC",
                                    device=device)
        out = jigsaw.generate(images, cfg, gather=gather)
        return out["tiles"], out["permutation"]

    p = pipe()
    p.build()
    tiles, labels = [], []
    for _ in range(batches):
        t, lab = p.run()
        t = t.as_cpu() if hasattr(t, "as_cpu") else t
        tiles.append(np.array(t.as_tensor()))
        labels.append(np.array(lab.as_tensor()).reshape(-1))
    return cfg, np.concatenate(tiles), np.concatenate(labels)


def to_uint8(tiles):
    return np.round(tiles.astype(np.float64) * 127.5 + 127.5).astype(np.int64)


def test_geometry_scales_with_image_size():
    p = jigsaw.JigsawParams()
    assert p.geometry(225) == jigsaw.JigsawGeometry(size=225, cell=75, tile=64, jitter=2, origin=0)
    assert p.geometry(64) == jigsaw.JigsawGeometry(size=64, cell=21, tile=18, jitter=1, origin=0)
    for size in range(9, 400, 7):
        g = p.geometry(size)
        assert 1 <= g.tile <= g.cell and 3 * g.cell + g.origin <= size and g.origin >= 0
    assert jigsaw.JigsawParams(channel_jitter=0).geometry(225).jitter == 0
    with pytest.raises(ValueError, match="tile <= cell"):
        jigsaw.JigsawParams(tile=80)
    with pytest.raises(ValueError, match="grey_prob"):
        jigsaw.JigsawParams(grey_prob=1.5)
    with pytest.raises(ValueError, match="unknown jigsaw pipeline parameter"):
        PipelineConfig(shards="x", task="jigsaw", params={"tiles": 9})


def test_permutation_set_sources(tmp_path, monkeypatch, perm_file):
    monkeypatch.setenv("SPOTART_CACHE", str(tmp_path))
    np.testing.assert_array_equal(jigsaw.JigsawParams(count=40, perm_seed=3).load_set(),
                                  maximal_hamming_set(40, seed=3))
    assert jigsaw.JigsawParams(count=COUNT, permutations=perm_file).load_set().shape == (COUNT, 9)
    with pytest.raises(ValueError, match="set `count` to 100"):
        jigsaw.JigsawParams(count=1000, permutations=perm_file).load_set()


def test_tiles_restore_cell_order(perm_file):
    cfg, tiles, labels = run(ramp_image(64), batches=6, count=COUNT, permutations=perm_file,
                             grey_prob=0.0, channel_jitter=0, tile_norm=False)
    geo = cfg.params.geometry(64)
    T, cell, origin = geo.tile, geo.cell, geo.origin
    perms = maximal_hamming_set(COUNT, seed=0)
    assert tiles.shape == (96, 9, 3, T, T) and tiles.dtype == np.float32
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < COUNT
    assert len(np.unique(labels)) > 40  # uniform over 100 classes: ~62 distinct in 96 draws

    v = to_uint8(tiles)
    left, top = v[:, :, 0, 0, 0] // 4, v[:, :, 1, 0, 0] // 4          # [sample, output position]
    # every tile is an exact T x T crop of the image at (top, left)
    xx = left[..., None, None] + np.arange(T)[None, None, None, :]
    yy = top[..., None, None] + np.arange(T)[None, None, :, None]
    np.testing.assert_array_equal(v[:, :, 0], np.broadcast_to(4 * xx, v[:, :, 0].shape))
    np.testing.assert_array_equal(v[:, :, 1], np.broadcast_to(4 * yy, v[:, :, 1].shape))
    np.testing.assert_array_equal(v[:, :, 2], 2 * xx + 2 * yy)

    # put tile i back where perm says it came from: restored[perm[i]] = tile i
    perm = perms[labels].astype(np.int64)                              # [sample, 9]
    rows = np.arange(len(v))[:, None]
    r_top, r_left = np.empty_like(top), np.empty_like(left)
    r_top[rows, perm], r_left[rows, perm] = top, left
    k = np.arange(9)
    gy = r_top - (origin + (k // 3) * cell)
    gx = r_left - (origin + (k % 3) * cell)
    # restored tile k lies inside cell k (so tiles never overlap), with the gap in [0, cell - T]
    assert ((gy >= 0) & (gy <= cell - T) & (gx >= 0) & (gx <= cell - T)).all()
    # and the gap is random over the whole slack of the cell
    assert set(np.concatenate([gy.ravel(), gx.ravel()])) == set(range(cell - T + 1))


def test_channel_jitter_bounded(perm_file):
    # full paper geometry: 75 px cells, 64 px tiles centred (random gap off), jitter 2 px
    # float16 output on the way: [-1, 1] in half precision still rounds back to exact grey levels
    cfg, tiles, labels = run(mod16_image(225), batches=2, batch_size=8, count=COUNT, permutations=perm_file,
                             grey_prob=0.0, random_gap=False, tile_norm=False, dtype="float16")
    assert tiles.dtype == np.float16 and tiles.shape == (16, 9, 3, 64, 64)
    geo = cfg.params.geometry(225)
    assert (geo.cell, geo.tile, geo.jitter) == (75, 64, 2)
    perms = maximal_hamming_set(COUNT, seed=0)
    image = mod16_image(225)[..., 0].astype(np.int64)
    v = to_uint8(tiles)
    shifts = []
    for s in range(len(v)):
        for i in range(9):
            k = perms[labels[s]][i]
            ny = geo.origin + (k // 3) * geo.cell + (geo.cell - geo.tile) // 2
            nx = geo.origin + (k % 3) * geo.cell + (geo.cell - geo.tile) // 2
            for c in range(3):
                dy = (v[s, i, c, 0, 0] // 16 - ny + 8) % 16 - 8
                dx = (v[s, i, c, 0, 0] % 16 - nx + 8) % 16 - 8
                assert abs(dy) <= 2 and abs(dx) <= 2
                np.testing.assert_array_equal(v[s, i, c], image[ny + dy:ny + dy + 64, nx + dx:nx + dx + 64])
                shifts.append((dy, dx))
    shifts = np.array(shifts)
    assert set(shifts[:, 0]) == set(shifts[:, 1]) == {-2, -1, 0, 1, 2}
    # uniform over the 5 shifts, the ends included (a rounded continuous draw halves the ends)
    counts = np.bincount(shifts.ravel() + 2, minlength=5)
    assert counts.min() > 0.8 * shifts.size / 5, counts
    # channels of one tile move independently
    per_tile = shifts.reshape(-1, 3, 2)
    assert (per_tile != per_tile[:, :1]).any(axis=(1, 2)).mean() > 0.5


@pytest.fixture(scope="module")
def grey_run(perm_file):
    return run(ramp_image(64), batches=8, batch_size=32, seed=7, count=COUNT, permutations=perm_file,
               channel_jitter=0)


def test_greyscale_fraction_and_tile_norm(grey_run):
    _, tiles, _ = grey_run
    # per-tile normalisation: zero mean, unit std over channels and pixels of each tile
    np.testing.assert_allclose(tiles.mean(axis=(2, 3, 4)), 0, atol=1e-4)
    np.testing.assert_allclose(tiles.std(axis=(2, 3, 4)), 1, atol=1e-2)
    # grey tiles have equal channels (up to +-1 grey level, tiny after normalising by std ~30
    # levels); colour tiles of the ramp image differ by whole units
    spread = (tiles.max(axis=2) - tiles.min(axis=2)).max(axis=(2, 3))  # [sample, tile]
    grey = spread < 0.2
    assert ((spread < 0.2) | (spread > 0.5)).all()
    assert (grey == grey[:, :1]).all()  # greyscale is per image: all 9 tiles or none
    assert abs(grey[:, 0].mean() - 0.3) < 0.08


def test_same_seed_same_batches(grey_run, perm_file):
    _, tiles, labels = grey_run
    _, tiles2, labels2 = run(ramp_image(64), batches=2, batch_size=32, seed=7, count=COUNT,
                             permutations=perm_file, channel_jitter=0)
    np.testing.assert_array_equal(labels[:64], labels2)
    np.testing.assert_array_equal(tiles[:64], tiles2)


@pytest.mark.parametrize("size", [64, 225])
def test_paste_gather_matches_numba(perm_file, size):
    """The GPU's gather (DALI operators: edge padding, planes, one multi_paste) run on the CPU
    backend gives the numba kernel's tiles exactly, jitter and edge clamping included."""
    kw = dict(batches=2, batch_size=8, seed=4, count=COUNT, permutations=perm_file, grey_prob=0.0,
              tile_norm=False)
    image = np.random.default_rng(size).integers(0, 256, (size, size, 3)).astype(np.uint8)
    _, a, la = run(image, **kw)
    _, b, lb = run(image, gather="paste", **kw)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(to_uint8(a), to_uint8(b))


def test_grey_tiles_read_luma(perm_file):
    """Greyscale on the numba path: every channel of a grey tile is the BT.601 luma, rounded."""
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    _, tiles, _ = run(image, batches=1, batch_size=16, seed=2, count=COUNT, permutations=perm_file,
                      grey_prob=1.0, channel_jitter=0, random_gap=False, tile_norm=False)
    v = to_uint8(tiles)
    assert (v == v[:, :, :1]).all()
    luma = np.floor(image.astype(np.float64) @ np.array(jigsaw.LUMA) + 0.5)
    assert set(np.unique(v)) <= set(np.unique(luma).astype(np.int64))


def _cuda():
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_gpu_kernel_matches_cpu(perm_file):
    # the random draws are CPU operators in both, so the same seed gives the same puzzles and the
    # CUDA gather must reproduce the CPU one exactly
    kw = dict(batches=2, batch_size=8, seed=3, count=COUNT, permutations=perm_file, grey_prob=0.0,
              tile_norm=False)
    _, cpu_tiles, cpu_labels = run(ramp_image(64), **kw)
    _, gpu_tiles, gpu_labels = run(ramp_image(64), device="gpu", **kw)
    np.testing.assert_array_equal(cpu_labels, gpu_labels)
    np.testing.assert_array_equal(to_uint8(cpu_tiles), to_uint8(gpu_tiles))

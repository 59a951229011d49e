"""The context-encoder masks on DALI's CPU backend: hole geometry, fill, weight band, statistics.

Each pipeline holding a numba kernel costs a few seconds to build (DALI compiles its wrapper), so
the random modes are built once per module and shared by the tests that only read them."""

from __future__ import annotations

import numpy as np
import pytest
from nvidia.dali import fn, pipeline_def

from spotart.pipeline.config import PipelineConfig
from spotart.pipeline.inpainting import InpaintingParams, centre_square, dilate, generate, rasterise_blocks

S = 32
R = 3  # overlap used for the random modes below


def make_cfg(**kw):
    params = kw.pop("params", {})
    base = dict(shards="unused", task="inpainting", batch_size=32, image_size=S, device="cpu", seed=0)
    base.update(kw)
    return PipelineConfig(**base, params=params)


def run(cfg, batches):
    """generate() on one fixed random uint8 batch; returns stacked outputs and the batch."""
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (cfg.batch_size, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    names = ("image", "target", "mask", "weight")

    @pipeline_def(batch_size=cfg.batch_size, num_threads=1, device_id=None, seed=cfg.seed)
    def pipe():
        x = fn.external_source(source=lambda: images, batch=True, layout="HWC")
        out = generate(x, cfg)
        assert sorted(out) == sorted(names)
        return tuple(out[n] for n in names)

    p = pipe()
    p.build()
    got = {n: [] for n in names}
    for _ in range(batches):
        for n, t in zip(names, p.run()):
            got[n].append(np.array(t.as_tensor()))
    got = {n: np.concatenate(v) for n, v in got.items()}
    got["input"] = np.concatenate([images] * batches)
    return got


def dilate_ref(mask, r):
    """Chebyshev dilation of (N, H, W) 0/1 masks by r, by OR-ing shifted copies (no kernel code)."""
    n, h, w = mask.shape
    pad = np.pad(mask.astype(bool), ((0, 0), (r, r), (r, r)))
    out = np.zeros((n, h, w), bool)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= pad[:, dy : dy + h, dx : dx + w]
    return out


def check_contract(out, r, overlap_weight=10.0):
    """The documented relations between image, target, mask and weight, for any mode."""
    n, _, size, _ = out["mask"].shape
    assert out["image"].shape == out["target"].shape == (n, 3, size, size)
    assert out["mask"].shape == out["weight"].shape == (n, 1, size, size)
    hole = out["mask"][:, 0]
    assert set(np.unique(hole)) <= {0.0, 1.0}
    expect = ((out["input"].astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out["target"].astype(np.float32), expect, atol=1e-3 if out["target"].dtype == np.float16 else 1e-6)
    h3 = np.broadcast_to(hole[:, None] == 1, out["image"].shape)
    assert np.all(out["image"][h3] == 0), "hole pixels must hold the fill value 0"
    np.testing.assert_array_equal(out["image"][~h3], out["target"][~h3])
    band = dilate_ref(hole, r) & (hole == 0)
    want = np.where(hole == 1, 1.0, np.where(band, overlap_weight, 0.0))
    np.testing.assert_array_equal(out["weight"][:, 0].astype(np.float32), want)


# --- centre ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size, overlap", [(32, 3), (64, 4), (48, 0)])
def test_centre_hole_where_the_released_code_puts_it(size, overlap):
    out = run(make_cfg(image_size=size, batch_size=4, params={"mode": "center", "overlap": overlap}), 2)
    side, start = size // 2, size // 4
    hole = np.zeros((size, size), np.float32)
    hole[start + overlap : start + side - overlap, start + overlap : start + side - overlap] = 1
    region = np.zeros((size, size), bool)
    region[start : start + side, start : start + side] = True
    assert np.all(out["mask"][:, 0] == hole)
    want = np.where(hole == 1, 1.0, np.where(region, 10.0, 0.0))
    assert np.all(out["weight"][:, 0] == want)
    # The predicted region (weight > 0) is exactly the central S/2 square, as in train.lua.
    assert np.all((out["weight"][:, 0] > 0) == region)
    check_contract(out, overlap)


def test_centre_square_helper():
    assert centre_square(128, 4) == (32, 64, 36, 56)  # train.lua: 1+S/4 .. S/2+S/4, hole shrunk by 4
    assert centre_square(64, 0) == (16, 32, 16, 32)


def test_custom_overlap_weight_and_half_precision():
    out = run(make_cfg(dtype="float16", batch_size=4, params={"mode": "center", "overlap": 2, "overlap_weight": 5.0}), 1)
    assert all(out[n].dtype == np.float16 for n in ("image", "target", "mask", "weight"))
    check_contract(out, 2, overlap_weight=5.0)


def test_centre_overlap_too_large_is_a_clear_error():
    with pytest.raises(ValueError, match="overlap 8 px leaves no hole in the 16 px centre square"):
        run(make_cfg(params={"mode": "center", "overlap": 8}), 1)


# --- random blocks and regions (one build each, shared) --------------------------------------


@pytest.fixture(scope="module")
def blocks():
    return run(make_cfg(seed=11, params={"mode": "blocks", "overlap": R}), 4)


@pytest.fixture(scope="module")
def regions():
    return run(make_cfg(seed=11, params={"mode": "regions", "overlap": R}), 4)


def test_blocks_cover_up_to_a_quarter(blocks):
    frac = blocks["mask"].mean(axis=(1, 2, 3))
    assert frac.min() > 0 and frac.max() <= 0.25
    # The budget is actually used: "up to 1/4", not a few specks.
    assert frac.mean() > 0.12 and frac.max() > 0.2
    assert len({m.tobytes() for m in blocks["mask"]}) == len(frac)
    check_contract(blocks, R)


def test_blocks_are_rectangles_within_side_range(blocks):
    # Every hole pixel lies in some fully masked square of side floor(0.1 * S) = 3.
    p = InpaintingParams()
    k = int(p.block_side_min * S)
    for hole in blocks["mask"][:16, 0].astype(bool):
        fits = np.lib.stride_tricks.sliding_window_view(hole, (k, k)).all(axis=(2, 3))
        cover = np.zeros_like(hole)
        for y, x in zip(*np.nonzero(fits)):
            cover[y : y + k, x : x + k] = True
        assert np.array_equal(cover, hole)


def test_regions_fraction_in_range_and_smooth(regions):
    frac = regions["mask"].mean(axis=(1, 2, 3))
    half_px = 0.5 / S**2
    assert frac.min() >= 0.2 - half_px and frac.max() <= 0.3 + half_px
    assert frac.std() > 0.015  # drawn over the range, not pinned to one value
    # Smooth shapes, not salt and pepper: i.i.d. pixels at 25% would disagree with their right
    # neighbour 37.5% of the time.
    hole = regions["mask"][:, 0]
    assert (hole[:, :, 1:] != hole[:, :, :-1]).mean() < 0.12
    check_contract(regions, R)


def test_random_modes_deterministic_by_seed(blocks, regions):
    again = run(make_cfg(seed=11, params={"mode": "regions", "overlap": R}), 4)
    np.testing.assert_array_equal(again["mask"], regions["mask"])
    np.testing.assert_array_equal(again["weight"], regions["weight"])
    other = run(make_cfg(seed=12, params={"mode": "blocks", "overlap": R}), 4)
    assert not np.array_equal(other["mask"], blocks["mask"])
    # Fresh masks every batch.
    assert not np.array_equal(blocks["mask"][:32], blocks["mask"][32:64])


# --- kernels as plain functions (numba-compiled, called directly) -----------------------------


def test_dilate_kernel_matches_reference():
    rng = np.random.default_rng(0)
    for r in (0, 1, 3):
        src = (rng.random((20, 17)) < 0.05).astype(np.uint8)
        dst = np.empty_like(src)
        dilate(src, dst, np.empty_like(src), r)
        np.testing.assert_array_equal(dst.astype(bool), dilate_ref(src[None], r)[0])


def test_block_budget_respected_for_adversarial_candidates():
    hole = np.zeros((20, 20), np.uint8)
    # Every candidate is the largest block (6x6 = 36 px at side 0.3); budget 100 px fits 2 disjoint
    # ones, the third and later must be rejected, the overlapping repeat adds nothing and is kept.
    cand = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0.99, 0.99], [1, 1, 0.5, 0.5], [1, 1, 0, 0.99]], np.float32)
    rasterise_blocks(hole, cand, 0.1, 0.3, 100)
    assert hole.sum() == 72 and hole[:6, :6].all() and hole[14:, 14:].all()


# --- parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, match",
    [
        ({"mode": "random"}, "mode"),
        ({"overlap": -1}, "overlap"),
        ({"overlap": 2.5}, "overlap"),
        ({"overlap_weight": 0}, "overlap_weight"),
        ({"block_side_max": 0.6}, "block_side_max\\*\\*2"),
        ({"block_side_min": 0.4, "block_side_max": 0.3}, "block_side_min"),
        ({"region_fraction_min": 0.4, "region_fraction_max": 0.3}, "region_fraction"),
        ({"region_cells": 1}, "region_cells"),
        ({"hole": "center"}, "unknown"),
    ],
)
def test_bad_params_rejected(params, match):
    with pytest.raises(ValueError, match=match):
        make_cfg(params=params)


@pytest.mark.gpu
def test_gpu_pipeline_same_contract():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    for mode in ("center", "blocks", "regions"):
        cfg = make_cfg(device="gpu", params={"mode": mode, "overlap": R})
        rng = np.random.default_rng(5)
        images = rng.integers(0, 256, (cfg.batch_size, S, S, 3), dtype=np.uint8)

        @pipeline_def(batch_size=cfg.batch_size, num_threads=2, device_id=0, seed=3)
        def pipe():
            x = fn.external_source(source=lambda: images, batch=True, layout="HWC", device="gpu")
            out = generate(x, cfg)
            return tuple(out[n] for n in ("image", "target", "mask", "weight"))

        p = pipe()
        p.build()
        got = [np.array(t.as_cpu().as_tensor()) for t in p.run()]
        check_contract(dict(zip(("image", "target", "mask", "weight"), got), input=images), R)

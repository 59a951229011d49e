"""The artifact-mask generator on DALI's CPU backend: Omega's statistics, geometry, seeding."""

from __future__ import annotations

import numpy as np
import pytest
from nvidia.dali import fn, pipeline_def

from spotart.pipeline.artifacts import ArtifactParams, generate
from spotart.pipeline.config import PipelineConfig


def make_cfg(**kw):
    base = dict(shards="unused", task="artifacts", batch_size=32, image_size=16, device="cpu", seed=0)
    base.update(kw)
    return PipelineConfig(**base)


def run(cfg, batches, images=None):
    """Feed one fixed uint8 batch through generate(); stack `batches` runs per output name."""
    if images is None:
        rng = np.random.default_rng(123)
        images = rng.integers(0, 256, (cfg.batch_size, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    names = []

    @pipeline_def(batch_size=cfg.batch_size, num_threads=1, device_id=None, seed=cfg.seed)
    def pipe():
        x = fn.external_source(source=lambda: images, batch=True, layout="HWC")
        out = generate(x, cfg)
        names.extend(sorted(out))
        return tuple(out[n] for n in sorted(out))

    p = pipe()
    p.build()
    got = {n: [] for n in names}
    for _ in range(batches):
        for n, t in zip(names, p.run()):
            got[n].append(np.array(t.as_tensor()))
    return {n: np.concatenate(v) for n, v in got.items()}, images


@pytest.mark.parametrize("theta", [0.1, 0.5, 0.8])
def test_drop_fraction_matches_theta(theta):
    cfg = make_cfg(params={"theta": theta, "mask_size": 8})
    out, _ = run(cfg, batches=20)
    mask = out["mask"]
    assert mask.shape == (20 * 32, 1, 8, 8) and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}
    dropped = 1.0 - mask
    # 40960 Bernoulli draws: std of the mean <= 0.0025, so 0.015 is a 6-sigma bound.
    assert abs(dropped.mean() - theta) < 0.015
    # No spatial bias: each of the 64 positions has 640 draws (std <= 0.02).
    per_pos = dropped.mean(axis=(0, 1))
    assert np.abs(per_pos - theta).max() < 0.1
    # Independent entries: horizontal neighbours agree with probability theta^2 + (1 - theta)^2.
    agree = (mask[..., 1:] == mask[..., :-1]).mean()
    assert abs(agree - (theta**2 + (1 - theta) ** 2)) < 0.02


def test_image_is_normalised_chw_and_masks_vary():
    cfg = make_cfg(params={"mask_size": 4})
    out, images = run(cfg, batches=2)
    expect = (images.astype(np.float32) - 127.5) / 127.5
    np.testing.assert_allclose(out["image"][:32], expect.transpose(0, 3, 1, 2), atol=1e-6)
    assert out["image"].min() >= -1 and out["image"].max() <= 1
    assert out["mask"].shape == (64, 1, 4, 4)
    # Fresh draws every batch and every sample, not one mask repeated.
    assert not np.array_equal(out["mask"][:32], out["mask"][32:])
    assert len({m.tobytes() for m in out["mask"]}) > 60


def test_deterministic_by_seed_eval_mode_too():
    a, _ = run(make_cfg(seed=7, training=False, params={"mask_size": 4}), batches=3)
    b, _ = run(make_cfg(seed=7, training=False, params={"mask_size": 4}), batches=3)
    c, _ = run(make_cfg(seed=8, training=False, params={"mask_size": 4}), batches=3)
    np.testing.assert_array_equal(a["mask"], b["mask"])
    assert not np.array_equal(a["mask"], c["mask"])
    # eval masks are still damage, not all ones
    assert 0.5 < (1 - a["mask"]).mean() < 0.7  # theta 0.6 over 1536 entries


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_outputs(dtype):
    out, _ = run(make_cfg(dtype=dtype, batch_size=8), batches=1)
    # DALI emits float16 for both; the iterator casts bf16 on the device (see ops.py).
    assert out["image"].dtype == np.float16 and out["mask"].dtype == np.float16
    assert set(np.unique(out["mask"])) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "params, match",
    [
        ({"theta": 0.0}, "theta"),
        ({"theta": 1.0}, "theta"),
        ({"mask_size": -1}, "mask_size"),
        ({"mask_size": 2.5}, "mask_size"),
        ({"drop": 0.5}, "unknown"),
    ],
)
def test_bad_params_rejected(params, match):
    with pytest.raises(ValueError, match=match):
        make_cfg(params=params)


def test_mask_larger_than_image_rejected():
    cfg = make_cfg(image_size=8, params={"mask_size": 16})
    with pytest.raises(ValueError, match="mask_size 16 exceeds image_size 8"):
        run(cfg, batches=1)


def test_params_defaults_and_the_derived_mask_side():
    p = ArtifactParams()
    assert (p.mask_size, p.theta) == (0, 0.6)  # 0: derived; 0.6 is the released code's drop rate
    assert make_cfg(image_size=64).params.mask_size == 4  # image_size / 16, resolved in the config
    assert make_cfg(image_size=64, params={"mask_size": 8}).params.mask_size == 8


@pytest.mark.gpu
def test_gpu_masks_drawn_on_device():
    cfg = make_cfg(device="gpu", params={"theta": 0.3, "mask_size": 8})
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (cfg.batch_size, 16, 16, 3), dtype=np.uint8)

    @pipeline_def(batch_size=cfg.batch_size, num_threads=2, device_id=0, seed=4)
    def pipe():
        x = fn.external_source(source=lambda: images, batch=True, layout="HWC", device="gpu")
        out = generate(x, cfg)
        return out["image"], out["mask"]

    p = pipe()
    p.build()
    masks = []
    for _ in range(10):
        image, mask = p.run()
        assert "gpu" in type(mask).__name__.lower()
        masks.append(np.array(mask.as_cpu().as_tensor()))
    masks = np.concatenate(masks)
    assert masks.shape == (320, 1, 8, 8) and set(np.unique(masks)) <= {0.0, 1.0}
    assert abs((1 - masks).mean() - 0.3) < 0.02

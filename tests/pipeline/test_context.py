"""Context-prediction generator contracts on DALI's CPU backend, with images whose pixels encode
their coordinates so each patch can be traced back to where it was cut."""

import numpy as np
import nvidia.dali.fn as fn
import pytest
from nvidia.dali import pipeline_def

from spotart.pipeline import context, ops
from spotart.pipeline.config import PipelineConfig

S = 64
OFF = dict(color_drop=False, projection=False, pixelate_prob=0.0)


def ramp_image(size=S):
    """channel 0 = 4x, 1 = 4y, 2 = 2x + 2y: exact in uint8 and through [-1, 1] for size <= 64."""
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([4 * x, 4 * y, 2 * x + 2 * y], -1).astype(np.uint8)


def noise_image(size=S):
    """channels 0/1 = 4x/4y (position), channel 2 = fixed iid noise (fine detail)."""
    img = ramp_image(size)
    img[..., 2] = np.random.default_rng(0).integers(0, 256, (size, size))
    return img


def run(image, batches, batch_size=32, seed=1, dtype="float32", colour=None, **params):
    cfg = PipelineConfig(shards="unused", task="context", batch_size=batch_size, image_size=image.shape[0],
                         dtype=dtype, device="cpu", params=params)

    @pipeline_def(batch_size=batch_size, num_threads=2, device_id=None, seed=seed)
    def pipe():
        images = fn.external_source(source=lambda: [image] * batch_size, batch=True, layout="HWC")
        out = context.generate(images, cfg, colour=colour)
        return out["patch1"], out["patch2"], out["position"]

    p = pipe()
    p.build()
    outs = [[], [], []]
    for _ in range(batches):
        for o, t in zip(outs, p.run()):
            o.append(np.array(t.as_tensor()))
    a, b, pos = (np.concatenate(o) for o in outs)
    return cfg.params.geometry(image.shape[0]), a, b, pos.reshape(-1)


def levels(x):
    return np.round(x.astype(np.float64) * 127.5 + 127.5).astype(np.int64)


def corner(patch):
    """(y, x) top-left of an exact crop of the ramp image, from its uint8 levels."""
    v = levels(patch)
    return v[:, 1, 0, 0] // 4, v[:, 0, 0, 0] // 4


def is_exact_crop(patch, y, x, image):
    P = patch.shape[-1]
    v = levels(patch)
    return np.array([np.array_equal(v[i], image[y[i]:y[i] + P, x[i]:x[i] + P].transpose(2, 0, 1))
                     for i in range(len(v))])


def test_geometry_fits_and_scales():
    p = context.ContextParams()
    assert p.geometry(398) == context.ContextGeometry(398, 96, 48, 7, 0, 10, 95)  # paper scale
    g = p.geometry(64)
    assert (g.patch, g.gap, g.jitter) == (15, 8, 1)
    assert (p.geometry(224).patch, p.geometry(224).gap, p.geometry(224).jitter) == (54, 27, 4)
    for size in range(12, 600, 5):
        g = p.geometry(size)
        assert 3 * g.patch + 2 * g.gap + 2 * g.jitter + g.slack == size and g.slack >= 0
        assert 1 <= g.pixelate_min <= g.pixelate_max < g.patch
    with pytest.raises(ValueError, match="too small"):
        p.geometry(5)
    with pytest.raises(ValueError, match="pixelate_prob"):
        context.ContextParams(pixelate_prob=2.0)
    with pytest.raises(ValueError, match="unknown context pipeline parameter"):
        PipelineConfig(shards="x", task="context", params={"patch_size": 96})


def test_neighbour_offsets_gap_and_jitter():
    image = ramp_image()
    g, a, b, pos = run(image, batches=6, **OFF)
    P, G, J = g.patch, g.gap, g.jitter
    assert a.shape == b.shape == (192, 3, P, P) and a.dtype == np.float32
    assert pos.dtype == np.int64 and set(pos) == set(range(8))
    assert np.bincount(pos, minlength=8).min() > 192 / 8 / 2  # uniform labels: 24 each expected

    y1, x1 = corner(a)
    y2, x2 = corner(b)
    assert is_exact_crop(a, y1, x1, image).all() and is_exact_crop(b, y2, x2, image).all()
    # centre patch: nominal corner J + P + G (+ grid slack), then its own jitter
    lo, hi = P + G, P + G + 2 * J + g.slack
    assert ((y1 >= lo) & (y1 <= hi) & (x1 >= lo) & (x1 <= hi)).all()
    # neighbour: (P + G) * direction of its label, plus the difference of two jitters
    d = context.NEIGHBOURS[pos]
    ey, ex = y2 - y1 - d[:, 0] * (P + G), x2 - x1 - d[:, 1] * (P + G)
    assert np.abs(ey).max() <= 2 * J and np.abs(ex).max() <= 2 * J
    assert set(ey) == set(ex) == set(range(-2 * J, 2 * J + 1))  # jitter really happens
    # the gap between side-by-side patches stays within G +- 2J
    side = d[:, 0] == 0
    gap = np.abs(x2 - x1)[side] - P
    assert gap.min() >= G - 2 * J and gap.max() <= G + 2 * J


@pytest.mark.parametrize("colour", ["numba", "ops"])  # the CPU's and the GPU's implementation
def test_color_dropping_keeps_one_channel(colour):
    image = ramp_image()
    _, a, b, _ = run(image, batches=4, colour=colour, color_drop=True, projection=False, pixelate_prob=0.0)
    patches = np.concatenate([a, b]).astype(np.float64)
    std = patches.std(axis=(2, 3))
    keep = std.argmax(axis=1)
    assert np.bincount(keep, minlength=3).min() > len(keep) / 3 / 2  # every channel gets kept
    assert (keep[: len(a)] != keep[len(a):]).mean() > 0.3               # independently per patch
    for i, k in enumerate(keep):
        kept = levels(patches[i, k])
        # the kept channel is untouched: a ramp with the channel's own slope (4, 4 or 2 + 2)
        slope = {0: (0, 4), 1: (4, 0), 2: (2, 2)}[k]
        assert (np.diff(kept, axis=0) == slope[0]).all() and (np.diff(kept, axis=1) == slope[1]).all()
        for c in {0, 1, 2} - {k}:
            # dropped channels: zero-mean Gaussian noise, std 1/100 of the kept channel's
            ratio = patches[i, c].std() / std[i, k]
            assert 0.007 < ratio < 0.013, (i, k, c, ratio)
            assert abs(patches[i, c].mean()) < 5 * 0.01 * std[i, k] / np.sqrt(a.shape[-1] ** 2)


@pytest.mark.parametrize("colour", ["numba", "ops"])
def test_projection_removes_green_magenta(colour):
    image = ramp_image()
    g, a, b, _ = run(image, batches=2, colour=colour, color_drop=False, projection=True, pixelate_prob=0.0)
    B = context.projection_matrix()
    a_axis = np.array([-1.0, 2.0, -1.0])
    for patch in (a, b):
        u = patch.astype(np.float64)
        assert np.abs(np.einsum("nchw,c->nhw", u, a_axis)).max() < 1e-5
        # B keeps the grey axis and the red-blue axis: v0 - v2 = 2x - 2y, v0 + v1 + v2 = 6x + 6y
        v = u[:, :, 0, 0] * 127.5 + 127.5
        s, d = (v.sum(1) - 0) / 6, (v[:, 0] - v[:, 2]) / 2       # x + y, x - y
        x, y = np.round((s + d) / 2).astype(int), np.round((s - d) / 2).astype(int)
        P = g.patch
        for i in range(len(u)):
            crop = (image[y[i]:y[i] + P, x[i]:x[i] + P].astype(np.float64) - 127.5) / 127.5
            np.testing.assert_allclose(u[i], np.einsum("rc,hwc->rhw", B, crop), atol=1e-5)


@pytest.mark.parametrize("colour", ["numba", "ops"])  # the CPU's kernel and the GPU's two resizes
def test_pixelation_third_of_patches(colour):
    image = noise_image()
    g, a, b, _ = run(image, batches=6, colour=colour, color_drop=False, projection=False)
    patches = np.concatenate([a, b])
    y, x = corner(patches)
    exact = is_exact_crop(patches, y, x, image)
    assert abs((~exact).mean() - 1 / 3) < 0.08
    # pixelated patches lost fine detail: the noise channel is smoother than the image's
    detail = np.abs(np.diff(levels(patches[:, 2]), axis=-1)).mean(axis=(1, 2))
    assert detail[~exact].max() < detail[exact].min()


@pytest.mark.parametrize("P, side", [(15, 3), (15, 10), (15, 14), (54, 7), (54, 40)])
def test_numba_pixelation_is_dalis_two_resizes(P, side):
    """The CPU kernel's pixelation = the GPU branch's two DALI resizes (antialiased linear down,
    linear up), up to DALI's uint8 intermediate (rounding: < 0.5 of 255)."""
    import nvidia.dali.types as types

    rng = np.random.default_rng(side)
    patches = [rng.integers(0, 256, (P, P, 3)).astype(np.uint8) for _ in range(4)]

    @pipeline_def(batch_size=4, num_threads=1, device_id=None)
    def pipe():
        x = fn.external_source(source=lambda: patches, batch=True, layout="HWC")
        return fn.resize(fn.resize(x, resize_x=side, resize_y=side), size=[P, P], dtype=types.FLOAT)

    p = pipe()
    p.build()
    (out,) = p.run()
    for i, patch in enumerate(patches):
        ours = context._pixelate_patch(patch.astype(np.float32), side)
        assert ours.shape == (P, P, 3)
        np.testing.assert_allclose(ours, np.asarray(out[i]), atol=0.51)
        assert np.abs(ours - patch).max() > 5  # and it did change the patch


def test_kernel_noise_is_standard_gaussian_and_seeded():
    """The CPU kernel's noise generator (splitmix64 + polar method): mean 0, the asked std,
    Gaussian moments and tail mass, in place in a channel view; the same seed, the same values."""
    out = np.zeros((3, 200, 250), np.float32)
    context._normals(out[1], np.uint64(7), 2.0)
    x = out[1].astype(np.float64).ravel() / 2.0
    assert (out[0] == 0).all() and (out[2] == 0).all()  # wrote its channel only
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    assert abs((x ** 4).mean() - 3) < 0.1 and abs((x ** 3).mean()) < 0.05
    assert abs((np.abs(x) > 1.96).mean() - 0.05) < 0.004
    again = np.zeros((3, 200, 250), np.float32)
    context._normals(again[1], np.uint64(7), 2.0)
    np.testing.assert_array_equal(out, again)
    context._normals(again[1], np.uint64(8), 2.0)
    assert not np.array_equal(out, again)


def test_same_seed_same_batches_half_precision():
    image = noise_image()
    first = run(image, batches=2, batch_size=8, seed=5, dtype="float16")
    again = run(image, batches=2, batch_size=8, seed=5, dtype="float16")
    other = run(image, batches=2, batch_size=8, seed=6, dtype="float16")
    assert first[1].dtype == np.float16 and np.isfinite(first[1]).all()
    assert len(first) == len(again) > 1
    for x, y in zip(first[1:], again[1:], strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first[1], other[1])


def test_randint_uniform_inclusive():
    @pipeline_def(batch_size=4, num_threads=1, device_id=None, seed=0)
    def pipe():
        return ops.randint(-2, 2, [1000]), ops.randint(3, 3, [5])

    p = pipe()
    p.build()
    wide, point = (np.array(t.as_tensor()) for t in p.run())
    counts = np.bincount(wide.ravel() + 2, minlength=5)
    assert len(counts) == 5 and counts.min() > 0.9 * wide.size / 5, counts  # ends as likely as the rest
    assert (point == 3).all() and wide.dtype == np.int32

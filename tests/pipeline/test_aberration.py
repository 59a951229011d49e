"""Synthetic lateral chromatic aberration (pipeline/aberration.py): green moves radially by s * r,
red and blue stay, and the switch reaches the pipeline from a training config."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from spotart.pipeline.build import build_pipeline
from spotart.pipeline.config import PipelineConfig

S = 64


def lines_image():
    img = np.zeros((S, S, 3), np.uint8)
    img[:, 48:50] = 255  # vertical line centred at x = 49.0 (pixel centres +0.5): r = +17 from 32
    img[:, 14:16] = 255  # centred at 15.0: r = -17
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return [([np.frombuffer(buf.getvalue(), np.uint8)], [np.zeros(0, np.uint8)])]


def run_images(aberration, device="cpu"):
    cfg = PipelineConfig(shards="", task="images", batch_size=1, image_size=S, device=device, training=False,
                         aberration=aberration, device_id=0 if device == "gpu" else None)
    pipe, _ = build_pipeline(cfg, source=lines_image())
    out = pipe.run()[0]
    return np.array((out.as_cpu() if device == "gpu" else out).as_tensor())[0]  # (3, S, S) in [-1, 1]


def line_centres(chw, c):
    w = (chw[c, S // 2] + 1) / 2
    x = np.arange(S) + 0.5
    return (w[: S // 2] * x[: S // 2]).sum() / w[: S // 2].sum(), (w[S // 2:] * x[S // 2:]).sum() / w[S // 2:].sum()


@pytest.mark.parametrize("s, device", [(0.1, "cpu"), (-0.06, "cpu"),
                                       pytest.param(0.1, "gpu", marks=pytest.mark.gpu)])
def test_green_scaled_about_the_centre(s, device):
    out = run_images(s, device)
    for c in (0, 2):  # red and blue untouched
        np.testing.assert_allclose(line_centres(out, c), (15.0, 49.0), atol=0.05)
    left, right = line_centres(out, 1)
    assert right == pytest.approx(32 + 17 * (1 + s), abs=0.15)
    assert left == pytest.approx(32 - 17 * (1 + s), abs=0.15)


def test_off_is_the_plain_image():
    out = run_images(0.0)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[1], out[2])


def test_rejects_a_scale_that_is_no_lens():
    with pytest.raises(ValueError, match="aberration must be in"):
        PipelineConfig(shards="", aberration=0.5)


def test_train_config_forwards_it():
    from spotart.trainer.config import build_config
    from spotart.trainer.data import pipeline_config
    from spotart.trainer.runtime import resolve_runtime

    cfg = build_config("context", "tiny", ["aberration=0.05", "device=cpu"])
    assert pipeline_config(cfg, resolve_runtime(cfg)).aberration == 0.05


def test_green_is_not_blurred_by_position():
    """Resampled at the image's own resolution, green would be blurred by a bilinear phase that
    cycles every 1 / s px (HF energy ratio green/red 0.25..0.67 across a noise image at s = 0.01):
    a position cue that no channel jitter removes. Supersampled, the ratio stays nearly flat."""
    rng = np.random.default_rng(0)
    img = np.repeat(rng.integers(0, 256, (S, S, 1), dtype=np.uint8), 3, axis=2)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    cfg = PipelineConfig(shards="", task="images", batch_size=1, image_size=S, device="cpu", training=False,
                         aberration=0.01)
    pipe, _ = build_pipeline(cfg, source=[([np.frombuffer(buf.getvalue(), np.uint8)], [np.zeros(0, np.uint8)])])
    out = np.array(pipe.run()[0].as_tensor())[0]
    hp = out - (np.roll(out, 1, 1) + np.roll(out, -1, 1) + np.roll(out, 1, 2) + np.roll(out, -1, 2)) / 4
    e = hp[:, 2:-2, 2:-2] ** 2
    ratios = [e[1, y:y + 15, x:x + 15].mean() / e[0, y:y + 15, x:x + 15].mean()
              for y in range(0, 60, 15) for x in range(0, 60, 15)]
    assert np.ptp(ratios) < 0.2 and min(ratios) > 0.7

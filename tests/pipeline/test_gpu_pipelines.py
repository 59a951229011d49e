"""Every task's pipeline on DALI's GPU backend ("mixed" decode, GPU operators): the batches the
trainer gets have the CPU pipeline's keys, shapes and dtypes, live on the GPU and are finite;
and the generators keep their contracts there. Where both backends draw alike (the same
operators in the same order), the GPU must reproduce the CPU exactly. Skipped without CUDA
(tests/conftest.py); tools/bench/gpu_session.sh runs them on the device machine."""

import numpy as np
import nvidia.dali.fn as fn
import pytest
import torch
from nvidia.dali import pipeline_def

from spotart.pipeline import artifacts, context
from spotart.pipeline.config import PipelineConfig
from spotart.pipeline.loader import LABELS, DaliLoader

pytestmark = pytest.mark.gpu

TASKS = ["artifacts", "inpainting", "context", "jigsaw", "images"]
PARAMS = {"jigsaw": {"count": 100}, "inpainting": {"mode": "blocks"}}


def first_batch(shards, task, device, dtype="float32"):
    cfg = PipelineConfig(shards=shards, task=task, batch_size=8, image_size=32, device=device, num_threads=2,
                         dtype=dtype, params=PARAMS.get(task))
    return next(iter(DaliLoader(cfg, "cuda" if device == "gpu" else "cpu")))


@pytest.mark.parametrize("task", TASKS)
def test_every_task_runs_on_the_gpu(sample_shards, task):
    g = first_batch(sample_shards, task, "gpu", dtype="bfloat16")
    c = first_batch(sample_shards, task, "cpu", dtype="bfloat16")
    assert g.keys() == c.keys()
    for k, t in g.items():
        assert t.is_cuda, k
        assert t.shape == c[k].shape and t.dtype == c[k].dtype, (k, t.shape, c[k].shape, t.dtype, c[k].dtype)
        if k in LABELS:
            assert t.dtype == torch.int64
        else:
            assert t.dtype == torch.bfloat16 and torch.isfinite(t.float()).all(), k
    if task == "artifacts":
        assert set(g["mask"].unique().tolist()) <= {0.0, 1.0}
    if task == "inpainting":  # the hole is 0 in the input, the weight 1 on it
        hole = g["mask"].bool().expand_as(g["image"])
        assert (g["image"][hole] == 0).all() and (g["weight"][g["mask"].bool()] == 1).all()


def run_generator(module, image, device, batches, batch_size=16, seed=1, **params):
    """`module.generate` alone on `device`, fed a fixed uint8 HWC image; outputs as numpy."""
    task = module.__name__.rsplit(".", 1)[1]
    cfg = PipelineConfig(shards="unused", task=task, batch_size=batch_size, image_size=image.shape[0],
                         device=device, params=params)

    @pipeline_def(batch_size=batch_size, num_threads=2, device_id=0, seed=seed)
    def pipe():
        images = fn.external_source(source=lambda: [image] * batch_size, batch=True, layout="HWC", device=device)
        return tuple(module.generate(images, cfg).values())

    p = pipe()
    p.build()
    outs = None
    for _ in range(batches):
        got = [np.array((t.as_cpu() if hasattr(t, "as_cpu") else t).as_tensor()) for t in p.run()]
        outs = got if outs is None else [np.concatenate([a, b]) for a, b in zip(outs, got, strict=True)]
    return cfg, outs


def ramp_image(size=64):
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([4 * x, 4 * y, 2 * x + 2 * y], -1).astype(np.uint8)


def levels(x):
    return np.round(x.astype(np.float64) * 127.5 + 127.5).astype(np.int64)


def test_context_gpu_patches_are_the_cpu_patches():
    # countermeasures off, the two backends build the same graph: same draws, exact crops
    off = dict(color_drop=False, projection=False, pixelate_prob=0.0)
    _, (a_cpu, b_cpu, pos_cpu) = run_generator(context, ramp_image(), "cpu", batches=3, **off)
    _, (a_gpu, b_gpu, pos_gpu) = run_generator(context, ramp_image(), "gpu", batches=3, **off)
    np.testing.assert_array_equal(pos_cpu, pos_gpu)
    np.testing.assert_array_equal(levels(a_cpu), levels(a_gpu))
    np.testing.assert_array_equal(levels(b_cpu), levels(b_gpu))


def test_context_gpu_colour_dropping_and_pixelation():
    image = ramp_image()
    _, (a, b, _) = run_generator(context, image, "gpu", batches=4, pixelate_prob=0.0)
    patches = np.concatenate([a, b]).astype(np.float64)
    std = patches.std(axis=(2, 3))
    keep = std.argmax(axis=1)
    assert np.bincount(keep, minlength=3).min() > len(keep) / 3 / 2
    for i, k in enumerate(keep):
        slope = {0: (0, 4), 1: (4, 0), 2: (2, 2)}[k]
        kept = levels(patches[i, k])
        assert (np.diff(kept, axis=0) == slope[0]).all() and (np.diff(kept, axis=1) == slope[1]).all()
        for c in {0, 1, 2} - {k}:
            assert 0.007 < patches[i, c].std() / std[i, k] < 0.013, (i, k, c)
    # pixelation alone: about a third of the patches are no exact crop any more
    noisy = image.copy()
    noisy[..., 2] = np.random.default_rng(0).integers(0, 256, noisy.shape[:2])
    _, (a, b, _) = run_generator(context, noisy, "gpu", batches=6, color_drop=False)
    v = levels(np.concatenate([a, b]))
    y, x = v[:, 1, 0, 0] // 4, v[:, 0, 0, 0] // 4
    P = a.shape[-1]
    exact = np.array([np.array_equal(v[i], noisy[y[i]:y[i] + P, x[i]:x[i] + P].transpose(2, 0, 1))
                      for i in range(len(v))])
    assert abs((~exact).mean() - 1 / 3) < 0.1


def test_artifacts_gpu_mask_rate():
    _, (_, mask) = run_generator(artifacts, ramp_image(), "gpu", batches=4, batch_size=32)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert abs(mask.mean() - (1 - 0.6)) < 0.05  # theta 0.6 of the mask cells dropped

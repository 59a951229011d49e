"""The DALI pipeline: shards -> decoded, cropped images -> the task's inputs, all on `cfg.device`.

reader (CPU, file I/O) -> decode ("mixed" = nvJPEG on the GPU, or CPU) -> random resized crop
+ flip (training) or resize + centre crop (evaluation) -> [synthetic chromatic aberration, only
when cfg.aberration is set: aberration.py] -> the task generator
(`spotart.pipeline.<task>.generate`) -> CHW float tensors + int labels.

`source` replaces the reader by in-memory samples (encoded images and label bytes, as the
shards hold them) for synthetic data: everything after the reader is the same graph, so
synthetic batches have exactly the task's geometry and countermeasures."""

from __future__ import annotations

import functools
import importlib
import io
import os

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import OperatorConcurrency, StreamPolicy, pipeline_def

from . import aberration
from .config import TASKS, PipelineConfig

READER = "Reader"


class ShardsError(FileNotFoundError):
    pass


def shard_files(cfg: PipelineConfig) -> tuple[list[str], list[str], dict]:
    """(tar paths, index paths, manifest) with clear errors for missing/empty shard sets."""
    m = cfg.manifest()
    if not m.get("shards") or not m.get("num_samples"):
        raise ShardsError(f"{cfg.shards}: the manifest lists no samples; rebuild with `spotart build-shards`")
    tars = [os.path.join(cfg.shards, s["path"]) for s in m["shards"]]
    idxs = [os.path.join(cfg.shards, s["index"]) for s in m["shards"]]
    for p in tars + idxs:
        if not os.path.isfile(p):
            raise ShardsError(f"{p}: listed in {cfg.shards}/manifest.json but missing; run `spotart verify-shards {cfg.shards}`")
    return tars, idxs, m


CLS_DIGITS = 9  # class ids up to 999,999,999
_POW10 = np.array([10**i for i in range(CLS_DIGITS)], dtype=np.int64)[None, :, None]


def parse_labels(cls):
    """ASCII class ids (webdataset's `cls`) -> int64 (1,) per sample; an empty component (an
    unlabelled sample) -> -1. Reversed (units first) and padded with '0', the digits dot powers
    of ten give the number in a handful of batch-wide DALI operators: no numba kernel to compile
    at every pipeline build, and ~10x cheaper than digit-by-digit arithmetic."""
    n = cls.shape(dtype=types.INT64)  # (1,): number of digits, 0 when unlabelled
    row = fn.expand_dims(fn.reshape(cls, layout="W"), axes=[0, 2], new_axis_names="HC")  # flip wants HWC
    digits = fn.cast(fn.pad(fn.flip(row, horizontal=1), axes=[1], shape=[CLS_DIGITS], fill_value=48),
                     dtype=types.INT64) - 48
    value = fn.reductions.sum(digits * types.Constant(_POW10), axes=[0, 1, 2])
    return fn.reshape(value, shape=[1]) - (n == 0)


def device_id(cfg: PipelineConfig):
    if cfg.device == "cpu":
        return None
    if cfg.device_id is not None:
        return cfg.device_id
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("device='gpu' but no CUDA device is visible; use device='cpu' (DALI's CPU backend)")
    return torch.cuda.current_device()


def read_shards(cfg: PipelineConfig, tars, idxs, shard_id, num_shards):
    """-> (jpg bytes, cls bytes) per sample, this rank's part, shuffled when training."""
    return fn.readers.webdataset(
        paths=tars, index_paths=idxs, ext=["jpg", "cls"], missing_component_behavior="empty",
        dtypes=[types.UINT8, types.UINT8], random_shuffle=cfg.training, initial_fill=cfg.initial_fill,
        seed=cfg.seed, shard_id=shard_id, num_shards=num_shards, pad_last_batch=True,
        stick_to_shard=True, name=READER)


def decode(jpg, cfg: PipelineConfig):
    """JPEG -> uint8 HWC RGB; when training, only a random crop window is decoded."""
    dev = "mixed" if cfg.device == "gpu" else "cpu"
    hw = {"hw_decoder_load": cfg.hw_decoder_load} if cfg.device == "gpu" else {}
    if cfg.training:
        # the fused operator skips most of the IDCT work outside the window
        return fn.decoders.image_random_crop(jpg, device=dev, output_type=types.RGB,
                                             random_area=[cfg.min_area, 1.0], random_aspect_ratio=[3 / 4, 4 / 3], **hw)
    return fn.decoders.image(jpg, device=dev, output_type=types.RGB, **hw)


def augment(img, cfg: PipelineConfig):
    """-> image_size x image_size: resize (+ flip) when training, resize + centre crop otherwise."""
    s = cfg.image_size
    if cfg.training:
        img = fn.resize(img, size=[s, s], antialias=True, device=cfg.device)
        if cfg.flip:
            img = fn.flip(img, horizontal=fn.random.coin_flip(probability=0.5), device=cfg.device)
        return img
    img = fn.resize(img, resize_shorter=s, antialias=True, device=cfg.device)
    return fn.crop(img, crop=[s, s], device=cfg.device)


# ---- samples left out -----------------------------------------------------------------------------
# A decoder error fails the whole batch and leaves the pipeline unusable, and DALI cannot ask
# its reader for a replacement sample (NVIDIA/DALI#3913). Worse, DALI 2.4's CPU decoder can crash
# the process (SIGSEGV) on a damaged JPEG when the batch holds good images too (reproduced in
# docs/benchmarks.md). So every header is parsed by peek_image_shape before the decoder may start:
# it fails cleanly on the damage the decoder crashes on. The loader then finds the sample and
# leaves it out by removing its jpg from a copy of its shard's index: the reader still yields the
# sample, in the same place of the same shuffled order, with an empty image, and `guard` hands the
# decoder a placeholder instead. The batch keeps its size, every random operator its draws and
# the pipeline its checkpoints; the loader drops the rows without an origin (a sample left out has
# none; pipeline/badsamples.py).
SAMPLE = "sample"


@functools.lru_cache(maxsize=1)
def placeholder_jpeg() -> np.ndarray:
    """A 16 x 16 grey baseline JPEG: any decoder reads it."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (128, 128, 128)).save(buf, format="JPEG", quality=90)
    return np.frombuffer(buf.getvalue(), np.uint8)


def guard(jpg, probe: bool = False):
    """-> the encoded image for the decoder.

    The placeholder follows every image: decoders stop at an image's end marker, so a real
    image decodes as it would alone (the same pixels, the same random crop), and an empty one
    (left out) is the placeholder. `probe` puts the placeholder first instead: every image
    decodes as the placeholder, and the loader can re-read a failed batch without decoding it.
    Both graphs hold the same operators in the same order, so they take the same checkpoints.
    The header parse must finish before the decoder starts: the reshape waits for it."""
    ph = placeholder_jpeg()
    size = len(ph)
    ph = fn.constant(idata=ph.tolist(), shape=[size], dtype=types.UINT8)
    length = jpg.shape(dtype=types.INT64)
    out = fn.cat(ph, jpg, axis=0) if probe else fn.cat(jpg, ph, axis=0)
    size = length + size + 0 * fn.peek_image_shape(out, dtype=types.INT64)[0:1]
    return fn.reshape(out, shape=size)


def origins(jpg):
    """Each sample's origin, "shard.tar:offset:key.jpg" (zero-padded bytes; empty for a sample
    left out: its jpg is not in the index)."""
    return fn.pad(fn.get_property(jpg, key="source_info"), axes=[0])


def read_memory(source):
    """-> (jpg bytes, cls bytes) per sample from `source`, a list of batches, each a pair of lists
    of uint8 arrays (encoded image, ASCII class id or empty), cycled."""
    return fn.external_source(source=source, num_outputs=2, cycle=True, dtype=[types.UINT8, types.UINT8])


def images_and_labels(cfg: PipelineConfig, jpg, cls):
    img = augment(decode(jpg, cfg), cfg)
    if cfg.aberration:  # planted lens fringes for `spotart audit` (aberration.py); off by default
        img = aberration.apply(img, cfg)
    return img, parse_labels(cls)


def pipeline_kwargs(cfg: PipelineConfig, shard_id: int) -> dict:
    # DALI's dynamic executor runs a CPU, a mixed and a GPU operator at once ("backend"). The task
    # generators are wide graphs of small GPU operators (context: two patches, each cropped,
    # jittered and colour-dropped on its own); "full" lets independent ones overlap, each on its
    # own stream. It changes when operators run, never what they compute. Not the default: on the
    # H200 at 224 px it moved context and jigsaw by no more than run-to-run noise (docs/benchmarks.md).
    full = cfg.concurrency == "full"
    return dict(batch_size=cfg.batch_size, num_threads=cfg.num_threads, device_id=device_id(cfg),
                prefetch_queue_depth=cfg.prefetch, seed=(cfg.seed * 7919 + shard_id) % (2**31 - 1),
                exec_dynamic=True,
                concurrency=OperatorConcurrency.FULL if full else OperatorConcurrency.BACKEND,
                stream_policy=StreamPolicy.PER_OPERATOR if full else StreamPolicy.PER_BACKEND)


def build_pipeline(cfg: PipelineConfig, checkpoint: str | bytes | None = None, source=None,
                   index_paths: list[str] | None = None, probe: bool = False):
    """-> (built DALI pipeline, output names). `checkpoint`: a DALI checkpoint to resume from;
    `source`: in-memory samples instead of the shards (see `read_memory`). Over shards the
    outputs end with `sample` (`origins`); `index_paths` replace the shards' own index files
    (the loader's copies leaving samples out); `probe` replaces every image (see `guard`; a
    checkpoint restores only into a graph of the same operators)."""
    shard_id, num_shards = cfg.resolved_rank()
    if source is None:
        tars, idxs, _ = shard_files(cfg)
        idxs = index_paths or idxs
    gen = importlib.import_module(f"spotart.pipeline.{TASKS[cfg.task][0]}").generate
    names: list[str] = []

    @pipeline_def(enable_checkpointing=source is None)
    def pipe():
        extra = {}
        if source is None:
            raw, cls = read_shards(cfg, tars, idxs, shard_id, num_shards)
            jpg = guard(raw, probe)
        else:
            jpg, cls = read_memory(source)
        img, label = images_and_labels(cfg, jpg, cls)
        outs = gen(img, cfg)
        if source is None:
            extra[SAMPLE] = origins(raw)
        names.extend(outs)
        names.append("label")
        names.extend(extra)
        return (*outs.values(), label, *extra.values())

    kwargs = pipeline_kwargs(cfg, shard_id)
    if checkpoint is not None:
        kwargs["checkpoint"] = checkpoint
    p = pipe(**kwargs)
    p.build()
    return p, list(names)

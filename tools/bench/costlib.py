"""The good path's price (tools/bench/faults.py cost): the loader and the step as they are, against
the same code without the reliability parts, measured in the same process, rounds interleaved."""

from __future__ import annotations

import importlib
import statistics
import time

import torch


def _old_loader(cfg):
    """The pipeline and iterator as before issue 12: no guard, no sample origins, no checkpoint
    per batch (the same stage functions, so the graphs differ by exactly those parts)."""
    from nvidia.dali import pipeline_def
    from nvidia.dali.plugin.base_iterator import LastBatchPolicy
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    from spotart.pipeline import build
    from spotart.pipeline.config import TASKS
    from spotart.pipeline.loader import to_torch

    tars, idxs, _ = build.shard_files(cfg)
    gen = importlib.import_module(f"spotart.pipeline.{TASKS[cfg.task][0]}").generate
    names = []

    @pipeline_def(enable_checkpointing=True)
    def pipe():
        jpg, cls = build.read_shards(cfg, tars, idxs, 0, 1)
        img, label = build.images_and_labels(cfg, jpg, cls)
        outs = gen(img, cfg)
        names.extend([*outs, "label"])
        return (*outs.values(), label)

    p = pipe(**build.pipeline_kwargs(cfg, 0))
    p.build()
    it = DALIGenericIterator([p], names, reader_name=build.READER, last_batch_policy=LastBatchPolicy.PARTIAL,
                             auto_reset=True, prepare_first_batch=False)

    def batches():
        while True:
            for b in it:
                yield to_torch(b[0], cfg, None)
    return batches()


def _new_loader(cfg):
    from spotart.pipeline.loader import DaliLoader

    loader = DaliLoader(cfg)

    def batches():
        while True:
            yield from loader
    return batches()


def _rate(batches, n: int, bs: int) -> float:
    for _ in range(6):  # past the prefetch queue
        next(batches)
    t = time.perf_counter()
    for _ in range(n):
        next(batches)
    return n * bs / (time.perf_counter() - t)


def loader_rates(shards: str, bs: int, rounds: int, batches: int, image_size: int = 64) -> dict:
    from spotart.pipeline.config import PipelineConfig

    cfg = PipelineConfig(shards=shards, task="artifacts", batch_size=bs, image_size=image_size, device="cpu",
                         num_threads=2)
    old, new = [], []
    for _ in range(rounds):
        old.append(_rate(_old_loader(cfg), batches, bs))
        new.append(_rate(_new_loader(cfg), batches, bs))
    return {"task": "artifacts", "batch_size": bs, "image_size": image_size,
            **_summary(old, new, "img_s", best=max, digits=0)}


def _summary(old: list, new: list, unit: str, best, digits: int) -> dict:
    """Median and best round of each side (on a shared machine the best round is the least
    disturbed one), and the ratios after / before."""
    out = {}
    for name, f in (("median", statistics.median), ("best", best)):
        o, n = f(old), f(new)
        out[name] = {f"before_{unit}": round(o, digits), f"after_{unit}": round(n, digits), "ratio": round(n / o, 3)}
    out["rounds_before"], out["rounds_after"] = [round(x, digits) for x in old], [round(x, digits) for x in new]
    return out


def _old_optimise(task, runners, batch, phase, cfg, rt, optimizers, params_of, scaler):
    """trainer/step.py before issue 12."""
    with rt.autocast():
        losses, logs = task.train_step(runners, batch, phase, cfg)
    last = len(phase.optimizers) - 1
    for k, n in enumerate(phase.optimizers):
        scaler.scale(losses[n]).backward(inputs=params_of[n], retain_graph=k < last)
    for n in phase.optimizers:
        scaler.step(optimizers[n])
    scaler.update()
    for n in phase.optimizers:
        optimizers[n].zero_grad(set_to_none=True)
    return logs


def step_times(preset: str, bs: int, rounds: int, steps: int) -> dict:
    """ms per phase-2 artifacts step: the old step with foreach Adam vs the step with its guard and
    fused Adam, the same batch and weights."""
    from spotart.trainer.config import build_config
    from spotart.trainer.data import pipeline_config
    from spotart.trainer.guard import StepGuard
    from spotart.trainer.models import build_training
    from spotart.trainer.runtime import resolve_runtime
    from spotart.trainer.step import optimise
    from spotart.trainer.synthetic import synthetic_batches

    cfg = build_config("artifacts", preset, ["data=synthetic", "device=cpu", f"batch_size={bs}", "ae_fraction=0"])
    rt = resolve_runtime(cfg)
    torch.set_num_threads(1)  # as the tiny preset trains on 2 shared cores: less noise from OpenMP spinning
    batch = next(iter(synthetic_batches(pipeline_config(cfg, rt), "cpu", count=1)))

    def setup(fused: bool):
        tr = build_training(cfg, rt)
        if not fused:
            for n, o in tr.optimizers.items():
                tr.optimizers[n] = torch.optim.Adam(o.param_groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
        phase = tr.task.phases(cfg)[-1]
        return tr, phase, tr.task.enter_phase(tr.models, phase)

    def timed(fn) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        return 1000 * (time.perf_counter() - t) / steps

    old, new = [], []
    for _ in range(rounds):
        tr, ph, run = setup(False)
        old.append(timed(lambda: _old_optimise(tr.task, run, batch, ph, cfg, rt, tr.optimizers, tr.params_of,
                                               tr.scaler)))
        tr, ph, run = setup(True)
        guard = StepGuard(tr.models, rt.device)
        new.append(timed(lambda: optimise(tr.task, run, batch, ph, cfg, rt, tr.optimizers, tr.params_of, tr.scaler,
                                          guard)))
    return {"batch_size": bs, "torch_threads": torch.get_num_threads(), **_summary(old, new, "ms", best=min, digits=2)}

"""`train(cfg, run_dir)`: the one training loop, the same for every task.

Read top to bottom: processes and devices -> models, optimisers, scaler -> data -> resume ->
the loop (phase entry, learning rate, batch, forward/backward/step, metrics, checkpoints, stop
signals). The task (`tasks.py`) supplies the models, the phases and a `train_step` returning one
loss per optimiser; nothing here knows about autoencoders or discriminators.

Several losses in one step (a GAN) share one forward: loss i is backpropagated only into its
optimiser's parameters (`backward(inputs=...)`), keeping the graph for the next, and all of the
phase's optimisers step afterwards. Metrics stay on the device until a log step.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from . import distributed
from .checkpoint import (CheckpointError, check_config, keep_numbered, load_checkpoint, restore, rng_state, save_checkpoint,
                         set_rng_state, state_digest)
from .config import TrainConfig
from .data import build_loader, pipeline_config
from .metrics import Meter, MetricsWriter, postfix
from .runtime import oom_hint, resolve_runtime
from .step import build_optimizers, optimise
from .tasks import get_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPaths:
    root: str

    @property
    def config(self):
        return os.path.join(self.root, "config.json")

    @property
    def metrics(self):
        return os.path.join(self.root, "metrics.jsonl")

    @property
    def log(self):
        return os.path.join(self.root, "train.log")

    @property
    def checkpoints(self):
        return os.path.join(self.root, "checkpoints")

    @property
    def last(self):
        return os.path.join(self.root, "checkpoints", "last.pt")


def lr_factor(step_in_phase: int, phase_steps: int, cfg: TrainConfig) -> float:
    """Linear decay from 1 to lr_final over lr_decay_frac of the phase, then flat."""
    if cfg.lr_schedule == "constant":
        return 1.0
    t = min(step_in_phase / max(cfg.lr_decay_frac * phase_steps, 1.0), 1.0)
    return 1.0 + (cfg.lr_final - 1.0) * t


def phase_at(phases, step: int):
    """(index, first step) of the phase that `step` belongs to."""
    start = 0
    for i, ph in enumerate(phases):
        if step < start + ph.steps:
            return i, start
        start += ph.steps
    return len(phases) - 1, start - phases[-1].steps


def train(cfg: TrainConfig, run_dir: str, resume: bool = False, loader=None) -> dict:
    """Train `cfg` into `run_dir`; returns a summary (last record, stop signal, digests).
    `loader`: any object with the DaliLoader interface, instead of the one cfg describes."""
    # ---- processes, device, precision ----------------------------------------------------------
    task = get_task(cfg.task)
    paths = RunPaths(run_dir)
    if not resume and os.path.exists(paths.last):
        raise FileExistsError(f"{run_dir} already holds a run ({paths.last}); pass --resume to continue it "
                              "or choose a new run directory")
    owns_group = not torch.distributed.is_initialized()
    info = distributed.setup(cfg.device)
    stop, file_log, writer, pkg_logger = None, None, None, logging.getLogger("spotart")
    pkg_level = pkg_logger.level
    try:
        rt = resolve_runtime(cfg, info.local_rank)
        if rt.device.type == "cpu" and cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)
        stop = distributed.StopSignal(info)  # SIGTERM/SIGINT: checkpoint, then leave
        if info.is_main:
            os.makedirs(paths.checkpoints, exist_ok=True)
            file_log = logging.FileHandler(paths.log)
            file_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            file_log.setLevel(logging.INFO)
            pkg_logger.addHandler(file_log)
            if pkg_logger.getEffectiveLevel() > logging.INFO:
                pkg_logger.setLevel(logging.INFO)  # train.log gets INFO whatever the console shows

        # ---- models, optimisers, scaler ----------------------------------------------------------
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        models = task.build_models(cfg)
        for m in models.values():
            m.to(rt.device, memory_format=rt.memory_format())
        optimizers, params_of = build_optimizers(task, models, cfg)
        base_lr = {n: [g["lr"] for g in o.param_groups] for n, o in optimizers.items()}
        scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.fp16)
        phases = task.phases(cfg)
        torch.manual_seed(cfg.seed + 1 + info.rank)  # dropout etc. differ per rank

        # ---- data ----------------------------------------------------------------------------
        pcfg = pipeline_config(cfg, task, rt) if loader is None else None
        if loader is None:
            loader = build_loader(cfg, task, rt, pcfg)
        batches_per_epoch = len(loader)

        # ---- resume --------------------------------------------------------------------------
        step = 0
        if resume:
            ckpt = load_checkpoint(paths.last, rt.device, hint="nothing to resume: start without --resume")
            check_config(ckpt, cfg.to_dict(), paths.last)
            restore(ckpt, models, optimizers, scaler)
            step = int(ckpt["step"])
            states = ckpt["rank_states"]
            if len(states) != info.world_size:
                raise CheckpointError(f"{paths.last} was written by {len(states)} rank(s); resume it with the same "
                                      f"number of processes, not {info.world_size}")
            set_rng_state(states[info.rank]["rng"], rt.device)
            loader.load_state_dict(states[info.rank]["data"])
            del ckpt
            log.info("resumed from %s at step %d", paths.last, step)
        if info.is_main:
            with open(paths.config + ".tmp", "w") as f:
                json.dump({"train": cfg.to_dict(), "pipeline": pcfg.to_dict() if pcfg else None,
                           "world_size": info.world_size, "device": str(rt.device), "precision": rt.precision,
                           "channels_last": rt.channels_last}, f, indent=2)
            os.replace(paths.config + ".tmp", paths.config)
        writer = MetricsWriter(paths.metrics, resume_step=step if resume else None) if info.is_main else None

        def save(at_step):
            # every rank's data position and RNG, so each continues where it stopped
            states = distributed.gather({"rng": rng_state(rt.device), "data": loader.state_dict()}, info)
            if info.is_main:
                save_checkpoint(paths.last, models=models, optimizers=optimizers, scaler=scaler, step=at_step,
                                config=cfg.to_dict(), rank_states=states)
                keep_numbered(paths.last, at_step, cfg.keep_checkpoints)
                log.info("checkpoint at step %d: %s", at_step, paths.last)

        def prepare(module):
            if cfg.compile:
                module = torch.compile(module)
            if info.enabled and any(p.requires_grad for p in module.parameters()):
                module = DDP(module, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
            return module

        # ---- the loop ------------------------------------------------------------------------
        log.info("training %s (%s preset) for %d steps on %s, %s, %d rank(s), batch %d per rank, %d batches/epoch",
                 cfg.task, cfg.preset, cfg.steps, rt.device, rt.precision, info.world_size, cfg.batch_size,
                 batches_per_epoch)
        it = iter(loader)
        phase_index, runners, record, signum = -1, None, {}, 0
        start_step, epoch = step, getattr(loader, "epoch", 0)
        meter = Meter()
        t_window, data_time, window_steps, window_images = time.perf_counter(), 0.0, 0, 0
        if rt.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(rt.device)
        bar = tqdm(total=cfg.steps, initial=step, dynamic_ncols=True, mininterval=1.0,
                   disable=not (info.is_main and cfg.progress))
        while step < cfg.steps:
            i, phase_start = phase_at(phases, step)
            phase = phases[i]
            if i != phase_index:  # entering a phase (or resuming inside one): freeze/unfreeze, wrap
                distributed.broadcast_buffers(models, info)  # BN statistics: rank 0's everywhere
                phase_index, runners = i, {n: prepare(m) for n, m in task.enter_phase(models, phase).items()}
                log.info("phase %s: steps %d..%d", phase.name, phase_start, phase_start + phase.steps - 1)
            f = lr_factor(step - phase_start, phase.steps, cfg)
            for n in phase.optimizers:
                for g, lr in zip(optimizers[n].param_groups, base_lr[n]):
                    g["lr"] = lr * f

            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:  # epoch end: the loader starts the next epoch on a new iterator
                it = iter(loader)
                batch = next(it)
            epoch = getattr(loader, "epoch", epoch)
            data_time += time.perf_counter() - t0
            window_images += next(iter(batch.values())).shape[0]  # the last batch of an epoch may be partial

            with oom_hint(cfg, rt):
                logs = optimise(task, runners, batch, phase, cfg, rt, optimizers, params_of, scaler)
            meter.add(logs)
            step += 1
            window_steps += 1
            bar.update(1)

            phase_end = phase_start + phase.steps
            if step % cfg.log_every == 0 or step == phase_end:
                values = meter.read(info)  # syncs the device
                elapsed = time.perf_counter() - t_window
                record = {"step": step, "phase": phase.name, "epoch": epoch, "lr": cfg.lr * f, **values,
                          "img_per_s": window_images * info.world_size / elapsed,
                          "step_ms": 1000 * elapsed / window_steps, "data_wait_frac": data_time / elapsed}
                if rt.device.type == "cuda":
                    record["gpu_mem_gib"] = torch.cuda.max_memory_allocated(rt.device) / 2**30
                    torch.cuda.reset_peak_memory_stats(rt.device)
                if info.is_main:
                    writer.write(record)
                    bar.set_postfix(postfix(record), refresh=False)
                t_window, data_time, window_steps, window_images = time.perf_counter(), 0.0, 0, 0

            signum = stop.requested()
            cut = cfg.stop_after and step - start_step >= cfg.stop_after
            if step % cfg.ckpt_every == 0 or step == cfg.steps or signum or cut:
                save(step)
            if signum or cut:
                break
        bar.close()

        digests = None
        if info.enabled:  # DDP keeps replicas identical; check it, cheaply, once per run
            distributed.broadcast_buffers(models, info)  # each rank's last forward updated its own BN stats
            digests = distributed.gather(state_digest(models), info)
            if len(set(digests)) != 1:
                log.error("ranks ended with different weights: %s", digests)
        summary = {"step": step, "finished": step >= cfg.steps, "signal": signum, "last": record,
                   "rank_digests": digests}
        if info.is_main:
            writer.write({"step": step, "event": "end", **{k: v for k, v in summary.items() if k != "last"}})
            log.info("stopped at step %d%s", step, f" on signal {signum}" if signum else "")
        return summary
    finally:
        if writer is not None:
            writer.close()
        if stop is not None:
            stop.close()
        if file_log is not None:
            pkg_logger.removeHandler(file_log)
            pkg_logger.setLevel(pkg_level)
            file_log.close()
        if owns_group:
            distributed.teardown()

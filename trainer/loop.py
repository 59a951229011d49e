"""`train(cfg, run_dir)`: the one training loop, the same for every task.

Read top to bottom: `train` sets up (processes, device, models, data, resume) and then runs
`_loop`, which fits on one screen: phase entry, learning rate, batch, step, metrics,
checkpoints, stop signals. The task (`tasks.py`) supplies the models, the phases and a
`train_step` returning one loss per optimiser; nothing here knows about autoencoders or
discriminators.

Several losses in one step (a GAN) share one forward: loss i is backpropagated only into its
optimiser's parameters (`step.optimise`), keeping the graph for the next, and all of the phase's
optimisers step afterwards. Metrics stay on the device until a log step (one sync per window).
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from . import distributed
from .baddata import SkippedLog, too_many
from .checkpoint import (CheckpointError, CheckpointWriteError, check_config, keep_numbered, load_latest, restore,
                         rng_state, save_checkpoint, set_rng_state, state_digest)
from .config import TrainConfig
from .data import build_loader, endless, pipeline_config
from .guard import StepGuard, diverged
from .metrics import Meter, MetricsWriter, Window, postfix
from .models import Training, build_training
from .runtime import Runtime, determinism, oom_hint, resolve_runtime
from .step import optimise

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

    @property
    def skipped(self):
        return os.path.join(self.root, "skipped.jsonl")


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
    paths = RunPaths(run_dir)
    if not resume and os.path.exists(paths.last):
        raise FileExistsError(f"{run_dir} already holds a run ({paths.last}); pass --resume to continue it "
                              "or choose a new run directory")
    with determinism(cfg.deterministic), _processes(cfg, paths) as (info, rt, stop):
        tr = build_training(cfg, rt)
        torch.manual_seed(cfg.seed + 1 + info.rank)  # dropout etc. differ per rank
        pcfg = pipeline_config(cfg, rt)
        skipped = SkippedLog(paths.skipped, info.rank)
        loader = loader if loader is not None else build_loader(cfg, pcfg, rt.device, on_bad=skipped.add)
        step = _resume(paths, cfg, tr, loader, info, rt) if resume else 0
        if info.is_main:
            skipped.truncate(step)  # samples found after the checkpoint are found again
            _write_json(paths.config, {"train": cfg.to_dict(), "pipeline": pcfg.to_dict(),
                                       "world_size": info.world_size, "device": str(rt.device),
                                       "precision": rt.precision, "channels_last": rt.channels_last})
        log.info("training %s (%s preset) for %d steps on %s, %s, %d rank(s), batch %d per rank, %d batches/epoch",
                 cfg.task, cfg.preset, cfg.steps, rt.device, rt.precision, info.world_size, cfg.batch_size,
                 len(loader))
        # a fresh start drops the lines of a run killed before its first checkpoint
        writer = MetricsWriter(paths.metrics, resume_step=step) if info.is_main else None
        monitor = _monitor(cfg, tr, rt) if info.is_main else None
        try:
            step, record, signum, halt = _loop(cfg, tr, loader, step, paths, info, rt, stop, writer, skipped, monitor)
            summary = _finish(cfg, tr, step, record, signum, halt, info, writer)
        finally:
            if writer is not None:
                writer.close()
        return summary


def _loop(cfg, tr: Training, loader, step, paths, info, rt, stop, writer, skipped, monitor=None):
    """Steps from `step` to cfg.steps (or a stop signal, stop_after, too many bad samples or
    non-finite steps). -> (step, last record, signal, the message of a halt)."""
    phases = tr.task.phases(cfg)
    batches, meter, window, guard = endless(loader), Meter(), Window(), StepGuard(tr.models, rt.device)
    phase_index, runners, record, signum, start_step, halt = -1, None, {}, 0, step, None
    bar = tqdm(total=cfg.steps, initial=step, dynamic_ncols=True, mininterval=1.0,
               disable=not (info.is_main and cfg.progress))
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    while step < cfg.steps:
        i, phase_start = phase_at(phases, step)
        phase = phases[i]
        if i != phase_index:  # entering a phase (or resuming inside one): freeze/unfreeze, wrap
            phase_index, runners = i, _enter_phase(tr, phase, cfg, info, rt)
        f = lr_factor(step - phase_start, phase.steps, cfg)
        _set_lr(tr, phase, f)

        t0 = time.perf_counter()
        skipped.step, skipped.epoch = step + 1, getattr(loader, "epoch", 0)  # where a bad sample is found
        batch = next(batches)
        window.add(wait=time.perf_counter() - t0, images=next(iter(batch.values())).shape[0])  # last may be partial
        with oom_hint(cfg, rt):
            logs = optimise(tr.task, runners, batch, phase, cfg, rt, tr.optimizers, tr.params_of, tr.scaler, guard)
            meter.add(logs, skipped=guard.last)
        step += 1
        bar.update(1)

        signum, bad = stop.agree(len(getattr(loader, "bad", ())))  # samples left out, all ranks
        if step % cfg.log_every == 0 or step == phase_start + phase.steps:
            record = {"step": step, "phase": phase.name, "epoch": getattr(loader, "epoch", 0), "lr": cfg.lr * f,
                      **meter.read(info), **guard.read(), "bad_samples": bad, **window.read(info.world_size),
                      **_memory(rt)}  # read() syncs
            halt = diverged(cfg, record["skipped_streak"], step, rt.fp16)
            if writer is not None:
                writer.write(record)
                bar.set_postfix(postfix(record), refresh=False)
        if monitor is not None and (step % cfg.monitor_every == 0 or step == cfg.steps):
            knn = monitor(tr.task.trunk(tr.models))
            writer.write({"step": step, "phase": phase.name, **knn})
            window.pause(knn["knn_seconds"])  # not the training's time
        halt = halt or too_many(bad, cfg.max_bad_samples, paths.skipped, cfg.shards, paths.root, step)
        cut = cfg.stop_after and step - start_step >= cfg.stop_after
        end = bool(signum or cut or halt)
        if step % cfg.ckpt_every == 0 or step == cfg.steps or end:
            _save(paths, cfg, tr, loader, step, info, rt, final=end or step == cfg.steps)
            if info.is_main:
                _picture(paths, cfg, tr, batch, step)
        if end:
            break
    bar.close()
    return step, record, signum, halt


# ---- set-up and tear-down ------------------------------------------------------------------------

@contextmanager
def _processes(cfg: TrainConfig, paths: RunPaths):
    """Process group, device and precision, stop signals, and train.log (INFO, rank 0) for the
    duration of the run; all undone on the way out, whatever ends the run."""
    owns_group = not torch.distributed.is_initialized()
    info = distributed.setup(cfg.device)
    stop, file_log, pkg_logger = None, None, logging.getLogger("spotart")
    pkg_level, clean = pkg_logger.level, False
    try:
        rt = resolve_runtime(cfg, info.local_rank, info.world_size)
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
        yield info, rt, stop
        clean = True
    finally:
        if stop is not None:
            stop.close()
        if file_log is not None:
            pkg_logger.removeHandler(file_log)
            pkg_logger.setLevel(pkg_level)
            file_log.close()
        if owns_group:
            distributed.teardown(sync=clean)


def _resume(paths: RunPaths, cfg, tr: Training, loader, info, rt: Runtime) -> int:
    """Weights, optimisers, scaler, this rank's RNG and data position from last.pt (previous.pt
    when last.pt cannot be read) -> its step."""
    ckpt, path = load_latest(paths.last, rt.device, hint="nothing to resume: start without --resume")
    check_config(ckpt, cfg.to_dict(), path)
    restore(ckpt, tr.models, tr.optimizers, tr.scaler, path)
    states = ckpt["rank_states"]
    if len(states) != info.world_size:
        raise CheckpointError(f"{path} was written by {len(states)} rank(s); resume it with the same "
                              f"number of processes, not {info.world_size}")
    set_rng_state(states[info.rank]["rng"], rt.device)
    _restore_data(loader, states[info.rank]["data"])
    log.info("resumed from %s at step %d", path, int(ckpt["step"]))
    return int(ckpt["step"])


def _monitor(cfg, tr: Training, rt):
    """The k-NN monitor of --monitor-shards (rank 0 only; the ranks' weights are identical)."""
    if not cfg.monitor_shards:
        return None
    from .monitor import KnnMonitor

    return KnnMonitor(cfg.monitor_shards, rt, cfg.image_size, k=cfg.monitor_k, max_images=cfg.monitor_images,
                      input_norm=tr.task.input_norm(cfg), num_threads=cfg.num_threads)


def _restore_data(loader, state: dict):
    """The loader's saved position; shards changed since (verify-shards --repair) start the saved
    epoch afresh, said in the log."""
    from ..pipeline.loader import ShardsChanged

    try:
        loader.load_state_dict(state)
    except ShardsChanged as err:
        log.warning("%s: the data restarts at the beginning of epoch %d; the run goes on, but not as an exact "
                    "continuation", err, state["epoch"])
        loader.restart(state["epoch"])


def _write_json(path: str, obj: dict):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


# ---- pieces of the loop --------------------------------------------------------------------------

def _enter_phase(tr: Training, phase, cfg, info, rt) -> dict:
    """Freeze/unfreeze for `phase` and wrap the modules the step runs (compile, DDP)."""
    distributed.broadcast_buffers(tr.models, info)  # BN statistics: rank 0's everywhere
    log.info("phase %s: %d steps", phase.name, phase.steps)

    def prepare(module):
        if cfg.compile:
            module = torch.compile(module)
        if info.enabled and any(p.requires_grad for p in module.parameters()):
            module = DDP(module, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        return module

    return {n: prepare(m) for n, m in tr.task.enter_phase(tr.models, phase).items()}


def _set_lr(tr: Training, phase, factor: float):
    """The schedule's factor on every group's base rate of the phase's optimisers."""
    for n in phase.optimizers:
        for g, lr in zip(tr.optimizers[n].param_groups, tr.base_lr[n], strict=True):
            g["lr"] = lr * factor


def _memory(rt: Runtime) -> dict:
    """Peak GPU memory of the window (then reset); nothing on the CPU."""
    if rt.device.type != "cuda":
        return {}
    peak = torch.cuda.max_memory_allocated(rt.device) / 2**30
    torch.cuda.reset_peak_memory_stats(rt.device)
    return {"gpu_mem_gib": peak}


def _save(paths: RunPaths, cfg, tr: Training, loader, step: int, info, rt, final: bool = True):
    """Checkpoint policy's action: every rank's data position and RNG, so each continues where it
    stopped; rank 0 writes last.pt atomically (and keeps numbered copies on request). A periodic
    checkpoint that finds the disk full is an error in the log and training goes on (the last
    one written stays the resume point; the next tries again); the run's final one raises."""
    states = distributed.gather({"rng": rng_state(rt.device), "data": loader.state_dict()}, info)
    if info.is_main:
        try:
            save_checkpoint(paths.last, models=tr.models, optimizers=tr.optimizers, scaler=tr.scaler, step=step,
                            config=cfg.to_dict(), rank_states=states)
            keep_numbered(paths.last, step, cfg.keep_checkpoints)
        except CheckpointWriteError as err:
            kept = (f"{paths.last} still holds the last checkpoint written" if os.path.exists(paths.last)
                    else "no checkpoint yet")
            if final:
                raise CheckpointWriteError(f"checkpoint at step {step} not written: {err}; {kept}. Free space, then "
                                           f"continue with `spotart train {paths.root} --resume`", err.full) from None
            log.error("checkpoint at step %d not written: %s; %s. Training goes on; the next checkpoint tries again",
                      step, err, kept)
            return
        log.info("checkpoint at step %d: %s", step, paths.last)


def _picture(paths: RunPaths, cfg, tr: Training, batch: dict, step: int):
    """RUN/visuals/step_N.png: the last batch and what the networks make of it. A picture that
    cannot be drawn is a warning, never the end of a run."""
    from .visuals import save_task_grid

    path = os.path.join(paths.root, "visuals", f"step_{step:08d}.png")
    try:
        save_task_grid(tr.task, tr.models, batch, cfg, path)
    except Exception as err:  # noqa: BLE001 - drawing must not cost the run
        log.warning("could not draw %s: %s: %s", path, type(err).__name__, err)


def _finish(cfg, tr: Training, step, record, signum, halt, info, writer) -> dict:
    digests = None
    if info.enabled:  # DDP keeps replicas identical; check it, cheaply, once per run
        distributed.broadcast_buffers(tr.models, info)  # each rank's last forward updated its own BN stats
        digests = distributed.gather(state_digest(tr.models), info)
        if len(set(digests)) != 1:
            log.error("ranks ended with different weights: %s", digests)
    summary = {"step": step, "finished": step >= cfg.steps, "signal": signum, "halted": halt, "last": record,
               "rank_digests": digests}
    if writer is not None:
        writer.write({"step": step, "event": "end", **{k: v for k, v in summary.items() if k != "last"}})
        log.info("stopped at step %d%s", step, f" on signal {signum}" if signum else "")
        if halt:
            log.error("%s", halt)
    return summary

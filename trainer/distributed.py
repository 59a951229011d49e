"""torchrun / DDP plumbing: process group, rank info, gathering per-rank state, stop signals.

`torchrun --nproc_per_node=K spotart train ...` sets RANK/WORLD_SIZE/LOCAL_RANK; we start one
process group (NCCL on GPU, gloo on CPU), also for K = 1: the DDP path then runs on a single GPU
(how it is tested on a one-GPU machine). A plain `spotart train` starts none. Each rank reads its own DALI shard (the loader asks
torch.distributed for rank and world size). Only rank 0 logs and writes checkpoints, but every
rank's data position and RNG state go into the checkpoint, so a resumed run continues exactly.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    grouped: bool = False  # a process group is up (launched by torchrun), whatever the world size

    @property
    def enabled(self) -> bool:
        return self.grouped

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> DistInfo:
    """Initialise the process group when launched by torchrun (or with more than one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))
    if world <= 1 and not launched:
        return DistInfo()
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), grouped=True)


def teardown(sync: bool = False):
    """`sync` (a run that ended normally): wait for every rank before the group goes, so no rank
    tears its connections down while another is still in its last collective (a gloo rank whose
    peer vanished mid-operation can abort at exit). Not after an error: the failed rank would
    leave the others waiting on a barrier it never reaches."""
    if dist.is_initialized():
        if sync and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def gather(obj, info: DistInfo) -> list:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t = t / info.world_size
    return t


def broadcast_buffers(models: dict, info: DistInfo):
    """Rank 0's buffers (BatchNorm running statistics) to every rank. DDP does this at the start
    of each forward of a wrapped module; frozen modules (not wrapped) and the state after the
    last step need it explicitly, or a frozen encoder would differ between ranks."""
    if not info.enabled:
        return
    for name in sorted(models):
        for buf in models[name].buffers():
            dist.broadcast(buf, src=0)


class StopSignal:
    """SIGTERM/SIGINT set a flag; the loop checkpoints and leaves at the end of the step.

    With several ranks the flag is agreed on with an all-reduce (MAX) over a CPU (gloo) group every
    step: each rank must leave after the same step, or the others would wait in a collective
    forever. A CPU group keeps this off the GPU stream, so it adds no device synchronisation.
    A second SIGINT raises KeyboardInterrupt at once."""

    def __init__(self, info: DistInfo):
        self.info = info
        self.signum = 0
        self._old = {}
        self._group = None
        if info.enabled:
            self._group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received %s: saving a checkpoint after this step", signal.Signals(signum).name)

    def requested(self) -> int:
        """The signal number every rank agrees to stop on (0: keep going)."""
        return self.agree()[0]

    def agree(self, count: int = 0) -> tuple[int, int]:
        """(the signal every rank agrees to stop on (0: keep going), `count` summed over the
        ranks): one all-gather of two numbers per step on the CPU group."""
        if not self.info.enabled:
            return self.signum, count
        mine = torch.tensor([self.signum, count], dtype=torch.int64)
        every = [torch.zeros_like(mine) for _ in range(self.info.world_size)]
        dist.all_gather(every, mine, group=self._group)
        table = torch.stack(every)
        return int(table[:, 0].max()), int(table[:, 1].sum())

    def close(self):
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}

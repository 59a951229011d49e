"""Background samplers of CPU time per thread (/proc/self/task) and GPU utilisation/memory (NVML).

Both run in one daemon thread at a fixed interval and keep raw samples; `Marks` records when
each measured stage started and ended, so the figures of a stage are computed afterwards from
the samples inside its window. Sampling /proc costs ~0.1 ms per thread per sample: negligible
at 10 Hz, and it needs no extra dependency (psutil is not one)."""

from __future__ import annotations

import logging
import os
import re
import threading
import time

log = logging.getLogger(__name__)

_TICK = os.sysconf("SC_CLK_TCK")


def thread_group(name: str) -> str:
    """Thread name with its numbers folded, so DALI's worker pool is one group:
    "[DALI][TP3]Exec" -> "[DALI][TP#]Exec"."""
    return re.sub(r"\d+", "#", name)


def is_pipeline_thread(group: str) -> bool:
    # DALI's worker pool and executor are "[DALI]..."; the readers' file prefetcher is
    # "PrefetchWorker"; the numba operator runs on the worker pool.
    return group.startswith("[DALI]") or group.startswith("PrefetchWorker")


def read_threads() -> dict[int, tuple[str, float]]:
    """tid -> (thread name, CPU seconds) of this process. schedstat counts nanoseconds on the
    CPU; stat's utime+stime (clock ticks, 10 ms) is the fallback on kernels without it. The main
    thread (the training step, the Python side of the loader) is named "main": its OS name is
    the program's, which torch's OpenMP workers inherit too."""
    out, pid = {}, os.getpid()
    for tid in os.listdir("/proc/self/task"):
        base = f"/proc/self/task/{tid}"
        try:
            with open(f"{base}/stat") as f:
                stat = f.read()
            name = stat[stat.index("(") + 1: stat.rindex(")")].strip()
            try:
                with open(f"{base}/schedstat") as f:
                    cpu = int(f.read().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                fields = stat[stat.rindex(")") + 2:].split()
                cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        except OSError:  # the thread ended between listdir and open
            continue
        out[int(tid)] = ("main" if int(tid) == pid else name, cpu)
    return out


class _Nvml:
    """GPU utilisation (%) and memory used (GiB) of one device; None when NVML is unavailable."""

    def __init__(self, index: int):
        import pynvml

        pynvml.nvmlInit()
        self.nv = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)

    def read(self) -> tuple[float, float]:
        util = self.nv.nvmlDeviceGetUtilizationRates(self.handle).gpu
        mem = self.nv.nvmlDeviceGetMemoryInfo(self.handle).used / 2**30
        return float(util), float(mem)

    @classmethod
    def open(cls, device) -> "_Nvml | None":
        if getattr(device, "type", "cpu") != "cuda":
            return None
        try:
            return cls(device.index or 0)
        except Exception as err:  # not installed, no driver: the report says so
            log.info("NVML unavailable (%s); no GPU utilisation timeline", err)
            return None


class Sampler:
    def __init__(self, interval: float, device=None):
        self.interval = interval
        self.nvml = _Nvml.open(device)
        self.cpu: list[tuple[float, dict]] = []   # (time, tid -> (name, cpu s))
        self.gpu: list[tuple[float, float, float]] = []  # (time, util %, mem GiB)
        self.marks: list[tuple[str, float, float]] = []  # (stage, start, end)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spotart-sampler", daemon=True)
        self.t0 = time.perf_counter()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self):
        now = time.perf_counter()
        self.cpu.append((now, read_threads()))
        if self.nvml is not None:
            self.gpu.append((now, *self.nvml.read()))

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def stage(self, name: str):
        """Context manager marking a measured stage's window."""
        sampler = self

        class _Mark:
            def __enter__(self):
                self.start = time.perf_counter()
                sampler._sample()  # a sample at each edge: short stages still get a window
                return self

            def __exit__(self, *exc):
                sampler._sample()
                sampler.marks.append((name, self.start, time.perf_counter()))

        return _Mark()

    # ---- figures ---------------------------------------------------------------------------
    def cpu_by_group(self, windows: list[tuple[float, float]]) -> dict[str, dict]:
        """Per thread group over the (start, end) windows: utilisation in cores (CPU s / wall s,
        wall-weighted across windows) and the most threads seen in one window."""
        cpu, wall, threads = {}, 0.0, {}
        for start, end in windows:
            groups, w = self._cpu_window(start, end)
            wall += w
            for name, g in groups.items():
                cpu[name] = cpu.get(name, 0.0) + g["cores"] * w
                threads[name] = max(threads.get(name, 0), g["threads"])
        if wall <= 0:
            return {}
        out = {name: {"cores": c / wall, "threads": threads[name]} for name, c in cpu.items()}
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["cores"]))

    def _cpu_window(self, start: float, end: float) -> tuple[dict[str, dict], float]:
        inside = [(t, s) for t, s in self.cpu if start <= t <= end]
        if len(inside) < 2:
            return {}, 0.0
        (t_a, a), (t_b, _) = inside[0], inside[-1]
        wall = max(t_b - t_a, 1e-9)
        # each thread's last reading inside the window: one that ended before the window's end
        # still counts what it used (it would vanish if only the last sample were read)
        last: dict[int, tuple[str, float]] = {}
        for _, sample in inside:
            last.update(sample)
        groups: dict[str, dict] = {}
        for tid, (name, cpu_b) in last.items():
            cpu_a = a[tid][1] if tid in a else 0.0  # a thread born inside the window counts from 0
            g = groups.setdefault(thread_group(name), {"cores": 0.0, "threads": 0})
            g["cores"] += max(cpu_b - cpu_a, 0.0) / wall
            g["threads"] += 1
        return groups, wall

    def cpu_timeline(self) -> list[dict]:
        """Process and pipeline-thread utilisation (cores) between consecutive samples."""
        out = []
        t_a, a = self.cpu[0] if self.cpu else (0.0, {})
        for t_b, b in self.cpu[1:]:
            wall = t_b - t_a
            if wall < 0.5 * self.interval:  # the extra samples at stage edges: too short to rate
                continue
            total = pipe = 0.0
            for tid, (name, cpu_b) in b.items():
                d = max(cpu_b - a.get(tid, (name, 0.0))[1], 0.0)
                total += d
                if is_pipeline_thread(thread_group(name)):
                    pipe += d
            out.append({"t": t_b - self.t0, "process_cores": total / wall, "pipeline_cores": pipe / wall})
            t_a, a = t_b, b
        return out

    def gpu_timeline(self) -> list[dict]:
        return [{"t": t - self.t0, "util_pct": u, "mem_gib": m} for t, u, m in self.gpu]

    def gpu_summary(self, windows: list[tuple[float, float]]) -> dict | None:
        inside = [(u, m) for t, u, m in self.gpu if any(s <= t <= e for s, e in windows)]
        if not inside:
            return None
        return {"util_pct_mean": sum(u for u, _ in inside) / len(inside),
                "mem_gib_max": max(m for _, m in inside), "samples": len(inside)}

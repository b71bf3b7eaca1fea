"""CPU time of server processes over a time window, sampled from /proc.

A benchmark's client processes start their measured window on their own
clock; sampling the servers' cumulative CPU time every few tens of
milliseconds and interpolating at the window's edges gives the CPU spent
inside it without coordinating the two.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system time of every thread of ``pid`` (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class CpuSampler:
    def __init__(self, pids: list[int], interval: float = 0.05) -> None:
        self.pids = list(pids)
        self.interval = interval
        self.times: list[float] = []
        self.cpu: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        """Take a sample now (also called by the benchmark right after a window closes)."""
        with self._lock:
            total = sum(c for pid in self.pids if (c := process_cpu_seconds(pid)) is not None)
            self.times.append(time.time())
            self.cpu.append(total)

    def at(self, when: float) -> float | None:
        """Cumulative CPU seconds at ``when``, linearly interpolated between samples."""
        with self._lock:
            times, cpu = list(self.times), list(self.cpu)
        i = bisect.bisect_left(times, when)
        if i == 0 or i >= len(times):
            return None
        t0, t1 = times[i - 1], times[i]
        frac = (when - t0) / (t1 - t0) if t1 > t0 else 0.0
        return cpu[i - 1] + frac * (cpu[i] - cpu[i - 1])

    def between(self, start: float, end: float) -> float | None:
        a, b = self.at(start), self.at(end)
        return None if a is None or b is None else b - a

"""Clocks and statistics for latency measurement.

CPU work is timed with a monotonic wall clock (`time.perf_counter`) around each call. CUDA
work is timed with CUDA events recorded on the current stream around each call, then the
end event is waited for: the launch cost is included (the GPU idles while the host launches),
so a batch-1 number is the latency a caller sees, not just kernel time.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch


class WallClock:
    """Milliseconds of one synchronous call, by `time.perf_counter` (monotonic, ~100 ns)."""

    kind = "perf_counter"

    def time(self, call: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        call()
        return (time.perf_counter() - t0) * 1e3

    def sync(self) -> None:
        pass


class CudaClock:
    """Milliseconds of one call on the current CUDA stream, by CUDA events."""

    kind = "cuda-events"

    def __init__(self):
        self.torch = torch
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def time(self, call: Callable[[], object]) -> float:
        self.start.record()
        call()
        self.end.record()
        self.end.synchronize()
        return self.start.elapsed_time(self.end)

    def sync(self) -> None:
        self.torch.cuda.synchronize()


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of an already sorted list."""
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(times_ms: list[float]) -> dict:
    """median, p90, min, max and inter-quartile range (ms) of per-call times."""
    s = sorted(times_ms)
    return {
        "median_ms": quantile(s, 0.5),
        "p90_ms": quantile(s, 0.9),
        "min_ms": s[0],
        "max_ms": s[-1],
        "iqr_ms": quantile(s, 0.75) - quantile(s, 0.25),
    }

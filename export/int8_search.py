"""Accuracy-aware INT8: when static quantization loses more than the gate allows on validation,
try the fixes cheapest first and ship the fastest file within the gate.

The attempts, in order, each recorded with its validation drop and measured speed-up over fp32:
  1. the requested calibration (minmax by default);
  2. the other calibration methods (entropy, percentile); if any is within the gate, stop;
  3. with the best of them, keep the layers that lose most (ONNX Runtime's QDQ debugger) in fp32,
     one more at a time, up to `max_fp32_layers`; stop at the first within the gate;
  4. quantization-aware training (`compress.export.qat`), when the caller can run it (it needs the
     PyTorch checkpoint, not only an ONNX file).
Of the attempts within the gate the fastest is shipped (a layer kept in fp32 costs speed). The
gate reads validation when there is one; the shipped file is then measured on the whole test
split (reported, never chosen on).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from compress.export.runtime import cpu_runner

SPEED_BATCH = 64  # images per timed call (the pipeline's bench reports 1 and 64)


@dataclass
class Attempt:
    """One INT8 file tried: how it was made, what it lost on the gate's split, how fast it runs."""

    name: str  # "calibration minmax", "fp32 layers: conv1", "QAT 2 epochs"
    file: Path
    method: str
    excluded: tuple[str, ...]
    drop: float  # points of top-1 lost on the gate's split
    fp32_acc: float
    int8_acc: float
    speedup: float | None = None  # fp32 time / INT8 time, ORT CPU, batch SPEED_BATCH
    qat_epochs: int = 0

    def record(self, max_drop: float) -> dict:
        return {"attempt": self.name, "method": self.method, "excluded": list(self.excluded),
                "qat_epochs": self.qat_epochs, "drop": self.drop, "fp32_acc": self.fp32_acc,
                "int8_acc": self.int8_acc, "speedup": self.speedup, "within_gate": self.drop <= max_drop}


def speedup(fp32: Path, int8: Path, x: np.ndarray, seconds: float = 0.6, runtime: str = "ort") -> float:
    """fp32 time / INT8 time on the CPU (ONNX Runtime or OpenVINO), calls interleaved so both see
    the same machine state; the median of each after two warm-up calls."""
    runners = [cpu_runner(fp32, runtime), cpu_runner(int8, runtime)]
    times: list[list[float]] = [[], []]
    for run in runners:
        for _ in range(2):
            run(x)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times[1]) < 5:
        for i, run in enumerate(runners):
            t0 = time.perf_counter()
            run(x)
            times[i].append(time.perf_counter() - t0)
    return round(statistics.median(times[0]) / statistics.median(times[1]), 2)


def search(first: Attempt, try_file: Callable[[str, str, tuple[str, ...]], Attempt],
           worst: Callable[[Attempt], list[str]], max_drop: float, *, methods: tuple[str, ...],
           max_fp32_layers: int = 5, qat: Callable[[Attempt], Attempt | None] | None = None,
           timed: Callable[[Attempt], None] = lambda a: None) -> tuple[Attempt | None, list[Attempt]]:
    """(the attempt to ship or None, every attempt in order). `try_file(name, method, excluded)`
    makes and scores one file; `worst(attempt)` names its layers that lose most; `timed` sets an
    attempt's speed-up; `qat(best)` makes the QAT attempt with the best calibration so far (None:
    not possible here)."""
    tried = [first]
    timed(first)
    if first.drop <= max_drop:
        return first, tried
    for method in methods:  # 2. other calibrations
        if method != first.method:
            tried.append(try_file(f"calibration {method}", method, first.excluded))
            timed(tried[-1])
    ok = [a for a in tried if a.drop <= max_drop]
    if ok:
        return _fastest(ok), tried
    best = min(tried, key=lambda a: a.drop)
    excluded = list(best.excluded)
    for layer in worst(best)[:max_fp32_layers] if max_fp32_layers > 0 else []:  # 3. worst layers in fp32
        if layer in excluded:
            continue
        excluded.append(layer)
        tried.append(try_file(f"fp32 layers: {', '.join(excluded)}", best.method, tuple(excluded)))
        timed(tried[-1])
        if tried[-1].drop <= max_drop:
            return tried[-1], tried
    if qat is not None:  # 4. quantization-aware training
        attempt = qat(best)
        if attempt is not None:
            tried.append(attempt)
            timed(attempt)
            if attempt.drop <= max_drop:
                return attempt, tried
    return None, tried


def _fastest(attempts: list[Attempt]) -> Attempt:
    return max(attempts, key=lambda a: (a.speedup or 0.0, -a.drop))

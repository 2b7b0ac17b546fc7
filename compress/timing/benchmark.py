"""`run_benchmark`: models in; bench.json, bench.csv, bench.png out (the `compress bench` command)."""
from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from compress.console import notice
from compress.env import cuda_index, machine, resolve_device
from compress.errors import CompressError
from compress.io import check_writable
from compress.timing.latency import Settings, measure
from compress.timing.models import BenchModel, collect_models
from compress.timing.output import fastest, write_csv, write_json
from compress.timing.ov_runtimes import compile_config
from compress.timing.plot import plot_bench
from compress.timing.registry import get_runtimes
from compress.timing.runtimes import Context

FILES = ("bench.json", "bench.csv", "bench.png")


def default_out(run: Path | str | None) -> Path:
    return Path(run) / "bench" if run is not None else Path("bench_results")


def validate(settings: Settings) -> None:
    """Bad settings are errors before anything is loaded or measured."""
    if not settings.batch_sizes:
        raise CompressError("no batch sizes given", "e.g. --batch-sizes 1,32,256")
    bad = [b for b in settings.batch_sizes if not isinstance(b, int) or b <= 0]
    if bad:
        raise CompressError(f"batch sizes must be positive integers (got {bad[0]})", "e.g. --batch-sizes 1,32,256")
    for name, value, low in (("warm-up", settings.warmup, 0), ("repeats", settings.repeats, 1),
                             ("threads", settings.threads, 1)):
        if value is not None and value < low:
            raise CompressError(f"{name} must be >= {low} (got {value})")
    get_runtimes(list(settings.runtimes) if settings.runtimes is not None else None)


def run_benchmark(models: list[Path | str] | None = None, run: Path | str | None = None,
                  out: Path | str | None = None, settings: Settings | None = None, *,
                  bench_models: list[BenchModel] | None = None, force: bool = False, show: bool = True) -> dict:
    """Measure the models of `run` (a run or suite folder) and/or the files `models`; write the results.

    Returns the bench.json content (plus "files": the paths written). `bench_models` adds
    models built in memory (scripts, tests). The pipeline calls it with `run=RUN_DIR`,
    `settings=Settings.quick()`, `force=True`.
    """
    settings = settings or Settings()
    validate(settings)
    out = Path(out) if out is not None else default_out(run)
    for name in FILES:  # refuse before measuring for minutes
        check_writable(out / name, force=force)
    found = collect_models(list(models or []), run) if (models or run is not None) else []
    found += bench_models or []
    if not found:
        raise CompressError("no models to benchmark", "pass model files (dense.pt, Omp_...pt) or --run RUN_DIR")

    load_before = busy_check()
    with timing_session(settings) as (ctx, runtimes, device):
        results = measure(found, runtimes, settings, ctx, show=show)
    report = {
        "format": "compress-bench/1",
        "machine": {**machine(), "load_avg_1m": {"before": load_before, "after": _load()}},
        "settings": {**settings.to_dict(), "runtimes": [r.name for r in runtimes], "threads": ctx.threads,
                     "device": str(device), "reference": found[0].name,
                     "openvino": {name: compile_config(ctx.threads, hint) for name, hint in
                                  (("openvino-cpu", "f32"), ("openvino-cpu-bf16", "bf16"), ("openvino-cpu-int8", "f32"))
                                  if name in [r.name for r in runtimes]},
                     "cudnn_benchmark": device.type == "cuda",
                     "clock": "around each call; per row: cuda-events (torch on CUDA, synchronised) or "
                              "perf_counter (CPU, ONNX Runtime: synchronous calls)"},
        "models": [m.info() for m in found],
        "results": results,
    }
    report["fastest"] = fastest(report)
    report["files"] = write_outputs(report, out)
    return report


@contextmanager
def timing_session(settings: Settings) -> Iterator[tuple[Context, list, torch.device]]:
    """The runtimes, device and a Context (thread count set, a scratch folder for ONNX files)
    for measuring under `settings`; torch's thread count and cuDNN mode are restored after."""
    runtimes = get_runtimes(list(settings.runtimes) if settings.runtimes is not None else None)
    device = resolve_device(settings.device)
    threads_before = torch.get_num_threads()
    threads = settings.threads or threads_before
    torch.set_num_threads(threads)
    cudnn_before = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        torch.cuda.set_device(cuda_index(device))  # CUDA events and graphs live on the current device
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels, as deployments do
    try:
        with tempfile.TemporaryDirectory(prefix="compress-bench-") as work:
            yield (Context(device=device, threads=threads, workdir=Path(work),
                           explicit=frozenset(settings.runtimes or ()), spin=settings.ort_spinning), runtimes, device)
    finally:
        torch.set_num_threads(threads_before)
        torch.backends.cudnn.benchmark = cudnn_before


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def others_busy(seconds: float = 0.5) -> float | None:
    """Fraction of all CPU time other processes used over `seconds` while we sat idle.

    Sampled from /proc/stat now, unlike the 1-minute load average, which still counts our
    own training when the benchmark starts at the end of a pruning run.
    """
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + (values[4] if len(values) > 4 else 0)  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def busy_check() -> float | None:
    """Warn when other processes compete for the CPU: timings then carry their noise."""
    load, cpus = _load(), os.cpu_count() or 1
    busy = others_busy()
    if busy is not None and busy > 0.25:
        notice(f"the machine is busy (other processes use {100 * busy:.0f}% of {cpus} CPUs): CPU timings will be "
               "noisy, multi-threaded ones most (threads wait for each other at every op); --threads 1 helps")
    return load


def write_outputs(report: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "bench.json"), "csv": str(out / "bench.csv"), "png": str(out / "bench.png")}
    write_csv(report, out / "bench.csv")
    plot_bench(report, out / "bench.png")
    write_json({**report, "files": files}, out / "bench.json")
    return files

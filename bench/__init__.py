"""Measured speed and size of dense vs pruned models on real runtimes (`compress bench`).

    from bench import run_benchmark, Settings
    report = run_benchmark(run="runs/vgg13_filter_0.40_imp3", settings=Settings.quick())

Library: `benchmark.run_benchmark` (files in, bench.json/csv/png out), `latency.measure`
(the interleaved timing loop), `models` (which checkpoints), `runtimes` (how each runs).
Scripts: `python -m bench.train_throughput`, `python -m bench.filter_speedup`.
"""
from .benchmark import run_benchmark
from .latency import Settings, measure
from .models import BenchModel, collect_models
from .runtimes import RUNTIMES, Skipped, get_runtimes

__all__ = ["run_benchmark", "Settings", "measure", "BenchModel", "collect_models", "RUNTIMES", "Skipped",
           "get_runtimes"]

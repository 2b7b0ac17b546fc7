"""Measured speed and size of dense vs pruned models on real runtimes (`compress bench`).

    from bench import run_benchmark, Settings
    report = run_benchmark(run="runs/vgg13_filter_0.40_imp3", settings=Settings.quick())

Library (`bench/harness/`): `benchmark.run_benchmark` (files in, bench.json/csv/png out),
`latency.measure` (the interleaved timing loop), `models` (which checkpoints), `runtimes` (how
each runs), `timing`, `output`, `plot`, `latency_table` (per-layer latency for the planner).
Measurement scripts (`bench/*.py`, each `python -m bench.NAME`): gpu_kit, train_throughput,
filter_speedup, quantize_speedup, speedup_planner, semi_structured.
"""
from bench.harness.benchmark import run_benchmark
from bench.harness.latency import Settings, measure
from bench.harness.models import BenchModel, collect_models
from bench.harness.registry import RUNTIMES, get_runtimes
from bench.harness.runtimes import Skipped

__all__ = ["run_benchmark", "Settings", "measure", "BenchModel", "collect_models", "RUNTIMES", "Skipped",
           "get_runtimes"]

"""The timing library behind `compress bench` and the measurement scripts in `bench/`: which
models to time (`models`), the runtimes that run them (`runtimes`, `ov_runtimes`, `registry`), the
interleaved timing loop (`latency.measure`) on its clocks (`clocks`), and the files, tables and
figures of the results (`benchmark.run_benchmark`, `output`, `plot`).

    from compress.timing import run_benchmark, Settings
    report = run_benchmark(run="runs/vgg13_filter_0.40_imp3", settings=Settings.quick())
"""
from compress.timing.benchmark import run_benchmark
from compress.timing.latency import Settings, measure
from compress.timing.models import BenchModel, collect_models
from compress.timing.registry import RUNTIMES, get_runtimes
from compress.timing.runtimes import Skipped

__all__ = ["run_benchmark", "Settings", "measure", "BenchModel", "collect_models", "RUNTIMES", "Skipped",
           "get_runtimes"]

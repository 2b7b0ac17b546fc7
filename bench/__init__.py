"""Measurement scripts: each is `python -m compress.bench.NAME` and prints its figures (installed
as `compress.bench`; the folder stays at the top of the repository). gpu_kit (+ gpu_kit_report),
train_throughput, cpu_bf16, filter_speedup, quantize_speedup, speedup_planner, semi_structured,
distill, zoo; results runs the sections of `sections` (the commands behind every number in
docs/results/) and writes their files. The timing library they share with
`compress bench` is `compress.timing`.
"""

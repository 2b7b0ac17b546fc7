"""How much faster is a slim 40%-filter VGG13 than the dense one? Measured, side by side.

    python -m compress.bench.filter_speedup [--batch-size 64] [--runtimes ort-cpu] [--threads N]

Random weights (speed does not depend on training). Variants, all slimmed with
`compress.prune.slim.slim` after `compress.prune.masks.filter_masks`:
  config      the shipped ratio file configs/vgg13_filter_0.40.yaml (multiples of 16 kept)
  uniform     40% of every conv layer's filters (`allocate(..., "uniform")`)
  uniform-r8  uniform, kept widths rounded to multiples of 8 (`round_to_multiple`, >= 40% overall)
  uniform-r16 the same with multiples of 16
Target: config slim vs dense >= 2.0x on ONNX Runtime CPU at batch 64.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

from compress.console import err, out
from compress.errors import CompressError
from compress.models import ModelSpec
from compress.presets import config_dir
from compress.prune.masks import apply_masks, filter_masks
from compress.prune.ratios import allocate, planned_sparsity, read_ratio_file, round_to_multiple
from compress.prune.slim import slim
from compress.timing.benchmark import run_benchmark
from compress.timing.latency import Settings
from compress.timing.models import BenchModel

CONFIG = config_dir() / "vgg13_filter_0.40.yaml"
TARGET = 2.0


def variants(spec: ModelSpec, config: Path = CONFIG) -> tuple[list[BenchModel], dict[str, float]]:
    """The dense model and its slim variants; also each variant's filter sparsity."""
    torch.manual_seed(0)
    dense = spec.build().eval()
    uniform = allocate(dense, "filter", 0.4, "uniform")
    plans = {"config": read_ratio_file(config, dense, "filter"), "uniform": uniform,
             "uniform-r8": round_to_multiple(dense, uniform, 8, 0.4),
             "uniform-r16": round_to_multiple(dense, uniform, 16, 0.4)}
    models = [BenchModel("dense", "dense", dense, spec)]
    sparsity = {"dense": 0.0}
    for name, ratios in plans.items():
        masked = copy.deepcopy(dense)
        apply_masks(masked, filter_masks(masked, ratios, spec.example_input()))
        models.append(BenchModel(name, "slim", slim(masked, spec).model.eval(), spec))
        sparsity[name] = planned_sparsity(dense, "filter", ratios)
    return models, sparsity


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compress.bench.filter_speedup", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg13")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--config", type=Path, default=CONFIG, help="filter ratio file for the 'config' variant")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--runtimes", default="ort-cpu", help="comma-separated (default ort-cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's setting)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per model (default: ~budget seconds)")
    p.add_argument("--budget", type=float, default=2.0, help="timed seconds per model (default 2.0)")
    p.add_argument("--out", type=Path, default=Path("bench_results/filter_speedup"),
                   help="where bench.json/csv/png go (replaced; default bench_results/filter_speedup)")
    args = p.parse_args(argv)
    try:
        spec = ModelSpec(args.model, 10, args.width, 32)
        models, sparsity = variants(spec, args.config)
        settings = Settings(batch_sizes=(args.batch_size,), runtimes=tuple(args.runtimes.split(",")),
                            device="cpu", threads=args.threads, repeats=args.repeats, budget_s=args.budget)
        report = run_benchmark(bench_models=models, out=args.out, settings=settings, force=True)
    except CompressError as e:
        err.print(f"[bold red]error:[/bold red] {e}")
        return 2

    info = {m["name"]: m for m in report["models"]}
    dense_macs = info["dense"]["macs"]
    out.print(f"{args.model} width {args.width}, random weights, batch {args.batch_size}, "
              f"{report['machine']['cpu']}, {report['settings']['threads']} threads, "
              f"onnxruntime {report['machine'].get('onnxruntime')}, torch {report['machine']['torch']}")
    out.print(f"{'variant':<12} {'filters cut':>11} {'MACs cut':>9} {'runtime':<8} {'median ms':>10} "
              f"{'IQR ms':>7} {'runs':>5} {'speed-up':>9}")
    for r in report["results"]:
        m = info[r["model"]]
        if r["status"] != "ok":
            out.print(f"{r['model']:<12} {r['runtime']:<8} skipped: {r['reason']}")
            continue
        out.print(f"{r['model']:<12} {100 * sparsity[r['model']]:10.2f}% {dense_macs / m['macs']:8.2f}x "
                  f"{r['runtime']:<8} {r['median_ms']:10.2f} {r['iqr_ms']:7.2f} {r['repeats']:5d} "
                  f"{r['speedup_vs_dense']:8.2f}x")
    for r in report["results"]:
        if r["model"] == "config" and r["status"] == "ok":
            verdict = "meets" if r["speedup_vs_dense"] >= TARGET else "BELOW"
            out.print(f"target ({r['runtime']}, batch {args.batch_size}): config slim >= {TARGET}x dense: "
                      f"{r['speedup_vs_dense']:.2f}x, {verdict}")
    out.print("wrote " + ", ".join(report["files"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Prune, then quantize: INT8 ONNX Runtime CPU speed and size against dense fp32, side by side.

    python -m compress.bench.quantize_speedup [--batch-sizes 1,64] [--threads 2] [--budget 2]

VGG13 with random weights (speed and size do not depend on training; accuracy does, and is
measured on trained models by `compress quantize` and the pipeline's quantize stage): dense and
the slim model of the shipped 40% filter ratio file, each in fp32 (`ort-cpu`) and INT8 (static
QDQ S8S8, per-channel weights, calibrated on 256 training images: `ort-cpu-int8`), interleaved in
one process. Targets, at batch 64 on 2 threads: slim INT8 >= 4.5x dense fp32, dense
INT8 >= 2.5x dense fp32; slim INT8 file <= 0.10x the dense fp32 file.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

from compress.console import err, out
from compress.env import cpu_int8_flags
from compress.errors import CompressError
from compress.models import ModelSpec
from compress.presets import config_dir
from compress.prune.masks import apply_masks, filter_masks
from compress.prune.ratios import read_ratio_file
from compress.prune.slim import slim
from compress.timing.benchmark import run_benchmark
from compress.timing.latency import Settings
from compress.timing.models import BenchModel
from compress.timing.output import fastest_lines

TARGETS = {"slim-int8 vs dense-fp32": 4.5, "dense-int8 vs dense-fp32": 2.5}
SIZE_TARGET = 0.10


def models(spec: ModelSpec) -> list[BenchModel]:
    torch.manual_seed(0)
    dense = spec.build().eval()
    masked = copy.deepcopy(dense)
    apply_masks(masked, filter_masks(masked, read_ratio_file(config_dir() / "vgg13_filter_0.40.yaml", dense, "filter"),
                                     spec.example_input()))
    return [BenchModel("dense", "dense", dense, spec, meta={"data_source": "sample"}),
            BenchModel("slim", "slim", slim(masked, spec).model.eval(), spec, meta={"data_source": "sample"})]


def sizes(report: dict) -> dict[str, int]:
    """Bytes of each model's fp32 and INT8 ONNX file, as the benchmark wrote them."""
    result = {}
    for m in report["models"]:
        if not m.get("onnx_bytes") or not m.get("int8_bytes"):
            raise CompressError(f"no fp32 and INT8 ONNX sizes for {m['name']}", "see the skipped rows above")
        result[f"{m['name']}-fp32"], result[f"{m['name']}-int8"] = m["onnx_bytes"], m["int8_bytes"]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compress.bench.quantize_speedup", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="1,64", help="comma-separated (default 1,64)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for ONNX Runtime (default 2)")
    p.add_argument("--runtimes", default="ort-cpu,ort-cpu-int8",
                   help="comma-separated; ort-cpu must be among them (the reference). With OpenVINO installed: "
                        "ort-cpu,ort-cpu-int8,openvino-cpu,openvino-cpu-bf16,openvino-cpu-int8")
    p.add_argument("--budget", type=float, default=2.0, help="timed seconds per model and cell (default 2.0)")
    p.add_argument("--out", type=Path, default=Path("bench_results/quantize_speedup"),
                   help="where bench.json/csv/png go (replaced; default bench_results/quantize_speedup)")
    args = p.parse_args(argv)
    try:
        spec = ModelSpec("vgg13")
        found = models(spec)
        settings = Settings(batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")),
                            runtimes=tuple(args.runtimes.split(",")), device="cpu", threads=args.threads,
                            budget_s=args.budget)
        report = run_benchmark(bench_models=found, out=args.out, settings=settings, force=True)
        size = sizes(report)
    except CompressError as e:
        err.print(f"[bold red]error:[/bold red] {e}")
        return 2
    flags = cpu_int8_flags()
    out.print(f"VGG13, random weights, {report['machine']['cpu']}, {report['settings']['threads']} threads, "
              f"onnxruntime {report['machine'].get('onnxruntime')}; int8 instructions: {', '.join(flags) or 'none (no VNNI/AMX: INT8 may be no faster)'}")
    out.print(f"{'model':<8} {'runtime':<18} {'batch':>5} {'median ms':>10} {'IQR ms':>7} {'vs dense fp32 ORT':>18}")
    reference = {r["batch_size"]: r["median_ms"] for r in report["results"]
                 if r["model"] == "dense" and r["runtime"] == "ort-cpu" and r["status"] == "ok"}
    for r in report["results"]:
        if r["status"] != "ok":
            out.print(f"{r['model']:<8} {r['runtime']:<18} {r['batch_size']:>5} {r['status']}: {r['reason']}")
            continue
        vs_dense = reference[r["batch_size"]] / r["median_ms"] if r["batch_size"] in reference else float("nan")
        out.print(f"{r['model']:<8} {r['runtime']:<18} {r['batch_size']:>5} {r['median_ms']:10.2f} {r['iqr_ms']:7.2f} "
                  f"{vs_dense:17.2f}x")
    for line in fastest_lines(report):
        out.print(line)
    dense_fp32 = size["dense-fp32"]
    out.print("ONNX file sizes: " + ", ".join(f"{k} {v / 2**20:.2f} MiB ({v / dense_fp32:.3f}x)" for k, v in size.items()))
    for r in report["results"]:
        if r["runtime"] == "ort-cpu-int8" and r["status"] == "ok" and r["batch_size"] == 64:
            name = f"{r['model']}-int8 vs dense-fp32"
            verdict = "meets" if r["speedup_vs_dense_fp32"] >= TARGETS[name] else "BELOW"
            out.print(f"target (ort-cpu, batch 64): {name} >= {TARGETS[name]}x: {r['speedup_vs_dense_fp32']:.2f}x, {verdict}")
    ratio = size["slim-int8"] / dense_fp32
    out.print(f"target: slim INT8 file <= {SIZE_TARGET}x dense fp32 file: {ratio:.3f}x, "
              f"{'meets' if ratio <= SIZE_TARGET else 'BELOW'}")
    out.print("wrote " + ", ".join(report["files"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

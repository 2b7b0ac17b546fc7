"""Deployment subcommands (`compress export`, `quantize`, `bench`): parsing and printing only.

The library is imported inside each command (as in every CLI module): `compress --help` then
starts in 0.1 s instead of the 2 s that importing torch takes."""
from __future__ import annotations

import argparse
from pathlib import Path

from compress.cli.args import add_data_args, checkpoint_data, data_options
from compress.cli.base import Command, command
from compress.console import err, notice, out
from compress.errors import CompressError
from compress.options import non_negative_int, positive_int


@command
class Export(Command):
    name = "export"
    help = "export a model to ONNX, check it in ONNX Runtime against PyTorch, and write compact files for sparse models"

    def add_arguments(self, p):
        p.add_argument("model", type=Path, help="checkpoint: dense, pruned (masked) or slim (e.g. Omp_filter_0.40_acc_71.23_slim.pt)")
        p.add_argument("--format", choices=("onnx", "openvino"), default="onnx",
                       help="onnx (default; checked in ONNX Runtime) or openvino (IR .xml + .bin written by OpenVINO "
                            "from the ONNX export, checked in OpenVINO's CPU plugin; needs pip install openvino)")
        p.add_argument("--out", type=Path, default=None, metavar="FILE",
                       help="FILE.onnx, or FILE.xml with --format openvino (default: the checkpoint's path with that "
                            "suffix); compact files go beside it")
        p.add_argument("--opset", type=int, default=18, metavar="N", help="ONNX opset (default 18, the exporter's native one)")
        p.add_argument("--fp16", action="store_true",
                       help="fp16 weights and activations behind a float32 input/output (about half the file); with "
                            "--format openvino: fp16-compressed weights, computed in the CPU's own precision")
        p.add_argument("--compact", action=argparse.BooleanOptionalAction, default=None,
                       help="also write .sparse.onnx (ONNX sparse initializers) and .compact.onnx (bitmask + kept "
                            "values); default: on for unstructured/N:M-pruned models and weight sparsity > 50%%")
        p.add_argument("--force", action="store_true", help="overwrite existing ONNX files")
        add_data_args(p, only=("data",), data="real test images for the parity check, resized to the model's input "
                                               "size: any SOURCE `compress train --data` takes; auto: the dataset "
                                               "recorded in the checkpoint, else the cache, a download, else the sample")

    def run(self, args) -> int:
        from compress.export import export_checkpoint
        from compress.export.tables import export_table

        if args.format == "openvino":
            from compress.export.openvino_ir import export_openvino

            ir = export_openvino(args.model, args.out, data=None if args.data == "auto" else args.data, fp16=args.fp16,
                                 force=args.force)
            par = ir["parity"]
            out.print(f"[bold]{ir['xml']}[/bold] + .bin: {ir['bytes'] / 2**20:.2f} MiB, OpenVINO {ir['openvino']}; "
                      f"vs PyTorch on {par['images']} test images: max rel. diff {par['max_rel_diff']:.1e} ≤ "
                      f"{par['tolerance']:.0e}, argmax agree {100 * par['argmax_agreement']:.1f}%", soft_wrap=True)
            return 0
        report = export_checkpoint(args.model, args.out, data=None if args.data == "auto" else args.data,
                                   opset=args.opset, fp16=args.fp16, compact=args.compact, force=args.force)
        out.print(export_table(report))
        for m in report["models"]:
            out.print(f"[bold]{Path(m['onnx']).name}[/bold]: {m['note']}", soft_wrap=True)
        return 0

# --------------------------------------------------------------------------- compress bench
BENCH_RUNTIMES = ("torch, torch-bf16, cuda-graphs, torch-compile, ort-cpu, ort-cpu-int8, ort-cuda, openvino-cpu, "
                  "openvino-cpu-bf16, openvino-cpu-int8")


def batch_sizes(text: str) -> tuple[int, ...]:
    """'1,32,256' -> (1, 32, 256); every size a positive integer."""
    sizes = []
    for part in text.split(","):
        try:
            sizes.append(positive_int(part.strip()))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"batch size {part.strip()!r}: {e}") from None
    return tuple(dict.fromkeys(sizes))


def name_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"no runtime named; choose from {BENCH_RUNTIMES}")
    return names


@command
class Bench(Command):
    name = "bench"
    help = "measure latency and size of dense vs pruned models on PyTorch, ONNX Runtime and OpenVINO"

    def add_arguments(self, p):
        m = p.add_argument_group("what to measure")
        m.add_argument("models", nargs="*", type=Path, metavar="MODEL",
                       help="checkpoints (dense, pruned or slim); the first dense one is the reference for speed-ups")
        m.add_argument("--run", type=Path, default=None, metavar="DIR",
                       help="a run folder (its dense.pt and result; for filter runs the slim model, slimmed here "
                            "if the slim stage has not run) or a suite folder (dense + its four runs)")
        m.add_argument("--runtimes", type=name_list, default=None, metavar="LIST",
                       help=f"comma-separated, from: {BENCH_RUNTIMES} (default: all; those that cannot run here "
                            "get a 'skipped: why' row; torch-compile runs on CPU only when named)")
        m.add_argument("--batch-sizes", type=batch_sizes, default=None, metavar="LIST",
                       help="comma-separated batch sizes (default 1,32,256; with --quick 1,64)")
        m.add_argument("--device", default="auto", metavar="DEVICE",
                       help="where the torch runtimes run: auto | cpu | cuda[:N] (default: cuda when available)")
        t = p.add_argument_group("how long")
        t.add_argument("--warmup", type=non_negative_int, default=None, metavar="N",
                       help="untimed calls per model and cell (default: adaptive, >= 2 calls and 0.2 s)")
        t.add_argument("--repeats", type=positive_int, default=None, metavar="N",
                       help="timed calls per model and cell (default: adaptive, ~1 s of calls, at least 5)")
        t.add_argument("--budget", type=float, default=None, metavar="S",
                       help="seconds of timed calls per model and cell when --repeats is not given (default 1.0)")
        t.add_argument("--threads", type=positive_int, default=None, metavar="N",
                       help="CPU threads for torch and ONNX Runtime alike (default: torch's current setting)")
        t.add_argument("--quick", action="store_true",
                       help="a short run (batch 1 and 64, ~0.4 s per cell and model), as the pruning pipeline does")
        o = p.add_argument_group("output")
        o.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="folder for bench.json, bench.csv, bench.png (default RUN/bench with --run, else bench_results)")
        o.add_argument("--force", action="store_true", help="replace earlier results in --out")

    def run(self, args) -> int:
        from compress.timing.benchmark import run_benchmark
        from compress.timing.latency import Settings
        from compress.timing.output import bench_verdict, fastest_lines, models_table, results_table, skipped_table

        if args.budget is not None and args.budget <= 0:
            raise CompressError(f"--budget must be positive (got {args.budget})", "e.g. --budget 1.0")
        if not args.models and args.run is None:
            raise CompressError("no models to benchmark", "pass model files (dense.pt, Omp_...pt) or --run RUN_DIR")
        changes = {"batch_sizes": args.batch_sizes, "runtimes": args.runtimes, "device": args.device,
                   "warmup": args.warmup, "repeats": args.repeats, "threads": args.threads, "budget_s": args.budget}
        changes = {k: v for k, v in changes.items() if v is not None}
        settings = Settings.quick(**changes) if args.quick else Settings(**changes)
        report = run_benchmark(args.models, run=args.run, out=args.out, settings=settings, force=args.force)
        measured = any(r["status"] == "ok" for r in report["results"])
        out.print(models_table(report))
        if measured:
            out.print(results_table(report))
        skipped = skipped_table(report)
        if skipped is not None:
            out.print(skipped)
        for line in fastest_lines(report):
            out.print(f"[bold]{line}[/bold]", soft_wrap=True)
        out.print("wrote " + ", ".join(report["files"].values()))
        verdict = bench_verdict(report)
        if verdict:
            err.print(f"[bold red]error:[/bold red] {verdict}", soft_wrap=True)
            return 1
        return 0


# --------------------------------------------------------------------------- compress quantize
def _exported_from(onnx_path: Path, checkpoint: Path) -> bool:
    """Whether the folder's export.json says `onnx_path` was exported from `checkpoint` (by an
    earlier `compress quantize` of it): then it is ours to re-export, not the user's to keep."""
    import json

    try:
        index = json.loads((onnx_path.parent / "export.json").read_text())
    except (OSError, ValueError):
        return False
    return any(Path(m.get("onnx", "")).resolve() == onnx_path.resolve()
               and Path(m.get("source", "")).resolve() == checkpoint.resolve() for m in index.get("models", []))


@command
class Quantize(Command):
    name = "quantize"
    help = ("INT8 ONNX (ONNX Runtime's or OpenVINO's static quantization), shipped only if validation top-1 drops "
            "by at most --max-drop points; test top-1 reported")

    def add_arguments(self, p):
        p.add_argument("model", type=Path, help="an ONNX file written by `compress export`, or a checkpoint (.pt: exported first)")
        p.add_argument("--out", type=Path, default=None, metavar="F.onnx", help="INT8 file (default MODEL.int8.onnx)")
        p.add_argument("--calibration", type=int, default=512, metavar="N",
                       help="training-split images to calibrate activation ranges on (never test; default 512)")
        p.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax",
                       help="calibration method (default minmax)")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--per-channel", dest="per_channel", action="store_true", default=True,
                       help="one weight scale per output channel (default)")
        g.add_argument("--per-tensor", dest="per_channel", action="store_false", help="one weight scale per tensor")
        p.add_argument("--exclude", action="append", default=[], metavar="LAYER",
                       help="keep this layer in fp32: an ONNX node name or a weight name such as features.0.weight "
                            "(repeatable; a large drop lists the layers that lose most)")
        p.add_argument("--max-drop", type=float, default=1.0, metavar="POINTS",
                       help="largest top-1 drop vs the fp32 model, in points, before the command fails (default 1.0)")
        p.add_argument("--accept-drop", action="store_true",
                       help="write the INT8 file with the smallest drop even when nothing is within --max-drop")
        p.add_argument("--no-search", dest="search", action="store_false",
                       help="over --max-drop, fail at once instead of searching: other calibration methods, the "
                            "worst layers kept in fp32 one at a time, then 2 epochs of QAT (.pt input only); "
                            "each attempt's validation drop and speed-up go into the report")
        p.add_argument("--runtime", choices=("ort", "openvino"), default="ort",
                       help="the runtime the INT8 file is made, gated and timed for: ort (default; S8S8, "
                            "MODEL.int8.onnx) or openvino (unsigned activations, U8S8, the scheme OpenVINO's CPU "
                            "plugin runs in int8; MODEL.openvino-int8.onnx, measured in OpenVINO)")
        p.add_argument("--qat", type=positive_int, default=0, metavar="EPOCHS",
                       help="quantization-aware training first: fine-tune the checkpoint (.pt) for EPOCHS under the "
                            "fake quantization ONNX Runtime will apply (per-channel symmetric int8 weights, int8 "
                            "activations; pruned weights stay zero), then export and quantize it (default 0: none)")
        p.add_argument("--force", action="store_true", help="overwrite existing files")
        add_data_args(p, only=("data", "val_split", "val_data"),
                      data="calibration (train split), gate (validation split) and evaluation (test split) images: "
                           "any SOURCE `compress train --data` takes; auto: the model's own dataset")

    def run(self, args) -> int:
        from compress.export.quantize import quantize
        from compress.export.tables import attempts_table, quantize_table

        onnx_path, data = self.inputs(args)
        qat = None
        if Path(args.model).suffix == ".pt":
            from compress.export.qat import qat_exporter

            qat = qat_exporter(Path(args.model), data, per_channel=args.per_channel, device=data.train_x.device)
        report = quantize(onnx_path, args.out, data, calibration=args.calibration, method=args.method,
                          per_channel=args.per_channel, exclude=tuple(args.exclude), max_drop=args.max_drop,
                          accept_drop=args.accept_drop, force=args.force, search=args.search, qat=qat,
                          qat_epochs=args.qat, runtime=args.runtime)
        out.print(quantize_table(report))
        if len(report["attempts"]) > 1:
            out.print(attempts_table(report))
        if report["shipped"] is None:  # nothing was within the gate: --accept-drop wrote the smallest drop
            where = "validation" if report["gate"]["split"] == "val" else "test"
            notice(f"[bold red]accepted a drop of {report['gate']['drop']:.2f} points of {where} top-1[/bold red] "
                   f"(over --max-drop {report['max_drop']}); layers that lose most: "
                   + ", ".join(f"{w['node']} ({w['weight']}, {w['sqnr_db']:.1f} dB)" for w in report["worst_layers"][:3]))
        return 0

    @staticmethod
    def inputs(args):
        """The fp32 ONNX file (exported from a .pt first, with its parity check) and the data."""
        from compress.errors import CompressError
        from compress.io import check_writable

        if args.calibration <= 0:
            raise CompressError(f"--calibration {args.calibration}: calibration needs at least one image", "e.g. --calibration 512")
        path = Path(args.model)
        if path.suffix == ".pt":
            from compress.checkpoint import load_checkpoint
            from compress.export import export_checkpoint

            ckpt = load_checkpoint(path, kinds=("dense", "pruned", "slim"))
            data = checkpoint_data(args, ckpt)
            # the fp32 ONNX file (and its export.json) goes where the INT8 file goes: beside --out when
            # given, so nothing is written next to the input checkpoint behind the user's back
            folder = Path(args.out).parent if args.out is not None else path.parent
            onnx_path = folder / (path.stem + ".onnx")
            if args.out is not None and onnx_path.resolve() == Path(args.out).resolve():
                onnx_path = folder / (path.stem + ".fp32.onnx")
            from compress.export.quantize import int8_path

            check_writable(Path(args.out) if args.out is not None else int8_path(onnx_path, args.runtime),
                           force=args.force)
            export_checkpoint(path, onnx_path, data=data, compact=False,
                              force=args.force or not onnx_path.exists() or _exported_from(onnx_path, path))
            return onnx_path, data
        if path.suffix != ".onnx":
            raise CompressError(f"{path} is neither an ONNX file nor a checkpoint", "pass MODEL.onnx or MODEL.pt")
        from compress.export.quantize import onnx_dataset

        opts = data_options(args)
        return path, onnx_dataset(path, opts.data, val_split=opts.val_split, val_data=opts.val_data)



"""The pipeline in five calls, for a notebook or a script: the main commands as functions, with
the same checks, files and errors (`CompressError`) as the CLI. Paths in, paths out.

    import compress

    run = compress.prune_model("vgg11", width=0.25, kind="filter", ratio=0.4, data="sample",
                               dense_epochs=1, epochs=1, stages=(), out="runs/api")  # a run folder
    slim = compress.slim_model(run.result)    # the zeroed filters physically removed, checked
    onnx = compress.to_onnx(slim)             # parity with PyTorch checked in ONNX Runtime
    int8 = compress.quantize(onnx)            # shipped only within 1 point of validation top-1
    bench = compress.benchmark([run.path / "dense.pt", slim], runtimes=("torch", "ort-cpu", "ort-cpu-int8"))
    print(run.accuracy, bench["fastest"])

Everything below these calls is importable too (docs/library.md): masks, schedules, slim on a
model in memory, the timing library.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from compress.checkpoint import checkpoint_dataset, starting_data
from compress.data import Dataset
from compress.env import resolve_device
from compress.kinds import STAGES
from compress.pipeline.run import PruneOptions, run_prune
from compress.presets import dense_config, retrain_config


@dataclass
class PruneRun:
    """What `prune_model` made: the run folder, the pruned model's checkpoint, the manifest."""
    path: Path
    result: Path
    manifest: dict

    @property
    def accuracy(self) -> float:
        """Test top-1 (%) of the pruned model after its retraining."""
        return self.manifest["result"]["accuracy"]


def prune_model(model: str | None = None, *, kind: str = "filter", ratio: float | None = None,
                config: str | Path | None = None, method: str = "omp", rounds: int = 3,
                checkpoint: str | Path | None = None, data: str | Dataset = "auto",
                dense_epochs: int | None = None, epochs: int | None = None, out: str | Path | None = None,
                stages: tuple[str, ...] = STAGES, device: str = "auto", force: bool = False,
                **options) -> PruneRun:
    """`compress KIND`: train (or take) a dense model, prune it by `ratio` (or the ratio file
    `config`) one-shot (`method="omp"`) or over `rounds` (`"imp"`), retrain with the masks, and
    run the deployment `stages` (slim, export, quantize, bench, report; `()` for none).

    `model`: a registered name, `torchvision:NAME`, `timm:NAME` or `file.py:factory` (None: the
    checkpoint's own, else vgg13; a code source named here may run, as `--model` on the command
    line); `checkpoint`: dense weights (ours or yours) instead of training one; `data`: as
    `--data` ("auto": a checkpoint's own dataset, else the cache, a download, else the sample);
    `epochs`: total retraining epochs over the rounds; other keyword arguments are
    `pipeline.options.PruneOptions` fields (criterion, rewind, schedule, distill, ...)."""
    if model is not None:
        from compress.models.sources import allow_code, canonical, check_source, kind_of

        allow_code(model)
        if kind_of(model) != "registry":
            check_source(model)
        model = canonical(model)
    dev = resolve_device(device)
    dense = dense_config(model)
    retrain = retrain_config(model)
    if dense_epochs is not None:
        dense = dataclasses.replace(dense, epochs=dense_epochs)
    if epochs is not None:
        retrain = dataclasses.replace(retrain, epochs=epochs)
    opts = PruneOptions(kind=kind, ratio=ratio, config=Path(config) if config else None, method=method,
                        rounds=rounds if method == "imp" else 1, model=model,
                        checkpoint=Path(checkpoint) if checkpoint else None, dense=dense, retrain=retrain,
                        out=Path(out) if out else None, force=force, stages=tuple(stages), show=False, **options)
    if isinstance(data, Dataset):
        dataset = data
    else:
        dataset = starting_data(data, Path(checkpoint) if checkpoint else None, quiet=True)
    manifest = run_prune(opts, dataset.to(dev), dev)
    path = Path(manifest["run_dir"])
    return PruneRun(path=path, result=path / manifest["result"]["path"], manifest=manifest)


def slim_model(checkpoint: str | Path, out: str | Path | None = None, *, data: str = "auto", round_to: int = 0,
               device: str = "auto", force: bool = False) -> Path:
    """`compress slim`: a filter-pruned checkpoint with its zeroed filters (and what is coupled to
    them) physically removed, checked to compute what the masked model computes; the slim
    checkpoint's path (default: MODEL_slim.pt beside it)."""
    from compress.prune.slim import slim_file

    path, _ = slim_file(Path(checkpoint), Path(out) if out else None, lambda ckpt: checkpoint_dataset(ckpt, data),
                        round_to=round_to, device=resolve_device(device), force=force)
    return path


def to_onnx(checkpoint: str | Path, out: str | Path | None = None, *, data: str = "auto", opset: int = 18,
            force: bool = False) -> Path:
    """`compress export`: the checkpoint as ONNX (MODEL.onnx beside it by default), its parity
    with PyTorch checked in ONNX Runtime on real images and recorded in export.json."""
    from compress.export import export_checkpoint

    report = export_checkpoint(Path(checkpoint), Path(out) if out else None, data=None if data == "auto" else data,
                               opset=opset, force=force)
    return Path(report["models"][0]["onnx"])


def quantize(onnx_file: str | Path, out: str | Path | None = None, *, data: str = "auto", max_drop: float = 1.0,
             runtime: str = "ort", force: bool = False) -> Path:
    """`compress quantize MODEL.onnx`: static INT8 (ONNX Runtime's QDQ, or OpenVINO's with
    `runtime="openvino"`), shipped only if validation top-1 drops by at most `max_drop` points
    (else a `CompressError` naming the layers that lose most); the INT8 file's path."""
    from compress.export.quantize import onnx_dataset
    from compress.export.quantize import quantize as quantize_onnx

    onnx_file = Path(onnx_file)
    report = quantize_onnx(onnx_file, Path(out) if out else None, onnx_dataset(onnx_file, data),
                           max_drop=max_drop, force=force, runtime=runtime)
    return Path(report["int8"])


def benchmark(models: list[str | Path], out: str | Path = "bench_results", *,
              runtimes: tuple[str, ...] | None = None, quick: bool = True, force: bool = True) -> dict:
    """`compress bench`: latency of each checkpoint (dense first: speed-ups are against it) on
    `runtimes` (None: every runtime this machine has; the ONNX and INT8 ones export their own
    file), interleaved in one process, written to `out` (bench.json, .csv, .png); bench.json's
    content."""
    from compress.timing import Settings, run_benchmark

    settings = Settings.quick(runtimes=runtimes) if quick else Settings(runtimes=runtimes)
    return run_benchmark([Path(m) for m in models], out=Path(out), settings=settings, force=force, show=False)

"""Which models to benchmark: checkpoint files, a run folder, or a suite folder.

A run folder contributes its dense baseline and its result; for a filter run the slim model
(`RUN/slim/*_slim.pt`) stands in for the masked one, and if the slim stage has not run the
masked model is slimmed here in memory. Masked models (unstructured, or filter without a slim
file given explicitly) are measured as they are: dense kernels, about 1.0x.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from compress.checkpoint import load_checkpoint
from compress.console import notice
from compress.errors import CompressError
from compress.kinds import Kind
from compress.models import ModelSpec
from compress.prune.channels import count_macs_params
from compress.prune.rebuild import model_from_checkpoint
from compress.prune.slim import slim_checkpoint

SUITE_RUNS = ("omp_unstructured", "imp_unstructured", "omp_filter", "imp_filter")


@dataclass
class BenchModel:
    """A model ready to measure: the module (CPU, fp32, eval) and what describes it."""

    name: str
    kind: str  # "dense" | "pruned" (masked, dense kernels) | "slim"
    module: nn.Module
    spec: ModelSpec
    path: str | None = None  # the checkpoint measured (None: built in memory)
    checkpoint_bytes: int | None = None
    meta: dict = field(default_factory=dict)  # prune_kind, sparsity, accuracy, source, ...
    onnx_bytes: int | None = None
    int8_bytes: int | None = None  # the INT8 ONNX file, when the ort-cpu-int8 runtime made one
    _macs_params: tuple[int, int] | None = None

    @property
    def macs_params(self) -> tuple[int, int]:
        if self._macs_params is None:
            self._macs_params = count_macs_params(self.module, self.spec)
        return self._macs_params

    def info(self) -> dict:
        """The bench.json entry for this model."""
        macs, params = self.macs_params
        return {"name": self.name, "path": self.path, "kind": self.kind, "params": params, "macs": macs,
                "checkpoint_bytes": self.checkpoint_bytes, "onnx_bytes": self.onnx_bytes,
                "int8_bytes": self.int8_bytes, **self.meta}


def _describe(ckpt: dict) -> dict:
    meta = ckpt.get("meta", {})
    keep = {k: meta[k] for k in ("prune_kind", "method", "sparsity", "accuracy") if k in meta}
    ds = meta.get("dataset", {})
    keep.update({k: v for k, v in (("data_source", ds.get("source")), ("mean", ds.get("mean")),
                                   ("std", ds.get("std"))) if v})  # INT8 calibration data
    if ckpt.get("kind") == "slim" and "slim" in meta:  # the share of filters removed (none are zero any more)
        keep["filter_sparsity"] = meta["slim"].get("filter_fraction_removed")
    return keep


def from_checkpoint(path: Path | str, name: str | None = None) -> BenchModel:
    """Any checkpoint of ours (dense, pruned, slim), measured as it is."""
    path = Path(path)
    ckpt = load_checkpoint(path, kinds=("dense", "pruned", "slim"))
    return BenchModel(name=name or path.stem, kind=ckpt["kind"], module=model_from_checkpoint(ckpt),
                      spec=ModelSpec.from_dict(ckpt["model"]), path=str(path),
                      checkpoint_bytes=path.stat().st_size, meta=_describe(ckpt))


def slimmed(path: Path | str, name: str | None = None) -> BenchModel:
    """A filter-pruned checkpoint slimmed here, in memory (the slim stage did not run)."""
    path = Path(path)
    ckpt = load_checkpoint(path, kinds=("pruned",))
    payload, result = slim_checkpoint(ckpt, None)
    buf = io.BytesIO()
    torch.save({"format": "compress-checkpoint/1", **payload}, buf)  # what the slim file would weigh
    meta = {**_describe(ckpt), "source": f"slimmed in memory from {path.name}"}
    return BenchModel(name=name or f"{path.stem}_slim", kind="slim", module=result.model.eval(),
                      spec=ModelSpec.from_dict(ckpt["model"]), path=str(path), checkpoint_bytes=buf.tell(),
                      meta=meta)


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_models(run_dir: Path, label: str | None = None, with_dense: bool = True) -> list[BenchModel]:
    """The dense baseline and the result of one run folder (slim for filter runs)."""
    run_dir = Path(run_dir)
    manifest = _read_manifest(run_dir)
    if manifest is None or manifest.get("format") != "compress-run/1":
        raise CompressError(f"{run_dir} is not a run folder (no readable manifest.json)",
                            "pass the folder `compress unstructured|filter` wrote, or model files")
    models = []
    if with_dense:
        dense = run_dir / "dense.pt"
        if not dense.is_file() and (manifest.get("dense") or {}).get("path"):
            dense = Path(manifest["dense"]["path"])
        models.append(from_checkpoint(dense, "dense"))
    result = (manifest.get("result") or {}).get("path")
    if not result:
        raise CompressError(f"the run in {run_dir} has no result yet (status {manifest.get('status')!r})",
                            "let it finish (or resume it with --resume), then benchmark it")
    result_path = run_dir / result
    prefix = label or Path(result).stem
    prune_kind = manifest.get("job", {}).get("kind")
    if prune_kind == Kind.FILTER:
        slim_files = sorted((run_dir / "slim").glob("*_slim.pt"))
        if slim_files:
            models.append(from_checkpoint(slim_files[-1], f"{prefix} (slim)" if label else slim_files[-1].stem))
        else:
            notice(f"{run_dir} has no slim model yet; slimming {result} in memory")
            models.append(slimmed(result_path, f"{prefix} (slim)" if label else None))
    else:
        models.append(from_checkpoint(result_path, prefix))
    return models


def suite_models(suite_dir: Path) -> list[BenchModel]:
    """The suite's dense baseline and the results of its run folders (usually four)."""
    suite_dir = Path(suite_dir)
    manifest = _read_manifest(suite_dir) or {}
    runs = manifest.get("runs") or {n: n for n in SUITE_RUNS if (suite_dir / n / "manifest.json").is_file()}
    if not runs:
        raise CompressError(f"{suite_dir} holds no run folders", "pass a suite folder from `compress all`, or a run folder")
    dense = suite_dir / "dense.pt"
    models = [from_checkpoint(dense, "dense")] if dense.is_file() else []
    for name, folder in runs.items():
        folder = Path(folder)
        folder = folder if folder.is_absolute() else suite_dir / folder
        if not (folder / "manifest.json").is_file():
            notice(f"suite run {name} ({folder}) is missing; left out")
            continue
        models += run_models(folder, label=name, with_dense=not models)
    return models


def is_suite(folder: Path) -> bool:
    manifest = _read_manifest(Path(folder))
    if manifest is not None:
        return manifest.get("format") == "compress-suite/1"
    return any((Path(folder) / n / "manifest.json").is_file() for n in SUITE_RUNS)


def collect_models(paths: list[Path | str] = (), run: Path | str | None = None) -> list[BenchModel]:
    """Models from a run/suite folder and from files, the dense baseline first, names unique."""
    models: list[BenchModel] = []
    if run is not None:
        run = Path(run)
        if not run.is_dir():
            raise CompressError(f"run folder {run} does not exist", "pass the folder a prune command wrote")
        models += suite_models(run) if is_suite(run) else run_models(run)
    seen = {str(Path(m.path).resolve()) for m in models if m.path and m.kind != "slim"}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise CompressError(f"model file {p} does not exist", "check the path (a run folder lists its models in manifest.json)")
        if p.suffix == ".onnx":
            raise CompressError(f"{p}: bench times checkpoints, not ONNX files (each runtime makes its own ONNX or "
                                "INT8 model from the checkpoint, with its parity checked)", f"pass the .pt that {p.name} was "
                                "exported from")
        if str(p.resolve()) in seen:
            continue
        seen.add(str(p.resolve()))
        models.append(from_checkpoint(p))
    if not models:
        raise CompressError("no models to benchmark", "pass model files (dense.pt, Omp_...pt) or --run RUN_DIR")
    dense = next((i for i, m in enumerate(models) if m.kind == "dense"), None)
    if dense is None:
        notice(f"no dense model given; speed-ups are relative to the first model, {models[0].name}")
    elif dense:
        models.insert(0, models.pop(dense))
    return unique_names(models)


def unique_names(models: list[BenchModel]) -> list[BenchModel]:
    count: dict[str, int] = {}
    for m in models:
        n = count.get(m.name, 0)
        count[m.name] = n + 1
        if n:
            m.name = f"{m.name} #{n + 1}"
    return models

"""A checkpoint in; checked ONNX files and `export.json` out (the library behind `compress export`).

Every file is written into a hidden staging folder beside the output, checked (ONNX checker,
ONNX Runtime vs PyTorch parity), and only then renamed into place: a failure at any step
leaves no ONNX file behind.

export.json (one per folder; a later export of another model into the same folder adds to it):
    {"models": [{"name", "source", "onnx", "bytes", "format", "parity", "note",
                 "saves", "ratio", "deflated_bytes", "kind"}],
     "dense_onnx_bytes": plain fp32 ONNX of the unpruned architecture (the reference for ratios),
     "opset": int, "model": ModelSpec dict}
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from compress.checkpoint import input_contract, load_checkpoint, with_contract
from compress.console import notice
from compress.data import Dataset, load_dataset
from compress.errors import CompressError
from compress.export.compact import rebuild_left_at_runtime, to_compact, to_sparse_initializers, weight_stats
from compress.export.onnx_export import check_opset, export_onnx
from compress.export.parity import compare, reference_logits
from compress.io import atomic_write, check_writable
from compress.kinds import Kind
from compress.models import ModelSpec
from compress.prune.masks import apply_masks
from compress.prune.rebuild import model_from_checkpoint
from compress.prune.sparsity import sparsity_report

INDEX_NAME = "export.json"
COMPACT_KINDS = ("unstructured", "nm")  # prune kinds whose zeros are scattered: only a sparse format stores less
AUTO_COMPACT_SPARSITY = 0.5  # weight sparsity above which any model gets the compact files too

STORAGE_ONLY = "saves storage, not compute or memory: ONNX Runtime densifies the weights when it loads the file"


def export_checkpoint(ckpt_path: Path, out: Path | None = None, *, data: Dataset | str | None, opset: int = 18,
                      fp16: bool = False, compact: bool | None = None, force: bool = False) -> dict:
    """Export a dense, pruned (masked) or slim checkpoint to ONNX, check it, and index it.

    Writes `out` (default: the checkpoint's path with .onnx) and, for unstructured-sparse
    models (`compact=None`: prune kind unstructured/nm or weight sparsity > 50%), also
    `<stem>.sparse.onnx` (ONNX sparse initializers) and `<stem>.compact.onnx` (bitmask +
    values). `data` gives the real test images for parity: a Dataset, a --data spec, or
    None/"auto" for the dataset the checkpoint was trained on. Returns the export.json
    content for this checkpoint, with "export_json" (its path) and "weight_sparsity".
    """
    check_opset(opset)
    ckpt_path = Path(ckpt_path)
    ckpt = load_checkpoint(ckpt_path, kinds=("dense", "pruned", "slim"))
    out = Path(out) if out is not None else ckpt_path.with_suffix(".onnx")
    if out.suffix != ".onnx":
        raise CompressError(f"output {out} does not end in .onnx", "pass --out NAME.onnx")
    spec = ModelSpec.from_dict(ckpt["model"])
    model = model_from_checkpoint(ckpt)
    _apply_saved_masks(model, ckpt)

    sparsity = sparsity_report(model, "unstructured")["overall"]
    meta = ckpt.get("meta", {})
    if compact is None:
        compact = meta.get("prune_kind") in COMPACT_KINDS or sparsity > AUTO_COMPACT_SPARSITY
    targets = {"onnx-fp16" if fp16 else "onnx": out}
    if compact:
        targets["sparse-onnx"] = out.with_name(out.stem + ".sparse.onnx")
        targets["compact"] = out.with_name(out.stem + ".compact.onnx")
    for path in targets.values():
        check_writable(path, force=force)
    data = _resolve_data(data, ckpt, spec)

    out.parent.mkdir(parents=True, exist_ok=True)  # every input checked: now the folder may appear
    staging = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", suffix=".export-tmp", dir=out.parent))
    try:
        staged = _build(model, spec, ckpt, targets, staging, data, opset, fp16)
        dense_bytes = _dense_reference_bytes(model, spec, ckpt, staged, staging, opset, fp16, out.parent / INDEX_NAME)
        for fmt, path in targets.items():
            os.replace(staged[fmt]["file"], path)  # all checked: now they may appear
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    entries = []
    for fmt, path in targets.items():
        s = staged[fmt]
        entries.append({
            "name": path.name[: -len(".onnx")], "source": str(ckpt_path), "onnx": str(path), "bytes": s["bytes"],
            "format": fmt, "parity": s["parity"],
            "note": _note(fmt, ckpt, fp16, s["zero_fraction"], s.get("runtime_rebuild_nodes", 0)),
            "saves": _saves(fmt, ckpt), "ratio": s["bytes"] / dense_bytes, "deflated_bytes": s["deflated_bytes"],
            "kind": ckpt.get("kind"),
        })
    report = {"models": entries, "dense_onnx_bytes": dense_bytes, "opset": opset, "model": spec.to_dict()}
    index = _update_index(out.parent / INDEX_NAME, report)
    return {**report, "export_json": str(index), "weight_sparsity": sparsity}


def _apply_saved_masks(model: nn.Module, ckpt: dict) -> None:
    """A pruned checkpoint's weights are already zero where masked; re-applying makes it certain."""
    masks = ckpt.get("masks") or {}
    if masks:
        apply_masks(model, masks)


def _resolve_data(data, ckpt: dict, spec: ModelSpec) -> Dataset:
    if not isinstance(data, Dataset):
        if data in (None, "auto"):
            source = ckpt.get("meta", {}).get("dataset", {}).get("source")
            data = None
            if source:
                try:
                    data = load_dataset(source, quiet=True, image_size=spec.image_size)
                except CompressError as e:
                    notice(f"the checkpoint's dataset is not readable here ({e.message}); using --data auto")
            if data is None:
                data = load_dataset("auto", quiet=True, image_size=spec.image_size)
        else:
            data = load_dataset(str(data), quiet=True, image_size=spec.image_size)
    data = with_contract(data, ckpt)  # the normalisation the model was trained with
    shape = tuple(data.test_x.shape[1:])
    want = (spec.in_channels, spec.image_size, spec.image_size)
    if shape != want:
        raise CompressError(f"the model takes {want[0]}x{want[1]}x{want[2]} images but the data has "
                            f"{shape[0]}x{shape[1]}x{shape[2]}", "pass the --data the model was trained on")
    return data


def _build(model, spec, ckpt, targets: dict, staging: Path, data, opset: int, fp16: bool) -> dict:
    """Every artifact in `staging`, each checked by ONNX Runtime against PyTorch."""
    staged = {}
    x, ref = reference_logits(model, data)
    plain_fmt = next(iter(targets))
    plain = export_onnx(model, spec, staging / targets[plain_fmt].name, opset=opset, fp16=fp16,
                        contract=input_contract(ckpt.get("meta", {})))
    proto = onnx.load(str(plain))
    stats = weight_stats(proto)
    staged[plain_fmt] = _measure(plain, x, ref, stats)
    for fmt, rewrite in (("sparse-onnx", to_sparse_initializers), ("compact", to_compact)):
        if fmt not in targets:
            continue
        path = staging / targets[fmt].name
        rewritten = rewrite(proto)

        # Strict shape inference types a sparse initializer as sparse_tensor, which no dense op
        # accepts; ONNX Runtime densifies them at load. That file gets the structural check only.
        def write(tmp: Path, m=rewritten, strict=fmt != "sparse-onnx"):
            onnx.save_model(m, str(tmp))
            onnx.checker.check_model(str(tmp), full_check=strict)

        atomic_write(path, write)
        staged[fmt] = _measure(path, x, ref, stats)
        if fmt == "compact":
            staged[fmt]["runtime_rebuild_nodes"] = rebuild_left_at_runtime(path)
    return staged


def _measure(path: Path, x, ref, stats: dict) -> dict:
    blob = path.read_bytes()
    return {"file": path, "bytes": len(blob), "deflated_bytes": len(zlib.compress(blob, 6)),
            "parity": compare(path, x, ref), "zero_fraction": stats["zero_fraction"]}


def _dense_reference_bytes(model, spec: ModelSpec, ckpt: dict, staged: dict, staging: Path, opset: int,
                           fp16: bool, index_path: Path) -> int:
    """Bytes of the plain fp32 ONNX of the unpruned architecture.

    A dense or masked fp32 export has exactly that size (zeros are stored), so that file, or
    one indexed earlier in the same folder for the same spec and opset, is the reference.
    Otherwise an fp16 model is re-exported in fp32, and for a slim model (channels gone) a
    fresh model of the same spec is exported, its BatchNorm biases made non-zero so the
    exporter keeps the folded conv biases as it does for a trained model.
    """
    if ckpt.get("kind") != "slim" and not fp16:
        return staged["onnx"]["bytes"]
    measured = _measured_dense_bytes(index_path, spec, opset)
    if measured:  # the masked model of this run, exported earlier into the same folder
        return measured
    if ckpt.get("kind") == "slim":
        reference = spec.build().eval()
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for m in reference.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=generator) * 0.2 - 0.1)
    else:
        reference = model
    path = export_onnx(reference, spec, staging / ".reference.onnx", opset=opset)
    return path.stat().st_size


def _measured_dense_bytes(index_path: Path, spec: ModelSpec, opset: int) -> int | None:
    """Bytes of a plain fp32 dense or masked export of this spec and opset listed in export.json."""
    try:
        index = json.loads(index_path.read_text())
        if index.get("model") != spec.to_dict() or index.get("opset") != opset:
            return None
        return next((m["bytes"] for m in index.get("models", [])
                     if m.get("format") == "onnx" and m.get("kind") in ("dense", "pruned")), None)
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return None


def _saves(fmt: str, ckpt: dict) -> str:
    """What a file buys at deployment: "storage" (smaller file, dense compute), "storage and
    compute" (smaller tensors), or "nothing" (the dense model's size and speed)."""
    if fmt in ("sparse-onnx", "compact"):
        return "storage"
    if ckpt.get("kind") == "slim":
        return "storage and compute"
    return "storage" if fmt == "onnx-fp16" else "nothing"


def _note(fmt: str, ckpt: dict, fp16: bool, zero_fraction: float, runtime_rebuild_nodes: int = 0) -> str:
    kind = ckpt.get("kind")
    prune_kind = ckpt.get("meta", {}).get("prune_kind")
    zeros = f"{100 * zero_fraction:.1f}% of the weights are zero"
    if fmt == "sparse-onnx":
        return f"ONNX sparse initializers (COO, int64 indices); {zeros}; {STORAGE_ONLY}"
    if fmt == "compact":
        if runtime_rebuild_nodes:
            return (f"bitmask + kept values, rebuilt by standard ONNX ops; ONNX Runtime left {runtime_rebuild_nodes} "
                    f"rebuild nodes unfolded, so they run at every inference; {zeros}; saves storage, costs compute")
        return (f"bitmask + kept values, rebuilt by standard ONNX ops that ONNX Runtime constant-folds at load "
                f"(no custom code); {zeros}; {STORAGE_ONLY}")
    precision = "fp16 weights and activations, fp32 input/output; " if fp16 else ""
    if kind == "slim":
        return precision + "slim: pruned channels removed, so smaller tensors: saves storage and compute"
    if kind == "pruned" and prune_kind == Kind.FILTER:
        return precision + (f"masked: {zeros}, stored and computed as zeros (dense size and speed); "
                            "`compress slim` removes them")
    if kind == "pruned":
        return precision + (f"dense layout: {zeros}, stored and computed (dense size and speed); "
                            "the .compact.onnx file stores only the kept weights")
    return precision + "dense model"


def _update_index(path: Path, report: dict) -> Path:
    """Add this export to the folder's export.json, replacing earlier entries for the same
    files or the same checkpoint.

    Entries made for another architecture or opset (another reference size) are dropped.
    """
    models = []
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            if old.get("model") == report["model"] and old.get("opset") == report["opset"]:
                # a re-export of the same checkpoint replaces all of its entries
                mine = {m["onnx"] for m in report["models"]}
                source = report["models"][0]["source"]
                models = [m for m in old.get("models", []) if m.get("onnx") not in mine and m.get("source") != source]
        except (ValueError, AttributeError, TypeError):
            notice(f"{path} was not valid JSON; it is replaced")
    index = {**report, "models": models + report["models"]}
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(index, indent=2) + "\n"))

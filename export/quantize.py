"""INT8 ONNX models with ONNX Runtime's own tooling, accuracy re-measured on the whole test split.

Static QDQ quantization (`onnxruntime.quantization`): pre-processing (shape inference and graph
optimisation), `quantize_static` in QDQ format, signed int8 weights and activations (S8S8, the
format ONNX Runtime's documentation recommends for x86), per-channel weights by default,
calibrated on images of the *training* split fed through the model's recorded input contract
(size, mean/std: `compress.input` in the ONNX metadata). The INT8 model is then evaluated beside
its fp32 model on every test image: top-1 of both, agreement, largest logit difference. When the
drop is over `max_drop`, ONNX Runtime's QDQ debugger (`qdq_loss_debug`) names the layers whose
activations lose most, to keep in fp32 with `exclude`. The fp32 file is never touched.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations,
    compute_activation_error,
    create_activation_matching,
    modify_model_output_intermediate_tensors,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from compress.data import Dataset, Loader
from compress.errors import CompressError, did_you_mean
from compress.export.int8_search import SPEED_BATCH, Attempt, speedup
from compress.export.int8_search import search as search_int8
from compress.export.onnx_export import INPUT_NAME
from compress.export.runtime import cpu_runner
from compress.io import atomic_write, check_writable
from compress.train import eval_batch

METHODS = ("minmax", "entropy", "percentile")
QAT_FALLBACK_EPOCHS = 2  # the search's last resort: epochs of quantization-aware training
INT8_SUFFIX = ".int8.onnx"


class AccuracyDrop(CompressError):
    """The INT8 model lost more top-1 than --max-drop allows: a user decision, not a bug."""


def int8_path(fp32: Path, runtime: str = "ort") -> Path:
    """MODEL.int8.onnx (ONNX Runtime's S8S8), MODEL.openvino-int8.onnx (OpenVINO's U8S8)."""
    fp32 = Path(fp32)
    return fp32.with_name(fp32.name[: -len(".onnx")] + (INT8_SUFFIX if runtime == "ort" else ".openvino-int8.onnx"))


def read_contract(path: Path) -> tuple[dict, onnx.ModelProto]:
    """The model's input contract from its metadata; a corrupt file or a missing contract is an error."""
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"ONNX file {path} does not exist", "export one with `compress export MODEL.pt`")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as e:  # protobuf DecodeError, checker ValidationError, ...
        raise CompressError(f"{path} is not a valid ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''})",
                            "re-export it with `compress export MODEL.pt`") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if "compress.input" not in meta:
        raise CompressError(f"{path} has no recorded input contract (image size, mean/std)",
                            "quantize an ONNX file written by `compress export` (or pass the .pt checkpoint)")
    contract = json.loads(meta["compress.input"])
    if not contract.get("mean") or not contract.get("std"):
        raise CompressError(f"{path} records no input normalisation", "re-export it with `compress export MODEL.pt`")
    return contract, proto


def onnx_dataset(path: Path, source: str = "auto", *, val_split: float | None = None, val_data: str | None = None):
    """The data an ONNX file of ours is measured on: `source`, or for "auto" the dataset its model
    was trained on (recorded in the file), at its image size, with the validation split the model
    was trained beside (else `val_split`). The ONNX side of `checkpoint.checkpoint_dataset`."""
    from compress.checkpoint import split_for
    from compress.data import load_dataset

    contract, proto = read_contract(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    model = json.loads(meta.get("compress.model", "{}"))
    source = source if source != "auto" else contract.get("data_source") or "auto"
    data = load_dataset(source, quiet=True, image_size=model.get("image_size") or contract.get("image_size"))
    recorded = {"meta": {"dataset": {"val_split": contract["val_split"]}}} if "val_split" in contract else None
    return split_for(data, recorded, val_split, val_data)


class CalibrationReader(CalibrationDataReader):
    """ONNX Runtime's calibration reader over normalised images, in batches (also iterable, as
    its QDQ debugger wants). Batches of 64 at 32 px, fewer as images grow: ORT's calibrator keeps
    every intermediate tensor of a batch, GBs for a 224 px transformer."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, contract: dict, batch: int | None = None):
        batch = batch or max(4, 64 * 32 * 32 // (x.shape[-1] * x.shape[-2]))
        self.batches = [xb.numpy() for xb, _ in Loader(x, y, batch, mean=contract["mean"], std=contract["std"])]
        self.images = int(x.shape[0])
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {INPUT_NAME: self.batches[self.i - 1]}

    def rewind(self):
        self.i = 0


def calibration_images(data: Dataset, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` images of the training split (never test), a seeded random choice."""
    if n <= 0:
        raise CompressError(f"--calibration {n}: calibration needs at least one image", "e.g. --calibration 512")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(data.train_x.shape[0], generator=g)[: min(n, data.train_x.shape[0])]
    return data.train_x.cpu()[idx], data.train_y.cpu()[idx]


def quantize(fp32: Path, out: Path | None, data: Dataset, *, calibration: int = 512, method: str = "minmax",
             per_channel: bool = True, exclude: tuple[str, ...] = (), max_drop: float = 1.0,
             accept_drop: bool = False, force: bool = False, search: bool = True,
             qat: Callable[[Path, int], Path] | None = None, qat_epochs: int = 0, runtime: str = "ort") -> dict:
    """Quantize `fp32` to `out` (default MODEL.int8.onnx) and measure it on the whole test split.

    When the drop on validation exceeds `max_drop` points and `search` is on, the accuracy-aware
    search (`compress.export.int8_search`) tries other calibrations, fp32 layers and, given `qat` (a
    callable(folder, epochs) that writes the fp32 ONNX file of a QAT-tuned model there), QAT;
    the fastest attempt within the gate is written. `qat_epochs` > 0 runs QAT straight away (the
    `--qat` option). Returns the report (accuracies, agreement, sizes, every attempt). Raises when
    nothing is within `max_drop` unless `accept_drop`: then no INT8 file is written. `runtime`:
    "ort" (S8S8, measured in ONNX Runtime) or "openvino" (U8S8, the scheme OpenVINO's CPU plugin
    runs in int8, measured and timed in OpenVINO).
    """
    if method not in METHODS:
        raise CompressError(f"unknown calibration method {method!r}", f"choose one of: {', '.join(METHODS)}")
    fp32 = Path(fp32)
    out = Path(out) if out is not None else int8_path(fp32, runtime)
    if out.resolve() == fp32.resolve():
        raise CompressError("the INT8 file would overwrite its fp32 model", "pass another --out")
    contract, proto = read_contract(fp32)
    check_writable(out, force=force)
    size = contract.get("image_size")
    if size and tuple(data.train_x.shape[-2:]) != (size, size):
        raise CompressError(f"the model takes {size} px images but the data has {data.train_x.shape[-1]} px",
                            "pass the --data the model was trained on")
    exclude = resolve_exclude(proto, exclude, fp32.name)
    activations = {"ort": "s8", "openvino": "u8"}.get(runtime)
    if activations is None:
        raise CompressError(f"unknown runtime {runtime!r}", "ort or openvino")
    if qat_epochs and qat is None:
        raise CompressError("--qat fine-tunes the PyTorch model, which an ONNX file does not hold",
                            "pass the checkpoint (MODEL.pt) instead of its ONNX file")
    cx, cy = calibration_images(data, calibration)
    gate_split = "val" if data.has_val else "test"  # the gate is a choice: it reads validation when there is one
    out.parent.mkdir(parents=True, exist_ok=True)  # every input checked: now the folder may appear
    work = Path(tempfile.mkdtemp(prefix=".quantize-", dir=out.parent))
    try:
        pre = work / "pre.onnx"  # pre-processed once: every attempt on the fp32 file, and the layer debugger, read it
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        zeros: dict[Path, float] = {}

        def try_file(name: str, how: str, excluded: tuple[str, ...], source: Path = fp32, epochs: int = 0) -> Attempt:
            staged = work / f"attempt_{len(zeros)}.onnx"
            reader = CalibrationReader(cx, cy, contract)
            if source == fp32:
                zeros[staged] = _quantize_static(pre, staged, reader, proto, how, per_channel, excluded, activations)
            else:  # a QAT-tuned model: its own pre-processing
                zeros[staged] = quantize_file(source, staged, reader, proto=proto, method=how, per_channel=per_channel,
                                              exclude=excluded, activations=activations)
            scores = evaluate_pair(fp32, staged, data, contract, split=gate_split, runtime=runtime)
            return Attempt(name, staged, how, excluded, round(scores["fp32_acc"] - scores["int8_acc"], 2),
                           scores["fp32_acc"], scores["int8_acc"], qat_epochs=epochs)

        def run_qat(epochs: int, how: str) -> Attempt | None:
            return try_file(f"QAT {epochs} epochs", how, (), qat(work / "qat", epochs), epochs)

        x = CalibrationReader(cx[:SPEED_BATCH], cy[:SPEED_BATCH], contract, batch=SPEED_BATCH).batches[0]
        timed = lambda a: setattr(a, "speedup", speedup(fp32, a.file, x, runtime=runtime))  # noqa: E731
        if qat_epochs:
            first = run_qat(qat_epochs, method)
            chosen, attempts = first, [first]
            timed(first)
            if first.drop > max_drop:
                chosen = None
        else:
            first = try_file(f"calibration {method}", method, exclude)
            chosen, attempts = search_int8(
                first, try_file, lambda a: _worst_nodes(pre, a, CalibrationReader(cx[:64], cy[:64], contract)),
                max_drop, methods=METHODS if search else (), max_fp32_layers=5 if search else 0,
                qat=(lambda best: run_qat(QAT_FALLBACK_EPOCHS, best.method)) if search and qat is not None else None,
                timed=timed)
        shipped = chosen or min(attempts, key=lambda a: a.drop)
        report = {"fp32": str(fp32), "int8": str(out), "method": shipped.method, "per_channel": per_channel,
                  "format": f"QDQ, {activations.upper()}S8",
                  "runtime": {"ort": "ONNX Runtime CPU", "openvino": "OpenVINO CPU"}[runtime],
                  "calibration_images": int(cx.shape[0]), "calibration_split": "train",
                  "excluded": list(shipped.excluded), "qat_epochs": shipped.qat_epochs,
                  "fp32_bytes": fp32.stat().st_size, "int8_bytes": shipped.file.stat().st_size,
                  "int8_weight_zero_fraction": zeros[shipped.file], "speedup": shipped.speedup,
                  "speedup_note": f"{'ORT' if runtime == 'ort' else 'OpenVINO'} CPU, batch {SPEED_BATCH}, fp32 time / "
                                  "INT8 time",
                  **evaluate_pair(fp32, shipped.file, data, contract, runtime=runtime)}
        report["drop"] = round(report["fp32_acc"] - report["int8_acc"], 2)
        report["max_drop"] = max_drop
        if data.has_val:
            report.update(val_images=int(data.val_x.shape[0]), val_fp32_acc=shipped.fp32_acc,
                          val_int8_acc=shipped.int8_acc, val_drop=shipped.drop)
        report["gate"] = {"split": gate_split, "drop": shipped.drop}
        report["attempts"] = [a.record(max_drop) for a in attempts]
        report["shipped"] = shipped.name if chosen is not None else None
        if chosen is None:
            report["worst_layers"] = worst_layers(pre, attempts[0].file, CalibrationReader(cx[:64], cy[:64], contract))
            if not accept_drop:
                layers = ", ".join(f"{w['node']} ({w['sqnr_db']:.1f} dB)" for w in report["worst_layers"][:3])
                where = "validation" if data.has_val else "test"
                tried = "; ".join(f"{a.name}: -{a.drop:.2f}" for a in attempts)
                raise AccuracyDrop(
                    f"INT8 loses {shipped.drop:.2f} points of {where} top-1 at best ({shipped.fp32_acc:.2f}% -> "
                    f"{shipped.int8_acc:.2f}%), over --max-drop {max_drop}; tried {tried}; the layers that lose "
                    f"most: {layers}; no INT8 file was written",
                    "pass --qat EPOCHS with the .pt checkpoint, keep more layers in fp32 with --exclude NODE, "
                    "or pass --accept-drop")
        atomic_write(out, lambda tmp: shutil.copyfile(shipped.file, tmp))
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _worst_nodes(pre: Path, attempt: Attempt, reader) -> list[str]:
    return [w["node"] for w in worst_layers(pre, attempt.file, reader, top=8)]


def quantize_file(fp32: Path, out: Path, reader, *, proto=None, method: str = "minmax", per_channel: bool = True,
                  exclude: tuple[str, ...] = (), pre: Path | None = None, activations: str = "s8") -> float:
    """ONNX Runtime's pre-processing + static QDQ quantization of `fp32` into `out` (checked by
    onnx.checker, metadata carried over); returns the share of int8 conv/linear weights that
    are exactly zero (symmetric weight scales keep a pruned weight at 0). `activations`: "s8"
    (S8S8, what ONNX Runtime runs fastest on x86) or "u8" (U8S8, what OpenVINO expects)."""
    proto = proto if proto is not None else onnx.load(str(fp32))
    scratch = None
    if pre is None:  # the pre-processed model is an intermediate: keep it out of the output folder
        scratch = Path(tempfile.mkdtemp(prefix=".quantize-", dir=Path(out).parent))
        pre = scratch / "pre.onnx"
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        return _quantize_static(pre, out, reader, proto, method, per_channel, exclude, activations)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _quantize_static(pre: Path, out: Path, reader, proto, method: str, per_channel: bool, exclude,
                     activations: str = "s8") -> float:
    if activations not in ("s8", "u8"):
        raise CompressError(f"unknown activation type {activations!r}", "s8 or u8")
    quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QInt8 if activations == "s8" else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                      "percentile": CalibrationMethod.Percentile}[method],
                    nodes_to_exclude=list(exclude) or None,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    q = onnx.load(str(out))
    onnx.checker.check_model(q)
    _copy_metadata(proto, q, method, per_channel, getattr(reader, "images", 0), exclude, activations)
    onnx.save_model(q, str(out))
    weights = [onnx.numpy_helper.to_array(t) for t in q.graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
    total = sum(w.size for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / total) if total else 0.0


def resolve_exclude(proto, exclude, where: str) -> tuple[str, ...]:
    """--exclude takes ONNX node names or the PyTorch weight names of conv/linear layers."""
    names = {n.name for n in proto.graph.node}
    by_weight = {n.input[1]: n.name for n in proto.graph.node if n.op_type in WEIGHTED and len(n.input) > 1}
    resolved = []
    for e in exclude:
        if e in names or e in by_weight:
            resolved.append(by_weight.get(e, e))
        else:
            raise CompressError(f"--exclude {e!r} is neither a node nor a layer weight of {where}",
                                did_you_mean(e, sorted(names | set(by_weight))))
    return tuple(resolved)


def _copy_metadata(src, dst, method: str, per_channel: bool, calibration: int, exclude,
                   activations: str = "s8") -> None:
    del dst.metadata_props[:]
    for p in src.metadata_props:
        e = dst.metadata_props.add()
        e.key, e.value = p.key, ("int8" if p.key == "compress.precision" else p.value)
    e = dst.metadata_props.add()
    e.key = "compress.quantization"
    e.value = json.dumps({"format": f"QDQ {activations.upper()}S8", "method": method, "per_channel": per_channel,
                          "calibration_images": calibration, "calibration_split": "train", "excluded": list(exclude)})
    dst.doc_string = src.doc_string + " (INT8 QDQ, ONNX Runtime static quantization)"


def evaluate_pair(fp32: Path, int8: Path, data: Dataset, contract: dict, batch: int | None = None,
                  split: str = "test", runtime: str = "ort") -> dict:
    """Both models on a whole split (test: the reported numbers), in ONNX Runtime (CPU) or OpenVINO
    (batches as in `compress.train.eval_batch`: smaller for larger images)."""
    batch = batch or eval_batch(data)
    s32, s8 = cpu_runner(fp32, runtime), cpu_runner(int8, runtime)
    correct32 = correct8 = agree = 0
    max_diff = 0.0
    x, y = (t.cpu() for t in data.split(split))
    for xb, yb in Loader(x, y, batch, mean=contract["mean"], std=contract["std"]):
        a, b = s32(xb.numpy()), s8(xb.numpy())
        pa, pb, t = a.argmax(1), b.argmax(1), yb.numpy()
        correct32 += int((pa == t).sum())
        correct8 += int((pb == t).sum())
        agree += int((pa == pb).sum())
        max_diff = max(max_diff, float(np.abs(a - b).max()))
    n = int(x.shape[0])
    return {"test_images" if split == "test" else "images": n, "fp32_acc": round(100 * correct32 / n, 2),
            "int8_acc": round(100 * correct8 / n, 2), "agreement": round(agree / n, 4),
            "max_logit_diff": round(max_diff, 4)}


def worst_layers(fp32_pre: Path, int8: Path, reader, top: int = 5) -> list[dict]:
    """Activations compared layer by layer (ONNX Runtime's QDQ debugger): the lowest
    signal-to-quantization-noise ratios first, with the node that produces each tensor."""
    work = Path(tempfile.mkdtemp(prefix=".qdq-debug-", dir=Path(int8).parent))
    try:
        aug32, aug8 = work / "fp32.onnx", work / "int8.onnx"
        modify_model_output_intermediate_tensors(str(fp32_pre), str(aug32))
        modify_model_output_intermediate_tensors(str(int8), str(aug8))
        reader.rewind()
        acts32 = collect_activations(str(aug32), reader)
        reader.rewind()
        acts8 = collect_activations(str(aug8), reader)
        errors = compute_activation_error(create_activation_matching(acts8, acts32))
        graph = onnx.load(str(fp32_pre)).graph
    finally:
        shutil.rmtree(work, ignore_errors=True)
    producer = {o: n for n in graph.node for o in n.output}
    rows = []
    for tensor, e in errors.items():
        if "xmodel_err" not in e:
            continue
        layer = _weighted_producer(tensor, producer)
        rows.append({"tensor": tensor, "node": layer.name if layer is not None else producer.get(tensor, tensor),
                     "weight": layer.input[1] if layer is not None and len(layer.input) > 1 else None,
                     "sqnr_db": float(e["xmodel_err"])})
    rows.sort(key=lambda r: r["sqnr_db"])
    seen, out = set(), []
    for r in rows:  # one line per layer: a conv's Relu and MaxPool outputs point at the conv too
        if r["node"] not in seen:
            seen.add(r["node"])
            out.append(r)
    return out[:top]


WEIGHTED = ("Conv", "Gemm", "MatMul")


def _weighted_producer(tensor: str, producer: dict):
    """The Conv/Gemm/MatMul whose output reaches `tensor` through single-input ops (Relu,
    MaxPool, ...): the node to name in --exclude."""
    node = producer.get(tensor)
    for _ in range(8):
        if node is None or node.op_type in WEIGHTED:
            return node
        node = producer.get(node.input[0]) if node.input else None
    return None

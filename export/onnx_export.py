"""PyTorch module -> one self-contained ONNX file with a dynamic batch dimension.

The exporter is torch's dynamo-based one (`torch.onnx.export(..., dynamo=True)`, the default
since torch 2.9): it captures the graph with `torch.export`, so a symbolic batch dimension is
proven rather than assumed, and its onnxscript optimizer folds each BatchNorm into the conv
before it (zeros of a pruned conv stay zero). The TorchScript exporter is deprecated in
torch 2.x and is not used.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn as nn
from onnx import TensorProto

from compress.errors import CompressError
from compress.io import atomic_write
from compress.models import ModelSpec

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
MIN_OPSET = 18  # the dynamo exporter emits opset 18 natively; lower versions are a lossy conversion
PROTOBUF_LIMIT = 2**31 - 1  # one protobuf message; larger models would need external data files


class _Fp16Model(nn.Module):
    """fp16 weights and activations behind an fp32 interface: callers feed and read float32,
    so every artifact of a model takes the same input."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.half()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.half()).float()


def check_opset(opset: int) -> int:
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise CompressError(f"opset {opset} is not supported",
                            f"use {MIN_OPSET}..{newest} (the dynamo exporter starts at {MIN_OPSET}; default 18)")
    return opset


def export_onnx(model: nn.Module, spec: ModelSpec, path: Path, *, opset: int = 18, fp16: bool = False,
                contract: dict | None = None) -> Path:
    """Export `model` (eval mode, on CPU, a copy: the caller's module is untouched) to `path`.

    Input `images` [batch, C, H, W] float32, output `logits` [batch, classes] float32, batch
    dynamic; all weights inside the one file; `contract` (image size, mean/std, class names:
    `compress.checkpoint.input_contract`) goes into the file's metadata for whoever ships it; `onnx.checker.check_model(full_check=True)`
    passes before the file appears (written to a temp file in the same folder, then renamed).
    """
    check_opset(opset)
    path = Path(path)
    net = copy.deepcopy(model).float().cpu().eval()
    if fp16:
        net = _Fp16Model(net).eval()
    # Batch 2, not 1: torch.export specialises a size-1 dimension to a constant.
    example = torch.zeros(2, spec.in_channels, spec.image_size, spec.image_size)
    proto = _trace(net, example, opset)
    _tidy(proto, spec, fp16, contract)
    _check_interface(proto)
    if proto.ByteSize() > PROTOBUF_LIMIT:
        raise CompressError(f"the ONNX model is {proto.ByteSize() / 2**30:.1f} GiB, over protobuf's 2 GiB limit",
                            "a single self-contained file cannot hold it; export a smaller model")

    def write(tmp: Path):
        onnx.save_model(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)

    return atomic_write(path, write)


def _trace(net: nn.Module, example: torch.Tensor, opset: int):
    """Run the dynamo exporter quietly; its progress lines and warnings go into the error if it fails."""
    log = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                net, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                opset_version=opset, dynamo=True, external_data=False, verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CompressError(f"ONNX export failed ({type(e).__name__}: {first})",
                            "run with --debug for the exporter's traceback; this model may use an op ONNX lacks") from e
    proto = program.model_proto
    got = {o.domain: o.version for o in proto.opset_import}.get("", None)
    if got != opset:
        raise CompressError(f"the exporter produced opset {got}, not the requested {opset}", "use --opset 18")
    return proto


def _tidy(proto, spec: ModelSpec, fp16: bool, contract: dict | None = None) -> None:
    """Drop per-node debug metadata (stack traces with this machine's paths) and record what the
    model is and what input it expects."""
    for node in proto.graph.node:
        del node.metadata_props[:]
    proto.graph.name = spec.label
    how = ""
    if contract and contract.get("mean"):
        how = (f": pixels / 255, minus mean {contract['mean']}, divided by std {contract['std']}, "
               f"{spec.image_size}x{spec.image_size}")
    proto.doc_string = (f"{spec.label} exported by compress: input '{INPUT_NAME}' (normalised NCHW float32{how}), "
                        f"output '{OUTPUT_NAME}'")
    meta = {"compress.model": json.dumps(spec.to_dict()), "compress.precision": "fp16" if fp16 else "fp32"}
    if contract:
        meta["compress.input"] = json.dumps({k: v for k, v in contract.items() if k != "classes"})
        if contract.get("classes"):
            meta["compress.classes"] = json.dumps(contract["classes"])
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def _check_interface(proto) -> None:
    """Named input/output, symbolic batch dimension on both: what every caller of these files relies on."""
    ins = [i.name for i in proto.graph.input]
    outs = [o.name for o in proto.graph.output]
    if ins != [INPUT_NAME] or outs != [OUTPUT_NAME]:
        raise CompressError(f"the exported graph has inputs {ins} and outputs {outs}, not ['{INPUT_NAME}'] -> ['{OUTPUT_NAME}']",
                            "this is a bug in the export; please report it")
    for value in (proto.graph.input[0], proto.graph.output[0]):
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.dim_param:
            raise CompressError(f"the batch dimension of '{value.name}' was fixed to {dim.dim_value} during export",
                                "the model's forward must not depend on the batch size")


def onnx_precision(proto) -> str:
    """'fp16' when any float weight is stored in half precision, else 'fp32'."""
    inits = list(proto.graph.initializer) + [s.values for s in proto.graph.sparse_initializer]
    return "fp16" if any(t.data_type == TensorProto.FLOAT16 for t in inits) else "fp32"

"""OpenVINO IR (.xml + .bin) from a checkpoint, through OpenVINO's own converter and writer.

The model goes to ONNX first (the same exporter and checks as `export_checkpoint`), then
`openvino.convert_model` reads it and `openvino.save_model` writes the IR, with fp16 weight
compression on request. The input contract (size, mean/std, classes) rides in the IR's rt_info
under `compress/input`, as it does in the ONNX metadata. Like the ONNX export, the IR is kept
only when OpenVINO (CPU plugin, fp32 precision hint) agrees with PyTorch on real test images.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from compress.checkpoint import input_contract, load_checkpoint
from compress.errors import CompressError
from compress.export.artifacts import _apply_saved_masks, _resolve_data
from compress.export.onnx_export import export_onnx
from compress.export.parity import FP16_TOLERANCE, FP32_TOLERANCE, reference_logits
from compress.io import check_writable
from compress.models import ModelSpec
from compress.prune.rebuild import model_from_checkpoint


def _openvino():
    try:
        import openvino as ov
    except ImportError:
        raise CompressError("OpenVINO is not installed", "pip install openvino (or the toolchain's [openvino] extra)") from None
    return ov


def export_openvino(ckpt_path: Path, out: Path | None = None, *, data=None, fp16: bool = False,
                    force: bool = False) -> dict:
    """Write OUT.xml + OUT.bin (default: the checkpoint's path with .xml) and return what was
    written with its parity against PyTorch; nothing is written when the check fails."""
    ov = _openvino()
    ckpt_path = Path(ckpt_path)
    ckpt = load_checkpoint(ckpt_path, kinds=("dense", "pruned", "slim"))
    xml = Path(out) if out is not None else ckpt_path.with_suffix(".xml")
    if xml.suffix != ".xml":
        raise CompressError(f"output {xml} does not end in .xml", "pass --out NAME.xml (the weights go to NAME.bin)")
    binary = xml.with_suffix(".bin")
    for path in (xml, binary):
        check_writable(path, force=force)
    spec = ModelSpec.from_dict(ckpt["model"])
    model = model_from_checkpoint(ckpt)
    _apply_saved_masks(model, ckpt)
    data = _resolve_data(data, ckpt, spec)
    contract = input_contract(ckpt.get("meta", {}))

    xml.parent.mkdir(parents=True, exist_ok=True)  # every input checked: now the folder may appear
    staging = Path(tempfile.mkdtemp(prefix=f".{xml.stem}.", suffix=".openvino-tmp", dir=xml.parent))
    try:
        onnx_file = export_onnx(model, spec, staging / "model.onnx", contract=contract)
        converted = ov.convert_model(str(onnx_file))
        converted.set_rt_info(json.dumps(contract), ["compress", "input"])
        converted.set_rt_info(json.dumps(spec.to_dict()), ["compress", "model"])
        staged = staging / xml.name
        ov.save_model(converted, str(staged), compress_to_fp16=fp16)
        parity = check_openvino(staged, model, data, tolerance=FP16_TOLERANCE if fp16 else FP32_TOLERANCE)
        os.replace(staged.with_suffix(".bin"), binary)
        os.replace(staged, xml)  # the .xml last: a reader never finds it without its weights
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"xml": str(xml), "bin": str(binary), "bytes": xml.stat().st_size + binary.stat().st_size,
            "fp16_weights": fp16, "parity": parity, "openvino": ov.__version__, "input": contract}


def check_openvino(xml: Path, model, data, *, tolerance: float, n: int = 64) -> dict:
    """OpenVINO's CPU plugin (fp32 precision hint) against PyTorch on `n` real test images."""
    ov = _openvino()
    x, ref = reference_logits(model, data, n)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = np.asarray(compiled({0: x.numpy()})[0], dtype=np.float32)
    if got.shape != ref.shape:
        raise CompressError(f"OpenVINO returned logits of shape {got.shape}, PyTorch {ref.shape}",
                            "re-run with --debug, and report the model")
    abs_diff = float(np.abs(got - ref).max())
    scale = max(float(np.abs(ref).max()), 1e-12)
    result = {"max_abs_diff": abs_diff, "max_rel_diff": abs_diff / scale, "tolerance": tolerance,
              "images": int(x.shape[0]), "runtime": "OpenVINO CPU, f32 hint",
              "argmax_agreement": float((got.argmax(1) == ref.argmax(1)).mean())}
    if not np.isfinite(got).all() or result["max_rel_diff"] > tolerance:
        raise CompressError(
            f"OpenVINO disagrees with PyTorch on {result['images']} test images: max |difference| {abs_diff:.3g} = "
            f"{result['max_rel_diff']:.3g} of the logit scale > tolerance {tolerance:.3g}",
            "no IR was kept; re-run with --debug, and report the model if it persists")
    return result

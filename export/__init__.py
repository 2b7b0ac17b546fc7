"""ONNX export, parity checks against PyTorch, and compact files for sparse models.

    export_onnx(model, spec, path, *, opset=18, fp16=False) -> Path
    ort_session(path, device="cpu") -> onnxruntime.InferenceSession
    available_ort_devices() -> list[str]
    check_parity(onnx_path, model, data, *, n=64, tolerance=None) -> dict
    export_checkpoint(ckpt_path, out=None, *, data, opset=18, fp16=False, compact=None, force=False) -> dict
"""
from __future__ import annotations

from compress.export.artifacts import export_checkpoint
from compress.export.compact import to_compact, to_sparse_initializers, weight_stats
from compress.export.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from compress.export.parity import FP16_TOLERANCE, FP32_TOLERANCE, check_parity
from compress.export.runtime import available_ort_devices, ort_session

__all__ = [
    "export_onnx", "ort_session", "available_ort_devices", "check_parity", "export_checkpoint",
    "to_sparse_initializers", "to_compact", "weight_stats", "INPUT_NAME", "OUTPUT_NAME",
    "FP32_TOLERANCE", "FP16_TOLERANCE",
]

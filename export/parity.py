"""ONNX Runtime against PyTorch on real test images: the export is only done when they agree.

The difference is measured relative to the logit scale (max |ORT - PyTorch| / max |PyTorch|),
so one tolerance serves a model whatever its logit magnitude.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn

from compress.data import Dataset, calibration_batch
from compress.errors import CompressError
from compress.export.onnx_export import INPUT_NAME, onnx_precision
from compress.export.runtime import ort_session

# fp32: float reassociation (BN folding, other conv kernels) gives ~1e-6 of the logit scale
# over VGG13's 11 layers; 1e-4 leaves room without hiding a wrong weight.
FP32_TOLERANCE = 1e-4
# fp16: an 11-bit mantissa rounds each layer at ~5e-4; measured ~1e-3 over VGG13, so 1e-2.
FP16_TOLERANCE = 1e-2


def default_tolerance(precision: str) -> float:
    return FP16_TOLERANCE if precision == "fp16" else FP32_TOLERANCE


def check_parity(onnx_path: Path, model: nn.Module, data: Dataset, *, n: int = 64,
                 tolerance: float | None = None) -> dict:
    """Run ONNX Runtime (CPU) and PyTorch (CPU, fp32) on the first `n` test images.

    Returns {"max_abs_diff", "max_rel_diff", "tolerance", "images", "provider",
    "argmax_agreement"}; raises CompressError with the numbers if max_rel_diff > tolerance.
    The default tolerance follows the file's precision (fp16 weights: looser).
    """
    return compare(onnx_path, *reference_logits(model, data, n), tolerance=tolerance)


def reference_logits(model: nn.Module, data: Dataset, n: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    """The first `n` normalised test images (CPU) and PyTorch's logits for them: computed
    once when several files of one model are checked."""
    x, _ = calibration_batch(data, n)
    x = x.detach().float().cpu().contiguous()
    return x, _torch_logits(model, x)


def compare(onnx_path: Path, x: torch.Tensor, ref: np.ndarray, *, tolerance: float | None = None) -> dict:
    """ONNX Runtime on `x` against the reference logits `ref`; see `check_parity`."""
    onnx_path = Path(onnx_path)
    if tolerance is None:
        tolerance = default_tolerance(onnx_precision(onnx.load(str(onnx_path))))
    got, provider = _ort_logits(onnx_path, x)
    if got.shape != ref.shape:
        raise CompressError(f"ONNX Runtime returned logits of shape {got.shape}, PyTorch {ref.shape}",
                            "the ONNX file belongs to another model")
    abs_diff = float(np.abs(got - ref).max())
    scale = max(float(np.abs(ref).max()), 1e-12)
    result = {
        "max_abs_diff": abs_diff,
        "max_rel_diff": abs_diff / scale,
        "tolerance": float(tolerance),
        "images": int(x.shape[0]),
        "provider": provider,
        "argmax_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
    }
    if not np.isfinite(got).all() or result["max_rel_diff"] > tolerance:
        raise CompressError(
            f"ONNX Runtime disagrees with PyTorch on {result['images']} test images ({onnx_path.name}): max |difference| "
            f"{abs_diff:.3g} = {result['max_rel_diff']:.3g} of the logit scale {scale:.3g} > tolerance {tolerance:.3g} "
            f"(argmax agreement {100 * result['argmax_agreement']:.1f}%)",
            "no ONNX file was kept; re-run with --debug, and report the model if it persists")
    return result


def _torch_logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """fp32 on CPU, as exported: a CUDA reference would differ by TF32/cuDNN rounding, not by export."""
    net = model if _on_cpu_fp32(model) else copy.deepcopy(model).float().cpu()
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            return net(x).float().numpy()
    finally:
        net.train(was_training)


def _on_cpu_fp32(model: nn.Module) -> bool:
    return all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())


def _ort_logits(onnx_path: Path, x: torch.Tensor) -> tuple[np.ndarray, str]:
    sess = ort_session(onnx_path, "cpu")
    (logits,) = sess.run(None, {INPUT_NAME: x.numpy()})
    return np.asarray(logits, dtype=np.float32), sess.get_providers()[0]

"""Every runtime by name: PyTorch and ONNX Runtime (`runtimes`), OpenVINO (`ov_runtimes`)."""
from __future__ import annotations

from compress.errors import CompressError, did_you_mean
from compress.timing.ov_runtimes import OPENVINO_RUNTIMES
from compress.timing.runtimes import (
    CudaGraphs,
    OrtCPU,
    OrtCPUInt8,
    OrtCUDA,
    Runtime,
    TorchBF16,
    TorchCompile,
    TorchEager,
)

RUNTIMES: dict[str, Runtime] = {r.name: r for r in (TorchEager(), TorchBF16(), CudaGraphs(), TorchCompile(),
                                                    OrtCPU(), OrtCPUInt8(), OrtCUDA(), *OPENVINO_RUNTIMES)}


def get_runtimes(names: list[str] | None) -> list[Runtime]:
    """Runtimes by name (all of them when `names` is None); an unknown name is an error."""
    if names is None:
        return list(RUNTIMES.values())
    if not names:
        raise CompressError("no runtimes given", f"choose from: {', '.join(RUNTIMES)}")
    found = []
    for n in names:
        if n not in RUNTIMES:
            raise CompressError(f"unknown runtime {n!r}", did_you_mean(n, list(RUNTIMES)))
        if RUNTIMES[n] not in found:
            found.append(RUNTIMES[n])
    return found

"""The machine and libraries a result came from: recorded beside every number we print."""
from __future__ import annotations

import os
import platform

import torch
import torchvision

from compress.errors import CompressError


def resolve_device(name: str | None = "auto") -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is an error, not a fallback."""
    name = name or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CompressError("--device cuda was asked for but no CUDA GPU is available", "use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise CompressError(f"unknown device {name!r}", "use auto, cpu or cuda") from None


def cuda_index(device: torch.device) -> int:
    """The GPU index of a CUDA device: `torch.device("cuda")` carries none (and
    `torch.cuda.set_device` refuses it), so it means the current device."""
    return device.index if device.index is not None else torch.cuda.current_device()


def versions() -> dict:
    """Library versions worth recording beside any result."""
    out = {"python": platform.python_version(), "torch": str(torch.__version__),
           "torchvision": str(torchvision.__version__)}
    from importlib.metadata import PackageNotFoundError, version

    # what pip installed (a module's own __version__ can lag: Torch-Pruning 1.6.1 says 1.6.0)
    for mod, dists in (("torch_pruning", ("torch-pruning",)), ("onnx", ("onnx",)),
                       ("onnxruntime", ("onnxruntime-gpu", "onnxruntime")), ("openvino", ("openvino",))):
        for dist in dists:
            try:
                out[mod] = version(dist)
                break
            except PackageNotFoundError:
                continue
        else:  # no installed metadata (a --target copy without it): the module's own word
            try:
                out[mod] = str(__import__(mod).__version__)
            except Exception:
                pass
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags as /proc/cpuinfo lists them ('flags' on x86, 'Features' on
    Arm); empty where there is no /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def cpu_int8_flags() -> list[str]:
    """CPU instructions that make INT8 inference fast (VNNI, AMX; dot-product on Arm). ONNX
    Runtime's documentation warns that INT8 may be no faster without them."""
    flags = cpu_flags()
    return [f for f in INT8_FLAGS if f in flags]


BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 units (AVX-512-BF16, AMX): where PyTorch's bf16 autocast runs natively.
    COMPRESS_CPU_BF16=0 makes it answer no (the test suite pins fp32 so that its numbers do not
    depend on the CI machine's CPU)."""
    if os.environ.get("COMPRESS_CPU_BF16", "1") == "0":
        return False
    return bool(cpu_flags() & set(BF16_FLAGS))


def machine() -> dict:
    """CPU, threads, GPU and versions, for benchmark headers and reports."""
    info = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_int8": cpu_int8_flags(),
        "cpu_bf16": cpu_has_bf16(),
    }
    info.update(versions())
    return info

"""ONNX Runtime sessions on an explicit device: the CUDA provider or an error, never a silent CPU fallback.

Every artifact `export` writes (plain, fp16, sparse initializers, compact) is a standard ONNX
file, so one loader serves them all; the compact file rebuilds its weights with ordinary ONNX
ops that ONNX Runtime constant-folds while the session is created.
"""
from __future__ import annotations

import contextlib
import functools
import io
import re
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from compress.errors import CompressError

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


def _session_options(quiet: bool = False):
    opts = ort.SessionOptions()
    # 3 = errors only: ORT's warnings about unused initializers and the like are noise here;
    # 4 = fatal only, for the CUDA probe, whose failure we report ourselves.
    opts.log_severity_level = 4 if quiet else 3
    return opts


def _parse_device(device: str) -> tuple[str, int]:
    m = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", str(device).strip())
    if not m:
        raise CompressError(f"unknown ONNX Runtime device {device!r}", "use cpu or cuda (cuda:N for another GPU)")
    return m.group(1), int(m.group(2) or 0)


def ort_session(path: Path, device: str = "cpu"):
    """An `onnxruntime.InferenceSession` for `path` on `device` ("cpu", "cuda" or "cuda:N").

    On "cuda" the session must really run on the CUDA provider: if the provider is not in
    this build, or its libraries or the GPU are missing, this raises instead of running on CPU.
    """
    path = Path(path)
    kind, index = _parse_device(device)
    if not path.is_file():
        raise CompressError(f"ONNX file {path} does not exist", "export one with `compress export MODEL.pt`")
    if kind == "cpu":
        return _create(path, [_CPU], _session_options())
    if _CUDA not in ort.get_available_providers():
        raise CompressError("ONNX Runtime's CUDA provider is unavailable in this installation",
                            "install onnxruntime-gpu, or use device cpu")
    _preload_cuda_libraries()
    strict = _session_options(quiet=True)
    # every node on the CUDA provider, or no session: a node ORT would quietly run on the CPU
    # (an op the provider lacks) would make a "CUDA" timing partly a CPU one
    strict.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        sess = _create(path, [(_CUDA, {"device_id": index}), _CPU], strict)
    except CompressError:
        _create(path, [_CPU], _session_options())  # a bad file raises its own error here
        try:
            _create(path, [(_CUDA, {"device_id": index}), _CPU], _session_options(quiet=True))
        except CompressError:
            raise CompressError(f"ONNX Runtime's CUDA provider failed to start on cuda:{index}",
                                "check the GPU and the CUDA/cuDNN libraries onnxruntime-gpu needs, or use device "
                                "cpu") from None
        raise CompressError(f"some nodes of {path.name} would run on the CPU, not ONNX Runtime's CUDA provider",
                            "the provider lacks one of the model's ops here; time it on cpu, or on torch") from None
    if sess.get_providers()[0] != _CUDA:
        raise CompressError(f"ONNX Runtime could not start its CUDA provider on cuda:{index} "
                            f"(the session fell back to {sess.get_providers()[0]})",
                            "check the GPU and the CUDA/cuDNN libraries onnxruntime-gpu needs, or use device cpu")
    return sess


def _create(path: Path, providers: list, options):
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types, all bad files here
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CompressError(f"ONNX Runtime cannot load {path} ({first[:200]})",
                            "the file is corrupt or not an ONNX model; re-export it") from None


def _preload_cuda_libraries() -> None:
    """onnxruntime-gpu >= 1.21 can load CUDA/cuDNN from the nvidia-* wheels torch installed."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    quiet = io.StringIO()  # it prints each library it misses; the provider check below says what matters
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            preload()
    except Exception:  # a missing library shows up as the CUDA provider failing to start
        pass


@functools.lru_cache(maxsize=1)
def available_ort_devices() -> list[str]:
    """Devices ONNX Runtime can really run on here: "cpu", plus "cuda" when a probe session
    (a one-node model) starts on the CUDA provider."""
    devices = ["cpu"]
    if _CUDA not in ort.get_available_providers():
        return devices
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    # IR 10 as torch's exporter writes; onnx's newest IR can be newer than ONNX Runtime reads
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "probe.onnx"
        onnx.save_model(probe, str(path))
        try:
            ort_session(path, "cuda")
            devices.append("cuda")
        except CompressError:
            pass
    return devices


RUNNERS = ("ort", "openvino")


def cpu_runner(path: Path, runtime: str = "ort", threads: int | None = None):
    """A callable images (N, C, H, W float32 numpy) -> logits for `path` on the CPU: ONNX Runtime,
    or OpenVINO's CPU plugin with the f32 precision hint (INT8 layers stay INT8: the hint only sets
    what runs in float), so one measurement path serves both runtimes."""
    if runtime == "ort":
        session = ort_session(path)
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if runtime == "openvino":
        try:
            import openvino as ov
        except ImportError:
            raise CompressError("OpenVINO is not installed", "pip install openvino") from None
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        request = compiled.create_infer_request()
        return lambda x: request.infer({0: x})[0].copy()
    raise CompressError(f"unknown runtime {runtime!r}", f"choose one of: {', '.join(RUNNERS)}")

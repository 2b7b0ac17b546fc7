"""The runtimes a model is measured on, by name.

Each runtime turns a `BenchModel` into a zero-argument call that runs one batch, with its
input already in place (on the device, in the runtime's dtype and layout), so the clock
times inference and nothing else. A runtime that cannot run here raises `Skipped(reason)`:
it becomes a "skipped: why" row, never a silent fallback to something else. A runtime that
applies here but breaks (an export, a quantization or a compilation that raises) raises
`Failed(reason)`, or any exception: a "failed" row, which fails the command.

    torch          PyTorch eager, fp32 (on --device: CPU or CUDA; CUDA convolutions in TF32, torch's default)
    torch-bf16     PyTorch eager, bf16 weights and activations, channels_last (CUDA)
    cuda-graphs    torch-bf16 captured once into a CUDA graph and replayed (CUDA, small batches)
    torch-compile  torch.compile (Inductor), static shapes; bf16 + channels_last on CUDA, fp32 on CPU
    ort-cpu        ONNX Runtime, CPU execution provider, fp32
    ort-cuda       ONNX Runtime, CUDA execution provider, fp32, input and output bound on the GPU
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch._dynamo
import torch.nn as nn

from compress.data import load_dataset
from compress.errors import CompressError
from compress.export import ort_session
from compress.timing.models import BenchModel

CUDA_GRAPH_MAX_BATCH = 64  # launch overhead matters at small batches; large ones are compute-bound


class Skipped(Exception):
    """This runtime cannot measure this model/batch here; the message says why."""


class Failed(Exception):
    """This runtime applies here but broke on this model; the message says how."""


@dataclass
class Context:
    """What every runtime needs: where torch runs, CPU threads, a folder for ONNX files."""

    device: torch.device
    threads: int
    workdir: Path
    explicit: frozenset = frozenset()  # runtimes the user named (opt-in ones run only then)
    seed: int = 0
    spin: bool = True
    _onnx: dict = field(default_factory=dict)
    _int8: dict = field(default_factory=dict)

    def onnx_path(self, model: BenchModel) -> Path:
        """The model exported once to ONNX (dynamic batch), shared by the ONNX runtimes."""
        if model.name not in self._onnx:
            try:  # the export package is imported here, guarded: without onnx the torch runtimes still run
                from compress.export import export_onnx
            except ImportError as e:
                self._onnx[model.name] = Skipped(f"ONNX export is unavailable ({e})")
            else:
                path = self.workdir / f"model_{len(self._onnx)}.onnx"
                try:
                    export_onnx(model.module, model.spec, path)
                    model.onnx_bytes = path.stat().st_size
                    self._onnx[model.name] = path
                except CompressError as e:
                    self._onnx[model.name] = Failed(f"ONNX export failed: {e}")
        found = self._onnx[model.name]
        if isinstance(found, (Skipped, Failed)):
            raise found
        return found

    def int8_path(self, model: BenchModel, activations: str = "s8") -> Path:
        """The model's fp32 ONNX file quantized once (static QDQ, per-channel weights; activations
        "s8" for ONNX Runtime, "u8" for OpenVINO), calibrated on 256 training images of the data it
        was trained on (the bundled sample when that is unknown); accuracy is `compress quantize`'s
        job, speed is this one's."""
        key = (model.name, activations)
        if key not in self._int8:
            try:
                from compress.export.quantize import CalibrationReader, calibration_images, quantize_file

                fp32 = self.onnx_path(model)
                data = load_dataset(model.meta.get("data_source") or "sample", quiet=True,
                                    image_size=model.spec.image_size)
                x, y = calibration_images(data, 256)
                contract = {"mean": model.meta.get("mean") or data.mean, "std": model.meta.get("std") or data.std}
                path = fp32.with_name(fp32.stem + (".int8.onnx" if activations == "s8" else ".u8s8.onnx"))
                quantize_file(fp32, path, CalibrationReader(x, y, contract), activations=activations)
                if activations == "s8":
                    model.int8_bytes = path.stat().st_size
                self._int8[key] = path
            except (CompressError, ImportError, RuntimeError, ValueError) as e:
                self._int8[key] = Failed(f"INT8 quantization failed: {type(e).__name__}: {str(e)[:160]}")
        found = self._int8[key]
        if isinstance(found, (Skipped, Failed)):
            raise found
        return found

    def input(self, spec, batch_size: int, device="cpu", dtype=torch.float32, channels_last=False) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        x = torch.randn(batch_size, spec.in_channels, spec.image_size, spec.image_size, generator=g)
        x = x.to(device=device, dtype=dtype)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class Runtime:
    """One way to run a model. `load` is per model (conversion, session); `call` per batch size."""

    name = ""
    help = ""
    placement = "cpu"  # "cpu" | "cuda" | "device" (wherever --device says)
    uses_torch = False  # torch on the GPU: CUDA-event clock and peak memory apply

    def on_cuda(self, ctx: Context) -> bool:
        return self.placement == "cuda" or (self.placement == "device" and ctx.device.type == "cuda")

    def clock_for(self, ctx: Context) -> str:
        """"cuda" (events on the torch stream) or "wall" (perf_counter around a synchronous call)."""
        return "cuda" if self.uses_torch and self.on_cuda(ctx) else "wall"

    def check(self, ctx: Context) -> None:
        """Raise Skipped when this runtime cannot run at all here."""
        if self.placement == "cuda":
            _need_cuda(ctx)

    def skip_batch(self, batch_size: int) -> str | None:
        return None

    def load(self, model: BenchModel, ctx: Context):
        raise NotImplementedError

    def call(self, loaded, model: BenchModel, batch_size: int, ctx: Context) -> Callable[[], object]:
        raise NotImplementedError


def _need_cuda(ctx: Context) -> None:
    if not torch.cuda.is_available():
        raise Skipped("no CUDA device")
    if ctx.device.type != "cuda":
        raise Skipped("--device cpu was chosen")


def _cuda_index(ctx: Context) -> int:
    return ctx.device.index if ctx.device.type == "cuda" and ctx.device.index is not None else 0


def _eager(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run():
        with torch.inference_mode():
            return module(x)

    return run


class TorchEager(Runtime):
    name = "torch"
    help = "PyTorch eager, fp32 on --device (on CUDA, cuDNN convolutions use TF32, PyTorch's default)"
    placement = "device"
    uses_torch = True

    def load(self, model, ctx):
        return copy.deepcopy(model.module).to(ctx.device, torch.float32).eval()

    def call(self, loaded, model, batch_size, ctx):
        return _eager(loaded, ctx.input(model.spec, batch_size, ctx.device))


class TorchBF16(Runtime):
    name = "torch-bf16"
    help = "PyTorch eager, bf16 weights and activations, channels_last (CUDA)"
    placement = "cuda"
    uses_torch = True

    def load(self, model, ctx):
        m = copy.deepcopy(model.module).to(ctx.device, torch.bfloat16).eval()
        return m.to(memory_format=torch.channels_last)

    def call(self, loaded, model, batch_size, ctx):
        return _eager(loaded, ctx.input(model.spec, batch_size, ctx.device, torch.bfloat16, channels_last=True))


class CudaGraphs(TorchBF16):
    name = "cuda-graphs"
    help = f"torch-bf16 captured into a CUDA graph and replayed (CUDA, batch <= {CUDA_GRAPH_MAX_BATCH})"

    def skip_batch(self, batch_size):
        if batch_size > CUDA_GRAPH_MAX_BATCH:
            return f"CUDA graphs are measured at batch <= {CUDA_GRAPH_MAX_BATCH} (launch overhead matters only there)"
        return None

    def call(self, loaded, model, batch_size, ctx):
        x = ctx.input(model.spec, batch_size, ctx.device, torch.bfloat16, channels_last=True)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode():
            with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graphs advises
                for _ in range(3):
                    loaded(x)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = loaded(x)
        static = (x, out)  # the graph reads and writes these addresses: keep them alive with it

        def run():
            graph.replay()
            return static[1]

        return run


class TorchCompile(Runtime):
    name = "torch-compile"
    help = "torch.compile (Inductor, static shapes); bf16 + channels_last on CUDA, fp32 on CPU (opt-in on CPU)"
    placement = "device"
    uses_torch = True

    def check(self, ctx):
        if ctx.device.type == "cpu" and self.name not in ctx.explicit:
            raise Skipped("opt-in on CPU (Inductor compiles each model and batch size for minutes on few cores); "
                          "add torch-compile to --runtimes to measure it")

    def load(self, model, ctx):
        cuda = ctx.device.type == "cuda"
        m = copy.deepcopy(model.module).to(ctx.device, torch.bfloat16 if cuda else torch.float32).eval()
        if cuda:
            m = m.to(memory_format=torch.channels_last)
        _allow_recompiles()
        return torch.compile(m, dynamic=False)

    def call(self, loaded, model, batch_size, ctx):
        cuda = ctx.device.type == "cuda"
        x = ctx.input(model.spec, batch_size, ctx.device, torch.bfloat16 if cuda else torch.float32, channels_last=cuda)
        run = _eager(loaded, x)
        try:
            run()  # compiles now, so a failure is a failed row and warm-up times stay honest
        except Exception as e:  # Inductor raises many types (no compiler, unsupported op, ...)
            raise Failed(f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
        return run


def _allow_recompiles(limit: int = 64) -> None:
    """Every model × batch size is one compiled graph of the same `forward`; past Dynamo's
    recompile limit (8) it would silently run eager, so lift the limit instead."""
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(limit, getattr(torch._dynamo.config, name)))


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise Skipped("onnxruntime is not installed (pip install onnxruntime-gpu)") from None
    return onnxruntime


class OrtCPU(Runtime):
    name = "ort-cpu"
    help = "ONNX Runtime, CPU execution provider, fp32, --threads intra-op threads"

    def check(self, ctx):
        _onnxruntime()

    def onnx_file(self, model, ctx) -> Path:
        return ctx.onnx_path(model)

    def load(self, model, ctx):
        ort = _onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = ctx.threads  # the same thread count torch gets: a fair comparison
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if not ctx.spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(self.onnx_file(model, ctx)), opts, providers=["CPUExecutionProvider"])

    def call(self, session, model, batch_size, ctx):
        feed = {session.get_inputs()[0].name: ctx.input(model.spec, batch_size).numpy()}
        outputs = [session.get_outputs()[0].name]
        return lambda: session.run(outputs, feed)


class OrtCPUInt8(OrtCPU):
    name = "ort-cpu-int8"
    help = ("ONNX Runtime, CPU execution provider, INT8 (static QDQ S8S8, per-channel); fast where the CPU has "
            "VNNI or AMX int8 instructions")

    def onnx_file(self, model, ctx) -> Path:
        return ctx.int8_path(model)


class OrtCUDA(Runtime):
    name = "ort-cuda"
    help = "ONNX Runtime, CUDA execution provider, fp32 (input and output stay on the GPU)"
    placement = "cuda"

    def check(self, ctx):
        _onnxruntime()
        _need_cuda(ctx)
        try:
            from compress.export import available_ort_devices
        except ImportError as e:
            raise Skipped(f"ONNX export is unavailable ({e})") from None
        if "cuda" not in available_ort_devices():
            raise Skipped("ONNX Runtime's CUDA execution provider is not usable here")

    def load(self, model, ctx):
        try:
            session = ort_session(ctx.onnx_path(model), device=f"cuda:{_cuda_index(ctx)}")
        except CompressError as e:
            raise Skipped(f"ONNX Runtime CUDA provider unavailable: {e}") from None
        if session.get_providers()[0] != "CUDAExecutionProvider":  # never report CPU work as CUDA
            raise Skipped(f"ONNX Runtime fell back to {session.get_providers()[0]}")
        return session

    def call(self, session, model, batch_size, ctx):
        ort = _onnxruntime()
        index = _cuda_index(ctx)
        x = ort.OrtValue.ortvalue_from_numpy(ctx.input(model.spec, batch_size).numpy(), "cuda", index)
        binding = session.io_binding()
        binding.bind_ortvalue_input(session.get_inputs()[0].name, x)
        binding.bind_output(session.get_outputs()[0].name, "cuda", index)

        def run():  # Run() synchronises the CUDA provider before returning: wall time is GPU time
            session.run_with_iobinding(binding)
            return x  # x must outlive the binding that points at it

        return run

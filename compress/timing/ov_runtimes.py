"""OpenVINO on the CPU: the runtime deployment engineers ship CNNs with on Intel (and AMD) CPUs.

    openvino-cpu        OpenVINO CPU plugin, fp32 (INFERENCE_PRECISION_HINT f32)
    openvino-cpu-bf16   the same ONNX file with INFERENCE_PRECISION_HINT bf16: only where the CPU
                        has bf16 units (AVX-512-BF16, AMX), else skipped with the reason
    openvino-cpu-int8   an INT8 file made the way OpenVINO runs fast: static QDQ with unsigned
                        activations and symmetric signed per-channel weights (U8S8, what its
                        low-precision transformations expect from ONNX), the rest in fp32

Every setting that changes speed is explicit and recorded (threads, one stream, the LATENCY
hint, the precision hint), as for ONNX Runtime. The INT8 runtime checks the compiled model: if
no convolution or matrix product runs in int8, the row fails instead of reporting fp32 speed as
INT8. OpenVINO reads the ONNX files the export writes; it is optional (pip install openvino).
"""
from __future__ import annotations

from pathlib import Path

from compress.timing.models import BenchModel
from compress.timing.runtimes import Context, Failed, Runtime, Skipped

WEIGHTED_LAYERS = ("Convolution", "FullyConnected", "MatMul", "GroupConvolution")


def openvino():
    try:
        import openvino as ov
    except ImportError:
        raise Skipped("openvino is not installed (pip install openvino)") from None
    return ov


def cpu_has_bf16() -> bool:
    """OpenVINO's own view of the CPU: 'BF16' among its optimisation capabilities."""
    return "BF16" in openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compile_config(threads: int, precision: str) -> dict:
    """The CPU plugin's settings, all explicit: what a latency measurement needs, recorded."""
    return {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision, "ENABLE_HYPER_THREADING": False}


def layer_precisions(compiled) -> dict[str, int]:
    """How many conv/matmul layers of a compiled model run in each precision (its runtime graph)."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) in WEIGHTED_LAYERS:
            p = info["runtimePrecision"].astype(str)
            counts[p] = counts.get(p, 0) + 1
    return counts


class OpenVinoCPU(Runtime):
    name = "openvino-cpu"
    help = "OpenVINO CPU plugin, fp32 (precision hint f32), --threads threads, one stream, LATENCY hint"
    precision = "f32"

    def check(self, ctx):
        openvino()

    def onnx_file(self, model: BenchModel, ctx: Context) -> Path:
        return ctx.onnx_path(model)

    def load(self, model, ctx):
        ov = openvino()
        core = ov.Core()
        try:
            return core.compile_model(core.read_model(str(self.onnx_file(model, ctx))), "CPU",
                                      compile_config(ctx.threads, self.precision))
        except RuntimeError as e:
            raise Failed(f"OpenVINO could not compile it: {str(e).splitlines()[0][:160]}") from None

    def call(self, compiled, model, batch_size, ctx):
        request = compiled.create_infer_request()
        x = ctx.input(model.spec, batch_size).numpy()
        return lambda: request.infer({0: x})


class OpenVinoCPUBF16(OpenVinoCPU):
    name = "openvino-cpu-bf16"
    help = "OpenVINO CPU plugin, bf16 (precision hint bf16); only on CPUs with bf16 units (AVX-512-BF16, AMX)"
    precision = "bf16"

    def check(self, ctx):
        if not cpu_has_bf16():
            raise Skipped("this CPU has no bf16 units (no AVX-512-BF16 or AMX): OpenVINO would emulate bf16")


class OpenVinoCPUInt8(OpenVinoCPU):
    name = "openvino-cpu-int8"
    help = "OpenVINO CPU plugin, INT8 (static QDQ U8S8, per-channel weights; the rest fp32)"

    def onnx_file(self, model, ctx):
        return ctx.int8_path(model, activations="u8")  # U8S8: the scheme OpenVINO runs in int8

    def load(self, model, ctx):
        compiled = super().load(model, ctx)
        precisions = layer_precisions(compiled)
        if not any(p in ("i8", "u8") for p in precisions):
            raise Failed(f"OpenVINO ran no layer in int8 ({precisions}): this would be fp32 speed")
        return compiled


OPENVINO_RUNTIMES = (OpenVinoCPU(), OpenVinoCPUBF16(), OpenVinoCPUInt8())

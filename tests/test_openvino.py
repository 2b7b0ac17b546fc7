"""OpenVINO: bench runtimes (fp32, bf16 where the CPU has it, INT8 that really runs in int8),
the IR export with its parity check, the fastest-runtime verdict, and a missing OpenVINO."""
import json
import sys

import pytest
import torch

from compress.checkpoint import save_checkpoint
from compress.cli import main
from compress.models import ModelSpec
from compress.timing import Settings, ov_runtimes, run_benchmark
from compress.timing.output import fastest_lines
from compress.timing.registry import get_runtimes
from compress.timing.runtimes import Skipped

pytest.importorskip("openvino")
pytestmark = pytest.mark.usefixtures("one_thread")
SPEC = ModelSpec("vgg13", width=0.125)


@pytest.fixture(scope="module")
def dense(tmp_path_factory, sample):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ov") / "dense.pt"
    save_checkpoint(path, {"kind": "dense", "model": SPEC.to_dict(), "state_dict": SPEC.build().state_dict(),
                           "meta": {"accuracy": 10.0, "dataset": sample.describe()}})
    return path


def test_openvino_rows_are_measured_and_int8_runs_in_int8(dense, tmp_path):
    settings = Settings(runtimes=("ort-cpu", "openvino-cpu", "openvino-cpu-bf16", "openvino-cpu-int8"),
                        device="cpu", batch_sizes=(1, 8), warmup=1, repeats=3, threads=1)
    report = run_benchmark([dense], out=tmp_path / "bench", settings=settings, show=False)
    rows = {(r["runtime"], r["batch_size"]): r for r in report["results"]}
    for runtime in ("openvino-cpu", "openvino-cpu-int8"):
        assert all(rows[(runtime, b)]["status"] == "ok" for b in (1, 8)), rows[(runtime, 1)]
    bf16 = rows[("openvino-cpu-bf16", 1)]
    assert bf16["status"] == ("ok" if ov_runtimes.cpu_has_bf16() else "skipped")
    assert "openvino" in report["machine"]
    config = report["settings"]["openvino"]  # every setting that changes speed, recorded
    assert config["openvino-cpu"]["INFERENCE_NUM_THREADS"] == 1 and config["openvino-cpu"]["NUM_STREAMS"] == 1
    assert config["openvino-cpu-bf16"]["INFERENCE_PRECISION_HINT"] == "bf16"
    assert {(f["model"], f["batch_size"]) for f in report["fastest"]} == {("dense", 1), ("dense", 8)}
    assert all(f["reference"] == "dense fp32 on ort-cpu" for f in report["fastest"])


def test_the_int8_runtime_fails_when_openvino_would_not_run_int8(dense, monkeypatch, tmp_path):
    """A compiled model with no int8 layer is a failed row, never fp32 speed called INT8."""
    monkeypatch.setattr(ov_runtimes, "layer_precisions", lambda compiled: {"f32": 11})
    settings = Settings(runtimes=("openvino-cpu-int8",), device="cpu", batch_sizes=(1,), warmup=1, repeats=3, threads=1)
    report = run_benchmark([dense], out=tmp_path / "bench", settings=settings, show=False)
    (row,) = report["results"]
    assert row["status"] == "failed" and "no layer in int8" in row["reason"]


def test_bf16_is_skipped_on_a_cpu_without_bf16_units(monkeypatch):
    monkeypatch.setattr(ov_runtimes, "cpu_has_bf16", lambda: False)
    with pytest.raises(Skipped, match="no bf16 units"):
        get_runtimes(["openvino-cpu-bf16"])[0].check(None)


def test_without_openvino_its_runtimes_are_skipped_and_export_says_how_to_install(monkeypatch, dense, tmp_path,
                                                                                   capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(Skipped, match="pip install openvino"):
        get_runtimes(["openvino-cpu"])[0].check(None)
    assert main(["export", str(dense), "--format", "openvino", "--out", str(tmp_path / "m.xml")]) == 2
    assert "OpenVINO is not installed" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_export_openvino_writes_a_checked_ir_with_its_contract(dense, tmp_path, capsys):
    import openvino as ov

    xml = tmp_path / "ir" / "dense.xml"
    assert main(["export", str(dense), "--format", "openvino", "--out", str(xml), "--data", "sample"]) == 0
    assert xml.exists() and xml.with_suffix(".bin").exists()
    assert "argmax agree 100.0%" in capsys.readouterr().out
    model = ov.Core().read_model(str(xml))
    contract = json.loads(model.get_rt_info(["compress", "input"]).astype(str))
    assert contract["image_size"] == 32 and len(contract["mean"]) == 3
    assert [p.name for p in tmp_path.joinpath("ir").iterdir()] == ["dense.xml", "dense.bin"] or \
        sorted(p.name for p in tmp_path.joinpath("ir").iterdir()) == ["dense.bin", "dense.xml"]
    # again without --force: refused, nothing changed; a wrong suffix: refused before any work
    assert main(["export", str(dense), "--format", "openvino", "--out", str(xml)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(dense), "--format", "openvino", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "does not end in .xml" in capsys.readouterr().err


def test_the_verdict_names_the_fastest_runtime_per_batch():
    report = {"models": [{"name": "dense", "accuracy": 70.0}, {"name": "slim", "accuracy": 69.5}], "results": [
        {"model": m, "runtime": rt, "batch_size": b, "status": "ok", "median_ms": ms}
        for m, rt, b, ms in (("dense", "ort-cpu", 1, 10.0), ("slim", "ort-cpu", 1, 5.0),
                             ("slim", "openvino-cpu-int8", 1, 2.0), ("dense", "ort-cpu", 64, 100.0),
                             ("slim", "openvino-cpu-bf16", 64, 20.0), ("slim", "ort-cpu", 64, 40.0))]}
    lines = fastest_lines(report)
    assert "fastest for slim at batch 1: openvino-cpu-int8 (int8), 2.00 ms, 5.00x dense fp32 on ort-cpu" in lines[2]
    assert "fastest for slim at batch 64: openvino-cpu-bf16 (bf16), 20.00 ms, 5.00x dense fp32 on ort-cpu" in lines[3]
    assert "fp32 top-1 69.50%" in lines[3]


def test_quantize_for_openvino_is_gated_and_measured_in_openvino(tiny_dense, small, tmp_path):
    """--runtime openvino: U8S8 QDQ, accuracy and agreement measured in OpenVINO on the whole test
    split, the file runs with int8 layers there."""
    import openvino as ov

    from compress.export import export_checkpoint
    from compress.export.quantize import quantize

    _, path = tiny_dense
    fp32 = tmp_path / "dense.onnx"
    export_checkpoint(path, fp32, data=small, compact=False)
    r = quantize(fp32, None, small, calibration=64, max_drop=100, runtime="openvino")
    out = tmp_path / "dense.openvino-int8.onnx"
    assert r["int8"] == str(out) and out.exists() and r["format"] == "QDQ, U8S8"
    assert r["runtime"] == "OpenVINO CPU" and r["test_images"] == small.test_x.shape[0] and r["agreement"] >= 0.9
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(out)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert any(p in ("i8", "u8") for p in ov_runtimes.layer_precisions(compiled))

"""`compress bench` and the bench library: schema, sane timings, skipped rows, bad input.

Tiny VGG13s (width 0.125), batch 1 and 32, a few timed calls, one CPU thread (on a busy
2-core machine two threads wait for each other at every op). No speed is asserted.
"""
import csv
import json
from pathlib import Path

import pytest
import torch

from compress.checkpoint import save_checkpoint
from compress.cli import main
from compress.errors import CompressError
from compress.models import ModelSpec
from compress.prune.masks import apply_masks, filter_masks, unstructured_masks
from compress.prune.ratios import allocate, prunable
from compress.prune.slim import slim_checkpoint
from compress.timing import BenchModel, Settings, run_benchmark
from compress.timing.latency import RESULT_KEYS, measure
from compress.timing.registry import get_runtimes
from compress.timing.runtimes import Context

SPEC = ModelSpec("vgg13", width=0.125)
CUDA_RUNTIMES = ("torch-bf16", "cuda-graphs", "ort-cuda")
FAST = dict(batch_sizes=(1, 32), warmup=1, repeats=5, threads=1)


def _payload(kind, model, **extra):
    return {"kind": kind, "model": SPEC.to_dict(), "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
            "meta": {"accuracy": 10.0}, **extra}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """dense.pt, an 80% unstructured masked model, a 40% filter masked model and its slim file."""
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    dense = SPEC.build().eval()
    save_checkpoint(d / "dense.pt", _payload("dense", dense))

    unstr = SPEC.build().eval()
    unstr.load_state_dict(dense.state_dict())
    masks = unstructured_masks(unstr, allocate(unstr, "unstructured", 0.8))
    apply_masks(unstr, masks)
    save_checkpoint(d / "Omp_unstructured_0.80_acc_10.00.pt",
                    _payload("pruned", unstr, masks=masks, meta={"prune_kind": "unstructured", "sparsity": 0.8}))

    filt = SPEC.build().eval()
    filt.load_state_dict(dense.state_dict())
    fmasks = filter_masks(filt, {n: 0.4 for n in prunable(filt, "filter")}, SPEC.example_input())
    apply_masks(filt, fmasks)
    pruned = _payload("pruned", filt, masks=fmasks, meta={"prune_kind": "filter", "sparsity": 0.4})
    save_checkpoint(d / "Omp_filter_0.40_acc_10.00.pt", pruned)
    payload, _ = slim_checkpoint({"format": "x", **pruned}, None)
    save_checkpoint(d / "Omp_filter_0.40_acc_10.00_slim.pt", payload)
    return d


@pytest.fixture(scope="module")
def report(checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    files = [checkpoints / n for n in ("Omp_unstructured_0.80_acc_10.00.pt", "dense.pt",
                                       "Omp_filter_0.40_acc_10.00_slim.pt")]
    settings = Settings(runtimes=("torch", "ort-cpu", "ort-cpu-int8") + CUDA_RUNTIMES, device="cpu", **FAST)
    return run_benchmark(files, out=out, settings=settings, show=False)


def test_int8_rows_against_dense_fp32_and_own_fp32(report):
    rows = {(r["model"], r["runtime"], r["batch_size"]): r for r in report["results"]}
    int8 = [r for r in report["results"] if r["runtime"] == "ort-cpu-int8"]
    assert len(int8) == 3 * 2 and all(r["status"] == "ok" for r in int8)
    for r in int8:
        fp32_dense = rows[("dense", "ort-cpu", r["batch_size"])]["median_ms"]
        fp32_same = rows[(r["model"], "ort-cpu", r["batch_size"])]["median_ms"]
        assert r["speedup_vs_dense_fp32"] == pytest.approx(fp32_dense / r["median_ms"])
        assert r["speedup_vs_fp32"] == pytest.approx(fp32_same / r["median_ms"])
    assert isinstance(report["machine"]["cpu_int8"], list)


def test_json_schema_and_files(report):
    files = {k: Path(v) for k, v in report["files"].items()}
    on_disk = json.loads(files["json"].read_text())
    assert {"machine", "settings", "models", "results"} <= set(on_disk)
    assert {"cpu", "threads", "gpu", "torch"} - set(on_disk["machine"]) == {"threads"}  # threads: in settings
    assert {"batch_sizes", "runtimes", "warmup", "repeats", "threads", "device"} <= set(on_disk["settings"])
    assert on_disk["settings"]["threads"] == 1 and on_disk["settings"]["batch_sizes"] == [1, 32]
    for m in on_disk["models"]:
        assert {"name", "path", "kind", "params", "macs", "checkpoint_bytes", "onnx_bytes"} <= set(m)
    for r in on_disk["results"]:
        assert set(RESULT_KEYS) <= set(r)
        assert r["status"] in ("ok", "skipped")
    assert len(on_disk["results"]) == 3 * 6 * 2  # models × runtimes × batch sizes, skipped ones included
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and files["png"].stat().st_size > 20_000


def test_csv_has_one_row_per_result(report):
    with open(report["files"]["csv"]) as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0][: len(RESULT_KEYS)]) == RESULT_KEYS
    assert "params" in rows[0] and "onnx_bytes" in rows[0]
    assert len(rows) - 1 == len(report["results"])


def test_dense_first_and_model_facts(report, checkpoints):
    models = {m["name"]: m for m in report["models"]}
    assert report["models"][0]["kind"] == "dense" and report["settings"]["reference"] == "dense"
    dense, unstr = models["dense"], models["Omp_unstructured_0.80_acc_10.00"]
    slim = models["Omp_filter_0.40_acc_10.00_slim"]
    assert unstr["kind"] == "pruned" and slim["kind"] == "slim"
    assert unstr["macs"] == dense["macs"]  # masked: dense kernels, the same work
    assert slim["macs"] < 0.5 * dense["macs"] and slim["params"] < dense["params"]
    assert dense["checkpoint_bytes"] == (checkpoints / "dense.pt").stat().st_size
    assert all(m["onnx_bytes"] > 10_000 for m in report["models"])  # ort-cpu ran: exported
    assert slim["onnx_bytes"] < dense["onnx_bytes"]


def test_timings_positive_and_ordered(report):
    ok = [r for r in report["results"] if r["status"] == "ok"]
    assert {r["runtime"] for r in ok} == {"torch", "ort-cpu", "ort-cpu-int8"}
    for r in ok:
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["max_ms"]
        assert r["iqr_ms"] >= 0 and r["repeats"] == 5 and r["warmup"] == 1
        assert r["images_per_s"] == pytest.approx(r["batch_size"] / r["median_ms"] * 1e3)
        assert r["reason"] is None and r["peak_gpu_mb"] is None  # CPU: no GPU memory
    for rt in ("torch", "ort-cpu"):
        for m in report["models"]:
            one, many = ({r["batch_size"]: r for r in ok if r["runtime"] == rt and r["model"] == m["name"]}[b]
                         for b in (1, 32))
            assert many["min_ms"] > one["min_ms"]  # 32 images take longer per call than 1


def test_speedups_relative_to_dense(report):
    for r in report["results"]:
        if r["status"] != "ok":
            assert r["speedup_vs_dense"] is None
        elif r["model"] == "dense":
            assert r["speedup_vs_dense"] == 1.0
        else:
            dense = next(d for d in report["results"] if d["model"] == "dense" and d["runtime"] == r["runtime"]
                         and d["batch_size"] == r["batch_size"])
            assert r["speedup_vs_dense"] == pytest.approx(dense["median_ms"] / r["median_ms"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="these rows are skipped only without a GPU")
def test_cuda_runtimes_are_skipped_rows_with_a_reason(report):
    rows = [r for r in report["results"] if r["runtime"] in CUDA_RUNTIMES]
    assert len(rows) == 3 * 3 * 2
    for r in rows:
        assert r["status"] == "skipped" and r["reason"] == "no CUDA device"
        assert r["median_ms"] is None and r["speedup_vs_dense"] is None


def test_torch_compile_is_opt_in_on_cpu(tmp_path):
    model = BenchModel("dense", "dense", SPEC.build().eval(), SPEC)
    ctx = Context(device=torch.device("cpu"), threads=1, workdir=tmp_path)  # not named by the user
    rows = measure([model], get_runtimes(["torch-compile"]), Settings(batch_sizes=(1,)), ctx, show=False)
    assert rows[0]["status"] == "skipped" and "opt-in on CPU" in rows[0]["reason"]


def test_run_folder_slims_the_filter_result_in_memory(checkpoints, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for n in ("dense.pt", "Omp_filter_0.40_acc_10.00.pt"):
        (run / n).write_bytes((checkpoints / n).read_bytes())
    (run / "manifest.json").write_text(json.dumps({
        "format": "compress-run/1", "status": "complete", "job": {"kind": "filter"},
        "result": {"path": "Omp_filter_0.40_acc_10.00.pt"}}))
    code = main(["bench", "--run", str(run), "--runtimes", "torch", "--batch-sizes", "1", "--warmup", "1",
                 "--repeats", "3", "--threads", "1"])
    assert code == 0
    written = json.loads((run / "bench" / "bench.json").read_text())
    assert [m["kind"] for m in written["models"]] == ["dense", "slim"]
    assert "slimmed in memory" in written["models"][1]["source"]
    assert "torch" in capsys.readouterr().out
    # a second run refuses to replace the results without --force
    assert main(["bench", "--run", str(run), "--runtimes", "torch", "--batch-sizes", "1"]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["missing.pt"], "does not exist"),
    (["MODEL", "--batch-sizes", "1,0"], "batch size '0'"),
    (["MODEL", "--batch-sizes", "-4"], "must be a positive integer"),
    (["MODEL", "--runtimes", "ort-gpu"], "unknown runtime 'ort-gpu'"),
    (["MODEL", "--device", "cuda"] if not torch.cuda.is_available() else ["MODEL", "--device", "tpu"], "device"),
    ([], "no models to benchmark"),
    (["--run", "nowhere"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, checkpoints, tmp_path, capsys):
    argv = [str(checkpoints / "dense.pt") if a == "MODEL" else a for a in argv]
    code = main(["bench", *argv, "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert not (tmp_path / "b" / "bench.json").exists()


def test_library_rejects_bad_settings(checkpoints, tmp_path):
    with pytest.raises(CompressError, match="positive"):
        run_benchmark([checkpoints / "dense.pt"], out=tmp_path, settings=Settings(batch_sizes=(0,)))
    with pytest.raises(CompressError, match="did you mean 'ort-cpu'"):
        run_benchmark([checkpoints / "dense.pt"], out=tmp_path, settings=Settings(runtimes=("ort-cpus",)))
    assert Settings.quick().batch_sizes == (1, 64)


def test_train_throughput_script_prints_both_ratios(capsys):
    from compress.bench.train_throughput import main as throughput

    threads = torch.get_num_threads()
    try:
        code = throughput(["--width", "0.125", "--batch-size", "16", "--steps", "2", "--runs", "1",
                           "--warmup-steps", "1", "--threads", "1", "--masks", "--device", "cpu"])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert code == 0
    assert "toolchain / plain:" in printed and "masked / unmasked (toolchain):" in printed
    assert throughput(["--steps", "0"]) == 2


def test_suite_folder_gives_dense_then_each_run(checkpoints, tmp_path):
    from compress.timing import collect_models

    suite = tmp_path / "suite"
    (suite / "omp_unstructured").mkdir(parents=True)
    (suite / "omp_filter" / "slim").mkdir(parents=True)
    (suite / "dense.pt").write_bytes((checkpoints / "dense.pt").read_bytes())
    for run, kind, result in (("omp_unstructured", "unstructured", "Omp_unstructured_0.80_acc_10.00.pt"),
                              ("omp_filter", "filter", "Omp_filter_0.40_acc_10.00.pt")):
        (suite / run / result).write_bytes((checkpoints / result).read_bytes())
        (suite / run / "dense.pt").write_bytes((checkpoints / "dense.pt").read_bytes())
        (suite / run / "manifest.json").write_text(json.dumps(
            {"format": "compress-run/1", "job": {"kind": kind}, "result": {"path": result}}))
    slim_file = suite / "omp_filter" / "slim" / "Omp_filter_0.40_acc_10.00_slim.pt"
    slim_file.write_bytes((checkpoints / slim_file.name).read_bytes())
    (suite / "manifest.json").write_text(json.dumps({"format": "compress-suite/1", "runs": {
        "omp_unstructured": "omp_unstructured", "omp_filter": "omp_filter"}}))
    models = collect_models(run=suite)
    assert [(m.name, m.kind) for m in models] == [("dense", "dense"), ("omp_unstructured", "pruned"),
                                                  ("omp_filter (slim)", "slim")]
    assert models[2].path == str(slim_file)  # the slim stage's file, not slimmed again


def test_bench_figure_uses_the_report_colours():
    from compress.plots import DENSE_COLOR, MODEL_STYLES
    from compress.timing.plot import model_colors

    colors = model_colors(["dense", "omp_unstructured", "Imp_filter_0.40_acc_73.35_slim", "mystery"])
    assert colors["dense"] == DENSE_COLOR
    assert colors["omp_unstructured"] == MODEL_STYLES["omp_unstructured"].color
    assert colors["Imp_filter_0.40_acc_73.35_slim"] == MODEL_STYLES["imp_filter"].color
    assert colors["mystery"] not in {s.color for s in MODEL_STYLES.values()}

"""`compress report`: run and suite folders into report.md with figures; absent stages are one line."""
import json
import shutil

import pytest
import torch

from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.cli import main
from compress.errors import CompressError
from compress.models import ModelSpec
from compress.prune.ratios import prunable
from compress.prune.schedule import PruneJob, prune
from compress.prune.slim import slim_checkpoint
from compress.report.writer import write_report
from compress.train import TrainConfig

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def suite(small, tmp_path_factory):
    """A suite folder with an OMP unstructured run and an IMP (2 rounds) filter run with slim data."""
    root = tmp_path_factory.mktemp("suite")
    torch.manual_seed(0)
    spec = ModelSpec("vgg11", width=0.125)
    dense_path = save_checkpoint(root / "dense.pt", {"kind": "dense", "model": spec.to_dict(),
                                                     "state_dict": spec.build().state_dict(),
                                                     "meta": {"accuracy": 10.0, "epochs": 0}})
    dense = load_checkpoint(dense_path)
    model = spec.build()
    cfg = TrainConfig(epochs=2, lr=0.05, batch_size=64, warmup_epochs=0.2, seed=1)
    runs = {}
    for name, kind, method, rounds, target in [("omp_unstructured", "unstructured", "omp", 1, 0.8),
                                               ("imp_filter", "filter", "imp", 2, 0.4)]:
        job = PruneJob(kind, method, target, {n: target for n in prunable(model, kind)}, rounds=rounds, retrain=cfg)
        m = prune(job, dense, small, root / name, device=CPU, show=False, dense_path=dense_path)
        runs[name] = m
    m = runs["imp_filter"]
    m["command"] = ["compress", "filter", "--ratio", "0.4", "--imp", "2"]
    (root / "imp_filter" / "manifest.json").write_text(json.dumps(m))
    ckpt = load_checkpoint(root / "imp_filter" / m["result"]["path"])
    _, result = slim_checkpoint(ckpt, small)
    (root / "imp_filter" / "slim").mkdir()
    (root / "imp_filter" / "slim" / "slim.json").write_text(json.dumps(result.stats))
    (root / "manifest.json").write_text(json.dumps({
        "format": "compress-suite/1", "runs": {"imp_filter": "imp_filter", "omp_unstructured": "omp_unstructured"},
        "dense": {"path": "dense.pt", "accuracy": 10.0}, "command": ["compress", "all", "--data", "sample"]}))
    return root, runs, result.stats


def test_single_run_report(suite, tmp_path):
    root, runs, _ = suite
    run = tmp_path / "run"
    shutil.copytree(root / "omp_unstructured", run)
    path = write_report(run)
    text = path.read_text()
    m = runs["omp_unstructured"]
    assert path == run / "report.md"
    assert f"{m['result']['accuracy']:.2f}%" in text and f"{m['dense']['accuracy']:.2f}%" in text
    assert f"{m['rounds'][0]['acc_after_prune']:.2f}%" in text
    assert f"{100 * m['result']['sparsity']:.2f}%" in text
    for fig in ("accuracy_vs_sparsity.png", "mask_omp_unstructured.png", "layer_sparsity_unstructured.png"):
        assert (run / "figures" / fig).stat().st_size > 1000 and f"figures/{fig}" in text
    # stages that did not run are one line each, not failures
    assert "the export stage did not run" in text and "the bench stage did not run" in text
    assert "channel removal does not apply" in text and "do not record the command lines" in text
    assert "`features.0.weight`" in text  # per-layer table
    assert not list(run.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_suite_report_answers_the_channel_questions_with_the_runs_numbers(suite):
    root, runs, stats = suite
    text = write_report(root).read_text()
    assert "OMP unstructured" in text and "IMP filter" in text
    for name in ("omp_unstructured", "imp_filter"):
        assert f"{runs[name]['result']['accuracy']:.2f}%" in text
        assert (root / "figures" / f"mask_{name}.png").exists()
    assert (root / "figures" / "layer_sparsity_filter.png").exists()
    # per round: accuracy right after pruning and after retraining
    for r in runs["imp_filter"]["rounds"]:
        assert f"{r['acc_after_prune']:.2f}%" in text and f"{r['acc_after_retrain']:.2f}%" in text
    check = stats["check"]
    assert "How does sparsity change" in text and "Would the same hold for ResNet" in text
    assert f"{check['acc_masked']:.2f}% masked vs {check['acc_slim']:.2f}% slim" in text
    assert f"{stats['params']['dense']:,} → {stats['params']['slim']:,}" in text
    assert "compress all --data sample" in text and "compress filter --ratio 0.4 --imp 2" in text


def test_report_reads_export_and_bench_defensively(suite, tmp_path):
    root, _, _ = suite
    run = tmp_path / "run"
    shutil.copytree(root / "imp_filter", run)
    (run / "onnx").mkdir()
    (run / "onnx" / "export.json").write_text(json.dumps({
        "models": [{"name": "slim", "source": "slim/x.pt", "onnx": "onnx/slim.onnx", "bytes": 123456, "format": "fp32",
                    "parity": {"max_abs_diff": 1e-6, "max_rel_diff": 2e-7, "tolerance": 1e-4, "images": 64,
                               "argmax_agreement": 1.0}, "note": ""}],
        "dense_onnx_bytes": 999999, "opset": 18}))
    (run / "bench").mkdir()
    (run / "bench" / "bench.json").write_text("{not json")
    text = write_report(run).read_text()
    assert "120.6 KiB" in text and "976.6 KiB" in text and "opset 18" in text and "0.123×" in text
    assert "ok: max relative difference 2.0e-07 ≤ 0.0001 on 64 images" in text
    assert "`bench.json` could not be read" in text
    (run / "bench" / "bench.json").write_text(json.dumps({
        "machine": {"cpu": "Test CPU", "cpu_count": 2, "gpu": None}, "settings": {"runs": 5},
        "models": [{"name": "dense", "path": "dense.pt", "kind": "dense", "params": 1000, "macs": 5000,
                    "checkpoint_bytes": 4000, "onnx_bytes": 3000}],
        "results": [{"model": "dense", "runtime": "onnxruntime-cpu", "batch_size": 1, "status": "ok", "reason": None,
                     "median_ms": 1.234, "p90_ms": 1.5, "images_per_s": 810.0, "speedup_vs_dense": 1.0},
                    {"model": "slim", "runtime": "tensorrt", "batch_size": 1, "status": "skipped",
                     "reason": "no GPU"}]}))
    text = write_report(run).read_text()
    assert "Test CPU" in text and "1.234" in text and "tensorrt: not measured (no GPU)" in text and "1.00×" in text


def test_bad_folders_are_clear_errors(tmp_path, capsys):
    with pytest.raises(CompressError, match="does not exist"):
        write_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompressError, match="no readable manifest.json"):
        write_report(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    code = main(["report", str(tmp_path / "other")])
    assert code == 2 and "not a run or suite manifest" in capsys.readouterr().err


def test_cli_report_with_a_chosen_layer(suite, tmp_path, capsys):
    root, _, _ = suite
    run = tmp_path / "run"
    shutil.copytree(root / "omp_unstructured", run)
    assert main(["report", str(run), "--layer", "features.4.weight"]) == 0
    assert "report.md" in capsys.readouterr().out
    assert main(["report", str(run), "--layer", "features.5.weight"]) == 2
    assert "not a conv weight" in capsys.readouterr().err


def test_sweeps_inside_the_folder_are_listed(suite, tmp_path):
    root, _, _ = suite
    run = tmp_path / "run"
    shutil.copytree(root / "omp_unstructured", run)
    (run / "sweep").mkdir()
    (run / "sweep" / "sweep.json").write_text(json.dumps({
        "format": "compress-sweep/1", "kind": "unstructured", "grid": {"points": 91}, "dense_accuracy": 64.8,
        "rule": "the last sparsity before accuracy first falls more than 1 point(s) below dense",
        "tradeoffs": {"magnitude": {"target": 0.9, "sparsity": 0.9, "accuracy": 64.0, "drop": 0.8}, "taylor": None}}))
    text = write_report(run).read_text()
    assert "### Sweep `sweep`" in text and "90.00%" in text and "64.00%" in text and "-0.80" in text
    assert "![sweep](sweep/sweep.png)" in text


def test_unfinished_run_is_reported_not_refused(suite, tmp_path):
    root, _, _ = suite
    run = tmp_path / "run"
    shutil.copytree(root / "imp_filter", run)
    m = json.loads((run / "manifest.json").read_text())
    m["status"] = "running"
    m.pop("result")
    m["rounds"] = m["rounds"][:1]
    (run / "manifest.json").write_text(json.dumps(m))
    text = write_report(run).read_text()
    assert "unfinished (status running)" in text and "rounds/round_1.pt" in text
    assert (run / "figures" / "mask_imp_filter.png").exists()


def test_a_count_reads_as_words():
    """One helper says '1 run' and '2 runs' wherever a report, table or figure counts something."""
    from compress.console import counted

    assert [counted(1, "run"), counted(2, "run"), counted(0, "row")] == ["1 run", "2 runs", "0 rows"]
    assert counted(0.5, "point", "g") == "0.5 points" and counted(1.0, "point", "g") == "1 point"
    assert counted("?", "retraining epoch") == "? retraining epochs"  # a count the manifest lacks

"""`compress all` end to end at tiny width: the four runs and the suite report; a
stage that fails makes the command fail (exit 1, "failed" in the manifest, summary and report),
and `--resume` finishes what failed without redoing what worked."""
from __future__ import annotations

import json

import pytest

from compress.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--model", "vgg11", "--width", "0.125", "--data", "sample", "--dense-epochs", "1", "--epochs", "2",
        "--imp", "2", "--batch-size", "256", "--no-quantize", "--no-bench"]


def test_a_recipe_the_suite_cannot_run_is_refused_before_training(tmp_path, capsys):
    code = main(["all", *TINY, "--epochs", "1", "--imp", "3", "--out", str(tmp_path / "suite")])
    assert code == 2 and "cannot cover 3 rounds" in capsys.readouterr().err
    assert not (tmp_path / "suite").exists()


def test_all_fails_loudly_then_resumes_to_complete(tmp_path, capsys, monkeypatch):
    import compress.pipeline.stages as stages

    suite = tmp_path / "suite"

    def broken_export(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(stages, "export_stage", broken_export)
    code = main(["all", *TINY, "--out", str(suite)])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    manifest = json.loads((suite / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert set(manifest["failed"]) == {f"{m}_{k}/export" for m in ("omp", "imp") for k in ("unstructured", "filter")}
    assert "exporter exploded" in captured.err and "FAILED" in captured.out
    report = (suite / "report.md").read_text()
    assert "Failed stages" in report and "exporter exploded" in report
    assert "the export stage failed" in report
    for name in manifest["runs"]:  # the pruning itself worked and stays
        run = json.loads((suite / name / "manifest.json").read_text())
        assert run["status"] == "complete" and (suite / name / run["result"]["path"]).exists()
    results = {k: v["accuracy"] for k, v in manifest["results"].items()}

    monkeypatch.undo()
    assert main(["all", *TINY, "--out", str(suite), "--resume"]) == 0, capsys.readouterr().err
    manifest = json.loads((suite / "manifest.json").read_text())
    assert manifest["status"] == "complete" and not manifest["failed"]
    assert {k: v["accuracy"] for k, v in manifest["results"].items()} == results  # not retrained
    for name in manifest["runs"]:
        assert (suite / name / "onnx" / "export.json").exists()
    assert "Failed stages" not in (suite / "report.md").read_text()


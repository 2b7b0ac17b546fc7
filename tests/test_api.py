"""The library's five calls (compress.api): its docstring's example runs as written, and bad
input is the CLI's one clear error."""
import re

import pytest

import compress
from compress.errors import CompressError


def test_the_documented_example_runs(tmp_path, monkeypatch, capsys):
    """The example in compress.api's docstring, verbatim, from a fresh folder: a run folder with
    the pruned model, a slim checkpoint, ONNX and INT8 files, and a benchmark of dense and slim."""
    import compress.api

    example = "\n".join(line[4:] for line in compress.api.__doc__.split("\n") if line.startswith("    "))
    assert "compress.prune_model(" in example and "compress.benchmark(" in example
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(example, "compress.api docstring", "exec"), scope)
    run, slim, onnx, int8, bench = (scope[k] for k in ("run", "slim", "onnx", "int8", "bench"))
    assert run.path.resolve() == tmp_path / "runs" / "api" and run.result.is_file() and 0 < run.accuracy <= 100
    assert run.manifest["job"]["kind"] == "filter" and run.manifest["status"] == "complete"
    assert slim.is_file() and slim.name.endswith("_slim.pt")
    assert onnx == slim.with_suffix(".onnx") and onnx.is_file() and int8.is_file() and int8.name.endswith(".int8.onnx")
    timed = {(r["model"], r["runtime"]) for r in bench["results"] if r["status"] == "ok"}
    assert {m for m, _ in timed} == {"dense", slim.stem} and {r for _, r in timed} >= {"torch", "ort-cpu"}, timed
    assert (tmp_path / "bench_results" / "bench.json").is_file()
    printed = capsys.readouterr().out
    assert re.search(r"\d+\.\d+", printed), printed  # the accuracy and the fastest runtime


def test_a_bad_ratio_is_the_clis_error_before_any_folder(tmp_path):
    with pytest.raises(CompressError, match="ratio"):
        compress.prune_model("vgg11", kind="filter", ratio=1.5, data="sample", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_unknown_model_is_one_clear_error_before_any_folder(tmp_path):
    with pytest.raises(CompressError, match="vgg1x"):
        compress.prune_model("vgg1x", kind="filter", ratio=0.4, data="sample", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()

"""`compress unstructured|filter` through the real CLI on a tiny VGG: results, names, errors."""
import json
import re

import pytest
import torch

from compress.cli import main

TINY = ["--model", "vgg11", "--width", "0.125", "--data", "sample", "--dense-epochs", "1", "--batch-size", "256"]


def test_filter_imp_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["filter", "--ratio", "0.4", "--imp", "3", "--epochs", "3", "--out", str(run),
                 "--no-export", "--no-bench", "--no-report", *TINY])
    out = capsys.readouterr().out
    assert code == 0, out
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["rounds"]) == 3
    assert manifest["command"][:2] == ["compress", "filter"]
    result = run / manifest["result"]["path"]
    assert result.name.startswith("Imp_filter_0.40_acc_") and result.exists()
    assert manifest["result"]["sparsity"] >= 0.4
    # slim stage ran: a slim model and its numbers
    slim = json.loads((run / "slim" / "slim.json").read_text())
    assert slim["check"]["acc_masked"] == slim["check"]["acc_slim"] == manifest["result"]["accuracy"]
    assert (run / manifest["artifacts"]["slim"]).exists()
    ckpt = torch.load(result, weights_only=True)
    assert ckpt["kind"] == "pruned" and ckpt["meta"]["method"] == "imp"
    assert "sparsity of Imp_filter_0.40" in out and "artifacts" in out
    # the same command again, without --resume or --force, is refused and changes nothing
    assert main(["filter", "--ratio", "0.4", "--imp", "3", "--epochs", "3", "--out", str(run), *TINY]) == 2
    assert "already exists" in capsys.readouterr().err


def test_unstructured_omp_with_a_ratio_file(tmp_path, capsys):
    cfg = tmp_path / "r.yaml"
    cfg.write_text("prune_ratios:\n" + "".join(f"  features.{i}.weight: 0.85\n" for i in (4, 8, 11, 15, 18, 22, 25))
                   + "  features.0.weight: 0.2\n  classifier.weight: 0.3\n")
    run = tmp_path / "run"
    code = main(["unstructured", "--config", str(cfg), "--omp", "--epochs", "1", "--out", str(run),
                 "--no-export", "--no-bench", "--no-report", *TINY])
    assert code == 0
    manifest = json.loads((run / "manifest.json").read_text())
    target = manifest["job"]["target"]
    assert manifest["result"]["path"].startswith(f"Omp_unstructured_{target:.2f}_acc_")
    assert manifest["result"]["sparsity"] >= target
    assert "ratio file" in manifest["ratio_source"]
    assert "unstructured ratios" in capsys.readouterr().out  # the table it read


@pytest.mark.parametrize("extra, match", [
    (["--ratio", "1.5"], "must be in \\[0, 1\\)"),
    (["--ratio", "0.8", "--imp", "0"], "positive integer"),
    ([], "needs --ratio"),
    (["--ratio", "0.8", "--model", "vgg14"], "vgg1"),
    (["--ratio", "0.8", "--checkpoint", "/nonexistent.pt"], "does not exist"),
    (["--ratio", "0.8", "--schedule", "0.9,0.8,0.8", "--imp", "3"], "increasing"),
])
def test_bad_input_fails_before_training(tmp_path, capsys, monkeypatch, extra, match):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    argv = ["unstructured", "--out", str(run), "--model", "vgg11", "--width", "0.125", "--data", "sample", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert not (tmp_path / "cache").exists() and not run.exists()  # no baseline trained, no run folder


def test_bad_ratio_file_costs_no_training(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("COMPRESS_CACHE", str(cache))
    cfg = tmp_path / "r.yaml"
    cfg.write_text("prune_ratios:\n  features.99.weight: 0.5\n")
    assert main(["filter", "--config", str(cfg), "--out", str(tmp_path / "run"), *TINY]) == 2
    assert "not a parameter" in capsys.readouterr().err
    assert not cache.exists() and not (tmp_path / "run").exists()


def test_checkpoint_of_another_dataset_is_refused(tmp_path, capsys):
    from compress.checkpoint import save_checkpoint
    from compress.models import ModelSpec

    spec = ModelSpec("vgg11", num_classes=100, width=0.125)
    path = save_checkpoint(tmp_path / "d.pt", {"kind": "dense", "model": spec.to_dict(),
                                                "state_dict": spec.build().state_dict(), "meta": {"accuracy": 1.0}})
    assert main(["filter", "--ratio", "0.4", "--checkpoint", str(path), "--data", "sample",
                 "--out", str(tmp_path / "run")]) == 2
    assert "100 classes" in capsys.readouterr().err


def test_global_allocation_ranks_the_trained_weights(tmp_path, capsys):
    from compress.checkpoint import save_checkpoint
    from compress.models import ModelSpec

    spec = ModelSpec("vgg11", width=0.125)
    model = spec.build()
    with torch.no_grad():
        model.features[4].weight.mul_(1e-4)  # a layer the trained model barely uses
    path = save_checkpoint(tmp_path / "d.pt", {"kind": "dense", "model": spec.to_dict(),
                                                "state_dict": model.state_dict(), "meta": {"accuracy": 10.0}})
    run = tmp_path / "run"
    assert main(["unstructured", "--ratio", "0.5", "--allocation", "global", "--checkpoint", str(path),
                 "--data", "sample", "--epochs", "1", "--batch-size", "256", "--out", str(run),
                 "--no-export", "--no-bench", "--no-report"]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    ratios = manifest["job"]["ratios"]
    assert ratios["features.4.weight"] >= 0.97 and manifest["ratio_source"] == "global magnitude ranking"
    assert manifest["result"]["sparsity"] >= 0.5


def test_options_that_would_do_nothing_are_gone_or_say_so(capsys):
    """--no-slim on unstructured/nm did nothing silently: it now says so (and is hidden from help);
    options a command never read are not offered at all."""
    from compress.cli import build_parser

    parser = build_parser()
    parser.parse_args(["nm", "--no-slim"])
    assert "--no-slim does nothing here" in capsys.readouterr().err
    for argv in (["export", "m.pt", "--device", "cpu"], ["quantize", "m.pt", "--image-size", "64"],
                 ["nm", "--schedule", "linear"], ["layers", "--mean", "0.5,0.5,0.5"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)

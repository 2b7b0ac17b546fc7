"""`compress sensitivity`: drop curves per layer, and a ratio file that reaches the target."""
import csv
import json

import pytest
import torch

from compress.analysis.sensitivity import SensitivityOptions, drop_curve, interpolate, propose_ratios, run_sensitivity
from compress.cli import main
from compress.errors import CompressError
from compress.pipeline.run import PruneOptions, resolve_ratios
from compress.prune.ratios import planned_sparsity, pruned_count, read_ratio_file
from compress.prune.rebuild import model_from_checkpoint

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def dense(tiny_dense):
    return tiny_dense


def test_drop_curves_start_at_zero_and_never_fall():
    xs, ys = drop_curve([0.5, 0.9, 0.7], [1.0, 3.0, -0.5])
    assert xs == [0.0, 0.5, 0.7, 0.9] and ys == [0.0, 1.0, 1.0, 3.0]
    assert interpolate(xs, ys, 0.25) == pytest.approx(0.5) and interpolate(xs, ys, 0.8) == pytest.approx(2.0)


def test_proposal_prunes_the_cheap_big_layer_first():
    curves = {"big": ([0.5, 0.9], [0.1, 0.5]), "small": ([0.5, 0.9], [5.0, 20.0])}
    sizes = {"big": 9000, "small": 1000}
    counts = {k: (lambda r, n=n: pruned_count(r, n)) for k, n in sizes.items()}
    r = propose_ratios(curves, sizes, counts, 10000, 0.8)
    assert r["big"] >= 0.85 and r["small"] < r["big"]
    assert counts["big"](r["big"]) + counts["small"](r["small"]) >= 8000
    with pytest.raises(CompressError, match="cannot be reached"):
        propose_ratios(curves, sizes, counts, 10000, 0.95)


def test_options_are_checked():
    with pytest.raises(CompressError, match="above the highest measured ratio"):
        SensitivityOptions(ratios=(0.3, 0.5), target=0.8).resolved()
    with pytest.raises(CompressError, match="--ratios"):
        SensitivityOptions(ratios=(0.3, 1.2)).resolved()
    assert SensitivityOptions(kind="filter").resolved()[1] == 0.4


@pytest.mark.parametrize("kind, ratios, target", [("unstructured", (0.5, 0.9), 0.7), ("filter", (0.25, 0.5), 0.3)])
def test_sensitivity_writes_curves_and_a_usable_ratio_file(dense, small, tmp_path, kind, ratios, target):
    ckpt, path = dense
    res = run_sensitivity(ckpt, small, SensitivityOptions(kind=kind, ratios=ratios, target=target), tmp_path,
                          device=CPU, show=False, source=str(path))
    for name in ("sensitivity.csv", "sensitivity.json", "sensitivity.png", "proposed.yaml"):
        assert (tmp_path / name).stat().st_size > 0
    model = model_from_checkpoint(ckpt)
    with open(tmp_path / "sensitivity.csv") as f:
        rows = list(csv.DictReader(f))
    n_layers = len(res.summary["layers"])
    assert len(rows) == n_layers * len(ratios) and n_layers == (9 if kind == "unstructured" else 8)
    dense_acc = res.summary["dense_accuracy"]
    for r in rows:
        assert 0 <= float(r["accuracy"]) <= 100
        assert float(r["drop"]) == pytest.approx(dense_acc - float(r["accuracy"]), abs=0.011)
    proposed = read_ratio_file(tmp_path / "proposed.yaml", model, kind)
    assert planned_sparsity(model, kind, proposed) >= target
    text = (tmp_path / "proposed.yaml").read_text()
    assert text.startswith("# Layer ratios proposed by `compress sensitivity`") and "--config" in text
    doc = json.loads((tmp_path / "sensitivity.json").read_text())
    assert doc["proposal"]["planned_sparsity"] >= target and doc["proposal"]["predicted_drop"] >= 0
    # the prune command takes the file as it is
    got, got_target, _ = resolve_ratios(PruneOptions(kind=kind, config=tmp_path / "proposed.yaml"), model)
    assert got == proposed and got_target <= planned_sparsity(model, kind, proposed)


def test_synflow_and_bn_recalibration(dense, small, tmp_path, monkeypatch):
    ckpt, _ = dense
    monkeypatch.setattr("compress.analysis.mask_grid.SYNFLOW_ITERATIONS", 5)
    opts = SensitivityOptions(kind="unstructured", ratios=(0.5, 0.9), target=0.6, criterion="synflow", recalibrate_bn=1)
    res = run_sensitivity(ckpt, small, opts, tmp_path, device=CPU, show=False)
    assert res.summary["criterion"] == "synflow" and res.summary["recalibrate_bn_images"] == 128
    assert all(0 <= a <= 100 for l in res.summary["layers"] for a in l["accuracy"].values())
    assert "BatchNorm re-estimated on 128 images" in (tmp_path / "proposed.yaml").read_text()


def test_cli_sensitivity_and_its_errors(dense, tmp_path, capsys):
    _, path = dense
    out = tmp_path / "s"
    code = main(["sensitivity", str(path), "--ratios", "0.5,0.9", "--target", "0.6", "--data", "sample", "--out", str(out)])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert (out / "proposed.yaml").exists() and "compress unstructured --config" in cap.out
    for argv, match in [
        (["sensitivity", str(tmp_path / "nope.pt")], "does not exist"),
        (["sensitivity", str(path), "--ratios", "0.3,0.5", "--target", "0.8"], "above the highest measured ratio"),
        (["sensitivity", str(path), "--ratios", "0.5,x"], "not a comma-separated list"),
        (["sensitivity", str(path), "--ratios", "0.5,0.9", "--target", "0.6", "--out", str(out)], "already exists"),
    ]:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and match in err, err

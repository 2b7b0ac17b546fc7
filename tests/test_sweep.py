"""`compress sweep`: the grid, the trade-off rule, fast masks equal to the mask functions, the files."""
import csv
import json

import pytest
import torch

from compress.analysis.evaluate import Evaluator, layer_blocks
from compress.analysis.mask_grid import OneShot, SynflowPath
from compress.analysis.sweep import SweepOptions, choose_tradeoff, run_sweep, sparsity_grid
from compress.cli import main
from compress.errors import CompressError
from compress.prune.masks import filter_masks, unstructured_masks
from compress.prune.ratios import allocate
from compress.train import evaluate

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def dense(tiny_dense):
    return tiny_dense


def test_grid_is_inclusive_and_checked():
    g = sparsity_grid(0.80, 0.98, 0.002)
    assert len(g) == 91 and g[0] == 0.8 and g[-1] == 0.98 and all(b > a for a, b in zip(g, g[1:]))
    assert sparsity_grid(0.5, 0.5, 0.1) == [0.5]
    assert SweepOptions(kind="filter").grid()[0] == 0.05
    for bad in [(0.9, 0.8, 0.01), (0.8, 0.98, 0.0), (0.8, 1.0, 0.01), (-0.1, 0.5, 0.1), (0.1, 0.9, 1e-6)]:
        with pytest.raises(CompressError):
            sparsity_grid(*bad)
    with pytest.raises(CompressError, match="--max-drop"):
        SweepOptions(max_drop=-1).validate()
    with pytest.raises(CompressError, match="above --stop"):
        SweepOptions(start=0.9, stop=0.5).validate()
    with pytest.raises(CompressError, match="did you mean 'taylor'"):
        SweepOptions(criteria=("taylr",)).validate()


def test_tradeoff_is_the_last_point_before_the_first_breakdown():
    pts = [{"target": t, "accuracy": a} for t, a in [(0.8, 90.0), (0.85, 89.5), (0.9, 88.0), (0.95, 89.9), (0.97, 50.0)]]
    assert choose_tradeoff(pts, 90.0, 1.0)["target"] == 0.85  # 0.95 recovers by luck after a breakdown: not taken
    assert choose_tradeoff(pts, 90.0, 2.0)["target"] == 0.95
    knee = choose_tradeoff(pts, 95.0, 1.0)  # nothing within tolerance: the knee, where the fall starts
    assert knee["by"] == "knee" and knee["target"] == 0.95
    assert choose_tradeoff(pts, 90.0, 50.0)["target"] == 0.97


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_fast_masks_equal_the_mask_functions(dense, small, allocation):
    ckpt, _ = dense
    from compress.prune.rebuild import model_from_checkpoint

    model = model_from_checkpoint(ckpt)
    example = torch.zeros(1, 3, 32, 32)
    pruner = OneShot(model, "unstructured", "magnitude", allocation, small, example)
    for target in (0.5, 0.9):
        ratios = allocate(model, "unstructured", target, allocation)
        ref = unstructured_masks(model, ratios)
        got = pruner.masks(pruner.ratios(target))
        assert all(torch.equal(ref[n], got[n]) for n in ref)
    fp = OneShot(model, "filter", "magnitude", allocation, small, example)
    ratios = allocate(model, "filter", 0.4, allocation)
    ref = filter_masks(model, ratios, example)
    got = fp.masks(fp.ratios(0.4))
    assert all(torch.equal(ref[n], got[n]) for n in ref)


def test_synflow_path_masks_only_grow(dense):
    ckpt, _ = dense
    from compress.prune.rebuild import model_from_checkpoint

    model = model_from_checkpoint(ckpt)
    example = torch.zeros(1, 3, 32, 32)
    path = SynflowPath(model, "unstructured", lambda s, sc: allocate(model, "unstructured", s, "uniform"),
                       [0.5, 0.7, 0.9], example, iterations=10)
    prev = None
    seen = []
    for t, masks in path:
        seen.append(t)
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        assert 1 - kept / total == pytest.approx(t, abs=0.01)
        if prev is not None:
            assert all(not (masks[n] & ~prev[n]).any() for n in prev)
        prev = masks
    assert seen == [0.5, 0.7, 0.9]


def test_folded_evaluation_matches_evaluate(dense, small):
    ckpt, _ = dense
    from compress.prune.rebuild import model_from_checkpoint

    model = model_from_checkpoint(ckpt)
    acc, _ = evaluate(model, small, CPU)
    assert abs(Evaluator(small, CPU).accuracy(model) - acc) <= 100 / small.test_x.shape[0] + 1e-9


def test_bn_recalibration_changes_statistics_not_weights(dense, small):
    ckpt, _ = dense
    from compress.analysis.evaluate import recalibrate_bn
    from compress.prune.rebuild import model_from_checkpoint

    model = model_from_checkpoint(ckpt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.features[0].weight[:, :, 0] = 0  # "prune" something, so the statistics must move
    weights = {k: v.clone() for k, v in model.named_parameters()}
    recalibrate_bn(model, small, batches=2, batch_size=64)
    assert not model.training
    assert all(torch.equal(v, weights[k]) for k, v in model.named_parameters())
    bn = model.features[1]
    assert not torch.allclose(bn.running_mean, before["features.1.running_mean"])
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 2


def test_blocks_follow_the_resolution(dense):
    ckpt, _ = dense
    from compress.prune.rebuild import model_from_checkpoint

    blocks = layer_blocks(model_from_checkpoint(ckpt), torch.zeros(1, 3, 32, 32), "unstructured")
    assert blocks["features.0.weight"] == "block 1 (32×32)" and blocks["features.4.weight"] == "block 2 (16×16)"
    assert blocks["classifier.weight"] == "classifier"


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sweep_writes_curve_tradeoff_and_layers(dense, small, tmp_path):
    ckpt, _ = dense
    opts = SweepOptions(kind="unstructured", start=0.3, stop=0.9, step=0.2, criteria=("magnitude", "taylor"),
                        max_drop=2.0)
    res = run_sweep(ckpt, small, opts, tmp_path, device=CPU, show=False)
    for name in ("sweep.csv", "sweep.json", "sweep.png", "tradeoff_layers.json", "tradeoff_layers.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = _rows(tmp_path / "sweep.csv")
    assert len(rows) == 8 and {r["criterion"] for r in rows} == {"magnitude", "taylor"}
    doc = json.loads((tmp_path / "sweep.json").read_text())
    dense_acc = doc["dense_accuracy"]
    assert doc["grid"]["points"] == 4 and doc["format"] == "compress-sweep/1"
    for c in ("magnitude", "taylor"):
        mine = [r for r in rows if r["criterion"] == c]
        s = [float(r["sparsity"]) for r in mine]
        assert all(b > a for a, b in zip(s, s[1:])) and s[0] == pytest.approx(0.3, abs=1e-3)
        assert all(0 <= float(r["accuracy"]) <= 100 for r in mine)
        expected = choose_tradeoff([{"target": float(r["target"]), "accuracy": float(r["accuracy"])} for r in mine],
                                   dense_acc, 2.0)
        got = doc["tradeoffs"][c]
        assert (got is None) == (expected is None)
        if got:
            assert got["target"] == expected["target"] and got["accuracy"] >= dense_acc - 2.0
    layers = json.loads((tmp_path / "tradeoff_layers.json").read_text())
    for t in layers["tradeoffs"]:
        assert sum(l["pruned"] for l in t["layers"]) == sum(b["pruned"] for b in t["blocks"])
        total = sum(l["total"] for l in t["layers"])
        assert sum(l["pruned"] for l in t["layers"]) / total == pytest.approx(t["sparsity"])
        assert {l["type"] for l in t["layers"]} == {"conv", "linear"} and t["observations"]
    assert res.summary["seconds_per_point"] > 0


def test_filter_sweep_with_synflow_and_finetune(dense, small, tmp_path, monkeypatch):
    ckpt, _ = dense
    monkeypatch.setattr("compress.analysis.mask_grid.SYNFLOW_ITERATIONS", 10)
    import compress.analysis.sweep as sweep_module

    calls, real_train = [], sweep_module.train

    def spy(model, data, cfg, **kwargs):  # the fine-tune must run, masked, and change the weights
        before = [p.detach().clone() for p in model.parameters()]
        result = real_train(model, data, cfg, **kwargs)
        changed = any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
        calls.append({"masked": kwargs.get("masks") is not None, "changed": changed,
                      "images": data.train_x.shape[0], "epochs": cfg.epochs})
        return result

    monkeypatch.setattr("compress.analysis.sweep.train", spy)
    opts = SweepOptions(kind="filter", start=0.1, stop=0.5, step=0.2, criteria=("synflow",), finetune_steps=1,
                        recalibrate_bn=1, allocation="uniform", max_drop=100.0)
    run_sweep(ckpt, small, opts, tmp_path, device=CPU, show=False)
    assert len(calls) == 3  # one fine-tune per point
    assert all(c["masked"] and c["changed"] and c["images"] == 128 and c["epochs"] == 1 for c in calls)
    rows = _rows(tmp_path / "sweep.csv")
    assert [float(r["target"]) for r in rows] == [0.1, 0.3, 0.5]
    assert all(0 <= float(r["acc_oneshot"]) <= 100 for r in rows)
    s = [float(r["sparsity"]) for r in rows]
    assert s[0] >= 0.1 - 1e-9 and all(b > a for a, b in zip(s, s[1:]))
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert "BatchNorm re-estimated on 128 images + 1 masked fine-tune step" == doc["treatment"]
    assert doc["tradeoffs"]["synflow"]["target"] == 0.5  # tolerance 100: every point qualifies
    layers = json.loads((tmp_path / "tradeoff_layers.json").read_text())["tradeoffs"][0]
    assert all(l["type"] == "conv" for l in layers["layers"]) and "uniform allocation" in layers["observations"][0]


def run(argv, capsys):
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_sweep_and_its_errors(dense, tmp_path, capsys):
    _, path = dense
    out = tmp_path / "sw"
    code, stdout, err = run(["sweep", str(path), "--start", "0.5", "--stop", "0.7", "--step", "0.1", "--data", "sample",
                             "--out", str(out)], capsys)
    assert code == 0, err
    assert len(_rows(out / "sweep.csv")) == 3 and "trade-off" in stdout
    code, _, err = run(["sweep", str(path), "--start", "0.5", "--stop", "0.7", "--step", "0.1", "--out", str(out)], capsys)
    assert code == 2 and "already exists" in err
    for argv, match in [
        (["sweep", str(tmp_path / "missing.pt")], "does not exist"),
        (["sweep", str(path), "--start", "0.9", "--stop", "0.8"], "above --stop"),
        (["sweep", str(path), "--step", "0"], "--step must be positive"),
        (["sweep", str(path), "--max-drop", "-1"], "--max-drop"),
        (["sweep", str(path), "--criterion", "magnitude,bogus"], "unknown criterion 'bogus'"),
    ]:
        code, _, err = run(argv, capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], err


def test_tradeoff_falls_back_to_the_knee():
    from compress.analysis.sweep import choose_tradeoff

    # slides gently, then falls: the knee is where the fall starts (0.90)
    accs = [70, 69.5, 69, 68.5, 68, 67.5, 67, 66.5, 66, 64, 40, 20, 10]
    pts = [{"target": 0.80 + 0.01 * i, "sparsity": 0.80 + 0.01 * i, "accuracy": a, "drop": a - 74}
           for i, a in enumerate(accs)]
    t = choose_tradeoff(pts, dense_acc=74.0, tolerance=1.0)
    assert t["by"] == "knee" and t["target"] == pytest.approx(0.89)
    within = choose_tradeoff(pts, dense_acc=70.4, tolerance=1.0)
    assert within["by"] == "tolerance" and within["target"] == pytest.approx(0.81)  # 69.0 < 70.4 - 1
    assert choose_tradeoff(pts[:2], dense_acc=90.0, tolerance=1.0) is None


def test_default_tolerance_grows_with_the_noise_of_a_small_test_set():
    from compress.analysis.sweep import default_tolerance, standard_error

    assert standard_error(74.14, 1017) == pytest.approx(1.37, abs=0.01)
    assert default_tolerance(74.14, 1017) == pytest.approx(2.7)  # the bundled sample: one point is noise
    assert default_tolerance(93.0, 10_000) == 1.0  # full CIFAR-10: one point is signal
    # the sample's measured VGG13 curve (80-86%): a one-point rule stops at the first noisy point
    accs = [72.66, 73.06, 72.57, 72.07, 72.17, 72.37, 71.09, 70.40, 68.93]
    pts = [{"target": 0.80 + 0.01 * i, "sparsity": 0.80 + 0.01 * i, "accuracy": a, "drop": 74.14 - a}
           for i, a in enumerate(accs)]
    assert choose_tradeoff(pts, 74.14, 1.0)["by"] == "knee"
    t = choose_tradeoff(pts, 74.14, default_tolerance(74.14, 1017))
    assert t["by"] == "tolerance" and t["target"] == pytest.approx(0.85)

"""Honest evaluation: the validation split, choices that read it, intervals, paired tests, --seeds."""
import dataclasses
import json

import pytest
import torch

from compress.analysis.comparisons import bootstrap, sentence
from compress.checkpoint import split_for
from compress.cli import main
from compress.data import auto_val_fraction, parse_val_split, with_validation
from compress.errors import CompressError
from compress.stats import interval, mean_sd, pack_correct, unpack_correct, with_ci

CPU = torch.device("cpu")


def _row_hashes(x: torch.Tensor) -> torch.Tensor:
    w = torch.randint(1, 1 << 20, (x[0].numel(),), generator=torch.Generator().manual_seed(0))
    return (x.reshape(x.shape[0], -1).long() * w).sum(1).sort().values


def test_split_is_disjoint_stratified_and_reproducible(sample):
    ds = with_validation(sample)
    n = sample.train_x.shape[0]
    assert ds.val_x.shape[0] == 814 and ds.train_x.shape[0] == n - 814  # auto: 1000 capped at a fifth of 4068
    assert torch.equal(ds.test_x, sample.test_x) and ds.choice_split == "val"
    # train + validation are exactly the original training images, each once
    assert torch.equal(_row_hashes(torch.cat([ds.train_x, ds.val_x])), _row_hashes(sample.train_x))
    assert not set(_row_hashes(ds.train_x).tolist()) & set(_row_hashes(ds.val_x).tolist())
    for c in range(10):  # every class held out in proportion
        have, total = int((ds.val_y == c).sum()), int((sample.train_y == c).sum())
        assert abs(have - 0.2001 * total) <= 1
    again = with_validation(sample)
    assert torch.equal(again.val_x, ds.val_x) and again.fingerprint == ds.fingerprint != sample.fingerprint
    other = with_validation(sample, seed=1)
    assert not torch.equal(other.val_y, ds.val_y) and other.fingerprint != ds.fingerprint
    off = with_validation(sample, 0)
    assert not off.has_val and off.choice_split == "test" and "test" in off.describe()["choices_on"]
    assert auto_val_fraction(50000) == pytest.approx(0.1) and auto_val_fraction(1000) == pytest.approx(0.2)
    assert auto_val_fraction(200000) * 200000 == pytest.approx(5000)
    for bad in ("1.5", "-0.1", "x"):
        with pytest.raises(CompressError):
            parse_val_split(bad)
    assert parse_val_split("auto") is None and parse_val_split("0") == 0


def test_a_checkpoint_keeps_the_split_it_was_trained_beside(sample):
    ckpt = {"meta": {"dataset": {"val_split": {"fraction": 0.1, "seed": 3}}}}
    ds = split_for(sample, ckpt, requested=0.3)  # the request does not override what the model trained beside
    assert torch.equal(ds.val_y, with_validation(sample, 0.1, 3).val_y)
    assert not split_for(sample, {"meta": {"dataset": {"val_split": None}}}, None).has_val
    assert not split_for(sample, {"meta": {"dataset": {"name": "old"}}}, None).has_val  # trained on every image
    imported = {"meta": {"imported": {}, "dataset": {}}}
    assert split_for(sample, imported, 0.1).val_x.shape[0] == with_validation(sample, 0.1).val_x.shape[0]
    assert split_for(ds, None, 0.3) is ds  # already decided: left alone


def test_training_reads_validation_each_epoch_and_test_once(small):
    from compress.models import ModelSpec
    from compress.train import TrainConfig, train

    data = with_validation(small, 0.25)
    torch.manual_seed(0)
    res = train(ModelSpec("vgg11", width=0.125).build(), data, TrainConfig(epochs=2, batch_size=64, warmup_epochs=0),
                show=False)
    first, last = res.history
    assert "val_acc" in first and "test_acc" not in first
    assert "val_acc" in last and "test_acc" in last and res.val_acc == pytest.approx(last["val_acc"], abs=0.01)


def test_sweep_chooses_on_validation_whatever_the_test_split_says(tiny_dense, small, tmp_path):
    """The same model and validation images, once with the real test images and once with the test
    split blanked out: the curve the choice reads and the trade-off are the same, only the
    reported test column changes. Without a validation split the test split is read (and said)."""
    from compress.analysis.sweep import SweepOptions, choose_tradeoff, run_sweep

    ckpt, _ = tiny_dense
    opts = SweepOptions(kind="unstructured", start=0.3, stop=0.96, step=0.22, max_drop=2.0, recalibrate_bn=0)
    real = dataclasses.replace(small, val_x=small.test_x, val_y=small.test_y, extra={"val_split": {"fraction": 0}})
    blank = dataclasses.replace(real, test_x=torch.zeros_like(small.test_x))
    runs = {}
    for name, data in (("real", real), ("blank", blank), ("no_val", small)):
        runs[name] = run_sweep(ckpt, data, opts, tmp_path / name, device=CPU, show=False).summary
    real_s, blank_s, no_val = runs["real"], runs["blank"], runs["no_val"]
    assert real_s["evaluator"]["split"] == "val" and no_val["evaluator"]["split"] == "test"
    assert "test" in no_val["choices_on"] and real_s["choices_on"] == "validation"
    curve = [p["accuracy"] for p in real_s["points"]]
    assert curve == [p["accuracy"] for p in blank_s["points"]] == [p["accuracy"] for p in no_val["points"]]
    assert [p["test_accuracy"] for p in blank_s["points"]] != curve  # blank test images: another column
    assert blank_s["tradeoffs"] == {c: {**t, "test_accuracy": t2["test_accuracy"]} if t else None
                                    for (c, t), t2 in zip(real_s["tradeoffs"].items(), blank_s["tradeoffs"].values())}
    expected = choose_tradeoff(blank_s["points"], blank_s["dense_accuracy"], 2.0)
    assert blank_s["tradeoffs"]["magnitude"]["target"] == expected["target"]


def test_intervals_and_packed_correctness():
    lo, hi = interval(81.0, 100)  # Wilson 95% for 81/100: centre 79.853, half-width 7.632
    assert lo == pytest.approx(72.22, abs=0.01) and hi == pytest.approx(87.49, abs=0.02)
    assert with_ci(81.0, 100) == "81.00% (72.2–87.5)" and with_ci(None, 100) == "-"
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0) and mean_sd([5.0]) == (5.0, 0.0)
    bits = [i % 3 == 0 for i in range(1017)]
    assert unpack_correct(pack_correct(bits)) == bits


def test_paired_bootstrap_over_seeds_and_images():
    g = torch.Generator().manual_seed(0)
    a = [(torch.rand(1000, generator=g) < 0.7).tolist() for _ in range(3)]
    same = bootstrap(a, a)
    assert same["diff_points"] == 0 and same["p_value"] == 1.0
    better = [[True if i % 10 == 0 else x for i, x in enumerate(seed)] for seed in a]  # +~3 points on every seed
    r = bootstrap(better, a)
    true = 100 * sum(sum(b) - sum(x) for b, x in zip(better, a)) / 3000
    assert r["diff_points"] == pytest.approx(true) and r["ci_points"][0] < true < r["ci_points"][1]
    assert r["p_value"] < 0.01 and r["seeds"] == 3 and len(r["per_seed_points"]) == 3
    text = sentence({"a": "IMP", "b": "OMP", **r})
    assert "mean of 3 seeds" in text and "IMP is better" in text and "bootstrap" in text
    noisy = bootstrap(a, [list(reversed(x)) for x in a])
    assert "not distinguishable" in sentence({"a": "A", "b": "B", **noisy})
    with pytest.raises(ValueError):
        bootstrap(a, [x[:10] for x in a])


def test_seeds_write_one_run_per_seed_and_a_summary(tmp_path, capsys):
    out = tmp_path / "seeds"
    args = ["unstructured", "--model", "vgg11", "--width", "0.125", "--ratio", "0.5", "--omp", "--epochs", "1",
            "--dense-epochs", "1", "--batch-size", "128", "--data", "sample", "--no-export", "--no-quantize",
            "--no-bench", "--out", str(out)]
    assert main(args + ["--seeds", "0,0"]) == 2 and not out.exists()
    assert main(args + ["--seeds", "0,1"]) == 0
    doc = json.loads((out / "seeds.json").read_text())
    assert doc["seeds"] == [0, 1] and set(doc["models"]) == {"dense", "omp_unstructured"}
    m = doc["models"]["omp_unstructured"]
    assert set(m["test"]) == {"0", "1"} and m["test_mean"] == pytest.approx(sum(m["test"].values()) / 2, abs=0.01)
    dense = [torch.load(out / f"seed_{s}" / "dense.pt", weights_only=True) for s in (0, 1)]
    assert dense[0]["meta"]["seed"] == 0 and dense[1]["meta"]["seed"] == 1  # --seed-dense each (default)
    for s in (0, 1):
        run = json.loads((out / f"seed_{s}" / "manifest.json").read_text())
        assert run["job"]["retrain"]["seed"] == s and (out / f"seed_{s}" / run["result"]["path"]).exists()
        assert run["result"]["val_accuracy"] is not None and run["dataset"]["val_images"] == 814
    report = (out / "report.md").read_text()
    assert "mean of 2 seeds" in report and "OMP unstructured − dense" in report and (out / "seeds.png").exists()
    assert doc["comparisons"][0]["seeds"] == 2
    assert main(args + ["--seeds", "0,1"]) == 2  # the folder exists: neither overwritten nor half-written

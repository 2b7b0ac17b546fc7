import pytest
import torch

from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.cli import main
from compress.errors import CompressError
from compress.models import ModelSpec
from compress.prune.masks import apply_masks, filter_masks
from compress.prune.ratios import allocate, prunable
from compress.prune.rebuild import model_from_checkpoint
from compress.prune.slim import slim, slim_checkpoint


def masked_model(name, ratio=0.4, width=0.25, seed=0):
    torch.manual_seed(seed)
    spec = ModelSpec(name, width=width)
    m = spec.build().eval()
    for mod in m.modules():  # trained-looking BatchNorm statistics, so biases matter
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.bias.data.uniform_(-0.2, 0.2)
    masks = filter_masks(m, {n: ratio for n in prunable(m, "filter")}, spec.example_input())
    apply_masks(m, masks)
    return spec, m, masks


@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vgg16", "vgg19", "resnet20", "resnet56", "resnet18", "mobilenet_v2"])
def test_slim_equals_masked(name, small):
    spec, m, _ = masked_model(name, width=0.125 if name in ("resnet56", "vgg19") else 0.25)
    r = slim(m, spec, small)
    assert r.stats["check"]["max_rel_diff"] <= 1e-4
    assert r.stats["check"]["acc_masked"] == r.stats["check"]["acc_slim"]
    assert r.stats["params"]["slim"] < r.stats["params"]["masked"]
    assert r.stats["filter_sparsity"]["slim"] == 0.0  # nothing zero is left


def test_uniform_40_vgg13_widths_and_macs():
    spec = ModelSpec("vgg13")
    m = spec.build().eval()
    apply_masks(m, filter_masks(m, allocate(m, "filter", 0.4), spec.example_input()))
    r = slim(m, spec)
    widths = r.stats["widths"]["slim"]
    expected = {64: 38, 128: 77, 256: 154, 512: 307}
    for n, w in r.stats["widths"]["dense"].items():
        assert abs(widths[n] - expected[w]) <= 1
    ratio = r.stats["macs"]["slim"] / r.stats["macs"]["dense"]
    assert 0.34 <= ratio <= 0.38  # (0.6)^2 = 0.36, plus the first conv's 3 inputs
    assert r.stats["filter_fraction_removed"] >= 0.4


def test_round_to_gives_multiples_and_keeps_sparsity(small):
    spec, m, _ = masked_model("vgg13", ratio=0.4, width=0.5)
    r = slim(m, spec, small, round_to=8)
    for n, w in r.stats["widths"]["slim"].items():
        assert w % 8 == 0
    assert r.stats["filter_fraction_removed"] >= 0.4
    assert r.stats["check"]["max_rel_diff"] <= 1e-4  # against the masked model with the extra filters zeroed


def test_slim_checkpoint_round_trip_weights_only(tmp_path, small):
    spec, m, masks = masked_model("resnet20")
    ckpt = {"kind": "pruned", "model": spec.to_dict(), "state_dict": m.state_dict(), "masks": masks,
            "meta": {"accuracy": 1.0}}
    payload, r = slim_checkpoint(ckpt, small)
    path = save_checkpoint(tmp_path / "slim.pt", payload)
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == "slim" and raw["pruning_history"]
    rebuilt = model_from_checkpoint(load_checkpoint(path))
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(rebuilt(x), r.model(x))
    # the history does not fit another architecture
    raw["model"]["name"] = "vgg11"
    save_checkpoint(tmp_path / "wrong.pt", {k: v for k, v in raw.items() if k != "format"})
    with pytest.raises(CompressError):
        model_from_checkpoint(load_checkpoint(tmp_path / "wrong.pt"))


def test_cli_slim_dense_model_writes_nothing(tmp_path, capsys):
    spec = ModelSpec("vgg11", width=0.125)
    path = save_checkpoint(tmp_path / "dense.pt", {"kind": "dense", "model": spec.to_dict(),
                                                    "state_dict": spec.build().state_dict(), "meta": {}})
    # a user error (exit 2), so `compress slim ... && use slim.pt` stops here, not later
    assert main(["slim", str(path), "--data", "sample"]) == 2
    assert "nothing to remove" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dense.pt"]


def test_cli_slim_writes_and_refuses_overwrite(tmp_path, capsys):
    spec, m, masks = masked_model("vgg11", width=0.125)
    path = save_checkpoint(tmp_path / "Omp_filter_0.40_acc_10.00.pt", {
        "kind": "pruned", "model": spec.to_dict(), "state_dict": m.state_dict(), "masks": masks, "meta": {}})
    assert main(["slim", str(path), "--data", "sample"]) == 0
    out = tmp_path / "Omp_filter_0.40_acc_10.00_slim.pt"
    assert out.exists() and "filters removed" in capsys.readouterr().out
    assert main(["slim", str(path), "--data", "sample"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_slim_rejects_foreign_and_corrupt_files(tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["slim", str(tmp_path / "junk.pt")]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err

"""Bring your own model: a network the toolchain did not define, with the weights its owner has.

The model lives in tests/user_models/zoo_vgg.py (conv layers with bias, a three-layer classifier
with dropout, its own layer names: how public CIFAR model zoos write VGG), is trained for a
moment by plain PyTorch, saved in every format users have, and goes through the CLI.
"""
import json
import sys
from pathlib import Path

import onnx
import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from compress.checkpoint import load_checkpoint, load_dense
from compress.cli import main
from compress.errors import CompressError
from compress.models import ModelSpec
from compress.models.sources import canonical, parse_model_args
from compress.prune.ratios import prunable, read_ratio_file

ZOO = Path(__file__).parent / "user_models" / "zoo_vgg.py"
SOURCE = f"{ZOO}:vgg13"
MODEL = ["--model", SOURCE, "--model-arg", "width=0.125"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def zoo_model(small):
    """The user's model, trained for one epoch by a plain PyTorch loop (not this toolchain)."""
    sys.path.insert(0, str(ZOO.parent))
    try:
        import zoo_vgg
    finally:
        sys.path.remove(str(ZOO.parent))
    torch.manual_seed(0)
    model = zoo_vgg.vgg13(width=0.125)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    mean = torch.tensor(small.mean).view(1, 3, 1, 1)
    std = torch.tensor(small.std).view(1, 3, 1, 1)
    model.train()
    for i in range(0, 512, 64):
        x = (small.train_x[i:i + 64].float() / 255 - mean) / std
        loss = nn.functional.cross_entropy(model(x), small.train_y[i:i + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def weight_files(zoo_model, tmp_path_factory):
    """The same weights in each format public training scripts write."""
    d = tmp_path_factory.mktemp("weights")
    state = zoo_model.state_dict()
    torch.save(state, d / "plain.pth")
    torch.save({"epoch": 1, "acc": 12.5, "optimizer": {"lr": 0.05},
                "model_state_dict": {f"module.{k}": v for k, v in state.items()}}, d / "nested.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "weights.safetensors"))
    torch.save(zoo_model, d / "whole.pt")  # a pickled module
    return d


def spec():
    return ModelSpec(canonical(SOURCE), args={"width": 0.125})


@pytest.mark.parametrize("name", ["plain.pth", "nested.pt", "weights.safetensors"])
def test_each_weight_format_loads(weight_files, zoo_model, name):
    dense = load_dense(weight_files / name, spec())
    ref = zoo_model.state_dict()
    assert set(dense["state_dict"]) == set(ref)
    assert all(torch.equal(dense["state_dict"][k], ref[k]) for k in ref)
    imported = dense["meta"]["imported"]
    if name == "nested.pt":
        assert imported["found"] == "under 'model_state_dict'"
        assert imported["stripped"] == ["module."] and set(imported["ignored"]) == {"epoch", "acc", "optimizer"}


def test_pickled_module_needs_trust(weight_files):
    with pytest.raises(CompressError, match="pickled Python objects.*--trust-pickle"):
        load_dense(weight_files / "whole.pt", spec())
    dense = load_dense(weight_files / "whole.pt", spec(), trust_pickle=True)
    assert dense["meta"]["imported"]["trust_pickle"] is True


def test_omp_filter_slim_onnx_from_the_cli(weight_files, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["filter", "--ratio", "0.4", "--omp", "--epochs", "1", *MODEL, "--checkpoint",
                 str(weight_files / "nested.pt"), "--data", "sample", "--batch-size", "256", "--out", str(run),
                 "--no-bench", "--mean", "0.49,0.48,0.45", "--std", "0.25,0.24,0.26"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "state dict under 'model_state_dict'" in captured.out and "imported model" in captured.out
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"]["name"] == canonical(SOURCE) and manifest["model"]["args"] == {"width": 0.125}
    assert manifest["imported"]["stripped"] == ["module."]
    dense = load_checkpoint(run / "dense.pt")  # saved as ours, pickle-free
    assert dense["meta"]["dataset"]["mean"] == [0.49, 0.48, 0.45]
    slim = json.loads((run / "slim" / "slim.json").read_text())
    assert slim["check"]["acc_masked"] == slim["check"]["acc_slim"]
    # the three-layer head keeps its outputs; the convs lost filters
    assert slim["widths"]["slim"]["body.0"] < slim["widths"]["dense"]["body.0"]
    index = json.loads((run / "onnx" / "export.json").read_text())
    assert all(m["parity"]["argmax_agreement"] == 1.0 for m in index["models"])
    proto = onnx.load(str(run / "onnx" / f"{Path(manifest['artifacts']['slim']).stem}.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    contract = json.loads(meta["compress.input"])
    assert contract["mean"] == [0.49, 0.48, 0.45] and contract["std"] == [0.25, 0.24, 0.26]
    assert contract["image_size"] == 32 and len(json.loads(meta["compress.classes"])) == 10
    quantized = json.loads((run / "onnx" / "quantize.json").read_text())  # the quantize stage ran by default
    assert len(quantized["models"]) == 2 and all(Path(m["int8"]).exists() for m in quantized["models"])
    report = (run / "report.md").read_text()
    assert "## Your model" in report and "model_state_dict" in report and "near chance" in report


def test_import_then_every_command_reads_it(weight_files, tmp_path, capsys):
    out = tmp_path / "dense.pt"
    assert main(["import", *MODEL, "--checkpoint", str(weight_files / "whole.pt"), "--trust-pickle",
                 "--data", "sample", "--out", str(out)]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt["meta"]["imported"]["trust_pickle"] is True and ckpt["meta"]["accuracy"] is not None
    assert main(["sparsity", str(out)]) == 2  # the checkpoint names a file to import: not on its own word
    assert "--trust-code" in capsys.readouterr().err
    assert main(["sparsity", str(out), "--trust-code"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("make, args, match", [
    (lambda d, w: w / "whole.pt", [], "pickled Python objects"),
    (lambda d, w: d / "missing.pth", [], "does not exist"),
    (lambda d, w: _write(d / "corrupt.pth", (w / "plain.pth").read_bytes()[:500]), [], "truncated or corrupt"),
    (lambda d, w: _write(d / "bad.safetensors", b"not a safetensors file"), [], "not a readable safetensors"),
    (lambda d, w: _torch_save(d / "vgg16.pt", ModelSpec("vgg16", width=0.125).build().state_dict()),
     [], "do not fit the model.*another architecture"),
    (lambda d, w: _torch_save(d / "wide.pt", ModelSpec(canonical(SOURCE), args={"width": 0.25}).build().state_dict()),
     [], "2x as wide"),
    (lambda d, w: _torch_save(d / "c100.pt", ModelSpec(canonical(SOURCE), 100, args={"width": 0.125}).build().state_dict()),
     [], "predict 100 classes"),
    (lambda d, w: w / "plain.pth", ["--model-arg", "width"], "not KEY=VALUE"),
    (lambda d, w: w / "plain.pth", ["--model", f"{ZOO}:not_a_model"], "not a torch.nn.Module"),
    (lambda d, w: w / "plain.pth", ["--model", f"{ZOO}:vgg14"], "did you mean 'vgg13'"),
    (lambda d, w: w / "plain.pth", ["--model", "torchvision:resnet51"], "resnet50"),
    (lambda d, w: w / "plain.pth", ["--model", "no_such_package.models:net"], "cannot import module"),
])
def test_bad_weights_are_one_line_and_write_nothing(weight_files, tmp_path, capsys, make, args, match):
    import re

    path = make(tmp_path, weight_files)
    run = tmp_path / "run"
    code = main(["filter", "--ratio", "0.4", *MODEL, *args, "--checkpoint", str(path), "--data", "sample",
                 "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(match, " ".join(err.split())), err
    assert len(err.strip().splitlines()) <= 3  # one message (rich may wrap it), no traceback
    assert "Traceback" not in err
    assert not run.exists()


def _write(path, data):
    path.write_bytes(data)
    return path


def _torch_save(path, obj):
    torch.save(obj, path)
    return path


def test_near_chance_model_is_flagged(tmp_path, capsys):
    path = _torch_save(tmp_path / "untrained.pth", ModelSpec(canonical(SOURCE), args={"width": 0.125}).build().state_dict())
    assert main(["import", *MODEL, "--checkpoint", str(path), "--data", "sample", "--out", str(tmp_path / "d.pt")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "near chance" in err and "--mean/--std" in err


def test_model_args_are_yaml_scalars():
    assert parse_model_args(["depth=20", "dropout=0.5", "name=abc", "flag=true", "none="]) == \
        {"depth": 20, "dropout": 0.5, "name": "abc", "flag": True, "none": None}


def test_layers_lists_and_templates(tmp_path, capsys):
    out = tmp_path / "t.yaml"
    assert main(["layers", *MODEL, "--template", "0.3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "body.0.weight" in text and "head.6.weight" in text and "MACs" in text
    model = spec().build()
    ratios = read_ratio_file(out, model, "filter")  # the template passes the ordinary checks
    assert set(ratios) == set(prunable(model, "filter")) and all(0.3 <= r < 0.35 for r in ratios.values())
    # a conv classifier head keeps its outputs: left out of the template, refused in a ratio file
    squeeze = tmp_path / "sq.yaml"
    assert main(["layers", "--model", "torchvision:squeezenet1_1", "--template", "0.3", "--out", str(squeeze)]) == 0
    assert "produces the logits" in " ".join(capsys.readouterr().out.split())
    sq = ModelSpec("torchvision:squeezenet1_1").build()
    assert "classifier.1.weight" not in read_ratio_file(squeeze, sq, "filter")
    squeeze.write_text(squeeze.read_text() + "  classifier.1.weight: 0.3\n")
    with pytest.raises(CompressError, match="produces the logits"):
        read_ratio_file(squeeze, sq, "filter")


def test_checkpoint_whose_source_is_gone(tmp_path, weight_files):
    from compress.checkpoint import save_checkpoint
    from compress.prune.rebuild import model_from_checkpoint

    moved = tmp_path / "my_vgg.py"
    moved.write_text(ZOO.read_text())
    s = ModelSpec(canonical(f"{moved}:vgg13"), args={"width": 0.125})
    path = save_checkpoint(tmp_path / "d.pt", {"kind": "dense", "model": s.to_dict(),
                                               "state_dict": s.build().state_dict(), "meta": {}})
    moved.unlink()
    from compress.models.sources import allow_code

    allow_code(f"{moved}:vgg13")  # the user names it (--model): the file itself is what is missing
    with pytest.raises(CompressError, match="rebuilds its model from .*my_vgg.py:vgg13.*restore that file"):
        model_from_checkpoint(load_checkpoint(path))


# torchvision's hard structures (residual adds, concatenation, grouped convs, depthwise + squeeze-
# excitation) go through prune -> slim -> ONNX -> INT8 in tests/test_zoo.py (compress.bench.zoo's subset).

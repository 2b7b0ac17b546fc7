"""torchvision's ResNet-18 and MobileNetV2 through the whole toolchain at small size: trained,
pruned (both kinds), slimmed (residual groups and depthwise convs coupled) and exported."""
import importlib.util
import json

import pytest
import torch
import torch.nn as nn

from compress.checkpoint import load_checkpoint
from compress.cli import main
from compress.data.imagefolder import write_image_folder
from compress.models import create_model
from compress.prune.rebuild import model_from_checkpoint

NO_STAGES = ["--no-slim", "--no-export", "--no-bench", "--no-report"]


pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread: see conftest


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("size", [32, 48, 96])
def test_sized_for_the_data(name, size):
    m = create_model(name, num_classes=5, width=0.25, image_size=size).eval()
    assert m(torch.randn(2, 3, size, size)).shape == (2, 5)
    stem = m.conv1 if name == "resnet18" else m.features[0][0]
    # small inputs keep full resolution in the stem (CIFAR practice); larger ones get ImageNet's
    assert stem.stride == ((1, 1) if size <= 64 else (2, 2))
    names = {n for n, _ in m.named_parameters()}
    assert ("layer4.1.conv2.weight" in names) if name == "resnet18" else ("features.17.conv.1.0.weight" in names)


@pytest.fixture(scope="module")
def folder(sample, tmp_path_factory):
    return write_image_folder(sample, tmp_path_factory.mktemp("tv") / "pngs", classes=3, per_class=16)


def dead_filters(state, name):
    return state[name].flatten(1).abs().sum(1) == 0


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_train_prune_slim_export(name, folder, tmp_path):
    data = ["--data", f"imagefolder:{folder}"]
    dense = tmp_path / "dense.pt"
    assert main(["train", "--model", name, "--width", "0.125", "--epochs", "1", "--batch-size", "16",
                 "--out", str(dense), *data]) == 0
    ckpt = load_checkpoint(dense, kinds=("dense",))
    assert ckpt["model"]["num_classes"] == 3 and ckpt["model"]["image_size"] == 32
    assert ckpt["meta"]["complete"] and ckpt["meta"]["history"][0]["train_loss"] > 0

    results = {}
    for kind, ratio in (("unstructured", "0.6"), ("filter", "0.3")):
        run = tmp_path / kind
        assert main([kind, "--checkpoint", str(dense), "--ratio", ratio, "--omp", "--epochs", "1",
                     "--batch-size", "16", "--out", str(run), *data, *NO_STAGES]) == 0
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["result"]["sparsity"] >= float(ratio) - 0.01
        results[kind] = run / manifest["result"]["path"]

    state = load_checkpoint(results["filter"])["state_dict"]
    if name == "resnet18":  # every conv feeding a stage's residual adds loses the same channels
        stage = ["layer1.0.conv2.weight", "layer1.1.conv2.weight", "conv1.weight"]
    else:  # a depthwise conv has one filter per channel of the expand conv before it
        stage = ["features.2.conv.0.0.weight", "features.2.conv.1.0.weight"]
    dead = [dead_filters(state, n) for n in stage]
    assert dead[0].any() and all(torch.equal(dead[0], d) for d in dead[1:])

    slim_path = tmp_path / "slim.pt"
    assert main(["slim", str(results["filter"]), "--out", str(slim_path)]) == 0
    slim = load_checkpoint(slim_path, kinds=("slim",))
    stats = slim["meta"]["slim"]
    assert stats["check"]["max_rel_diff"] <= 1e-4 and stats["check"]["acc_masked"] == stats["check"]["acc_slim"]
    assert stats["params"]["slim"] < stats["params"]["masked"] and stats["macs"]["slim"] < stats["macs"]["dense"]
    rebuilt = model_from_checkpoint(slim)  # the pruning history replays on a fresh torchvision model
    masked = model_from_checkpoint(load_checkpoint(results["filter"]))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), masked(x), rtol=1e-4, atol=1e-5)
    if name == "mobilenet_v2":
        dw = [m for m in rebuilt.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
        assert dw and all(m.groups == m.in_channels == m.out_channels for m in dw)

    if importlib.util.find_spec("export") is None:
        pytest.skip("the export package is not installed")
    from compress.export import export_checkpoint

    report = export_checkpoint(slim_path, tmp_path / "slim.onnx", data=None)
    assert all(m["parity"]["max_rel_diff"] <= m["parity"]["tolerance"] for m in report["models"])

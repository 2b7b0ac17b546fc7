"""Filter pruning of transformer and hybrid models: the hidden width of their MLP blocks (linear
output neurons) is pruned, masked == slim, and what must stay whole says why."""
import copy
import json
from pathlib import Path

import pytest
import torch

from compress.cli import main
from compress.models import ModelSpec
from compress.models.sources import allow_code
from compress.models.structure import fixed_filters
from compress.prune.masks import apply_masks, filter_masks
from compress.prune.ratios import allocate, prunable
from compress.prune.slim import slim

VIT = Path(__file__).parent / "user_models" / "tiny_vit.py"
pytestmark = pytest.mark.usefixtures("one_thread")


def _masked_and_slim(source: str, ratio: float = 0.5, **args):
    allow_code(source)
    spec = ModelSpec(source, 10, 1.0, 32, args=args)
    torch.manual_seed(0)
    model = spec.build().eval()
    masks = filter_masks(model, allocate(model, "filter", ratio, "uniform"), spec.example_input())
    apply_masks(model, masks)
    return spec, model, slim(copy.deepcopy(model), spec).model


def test_vit_mlp_hidden_width_is_pruned_and_removed():
    spec, masked, slimmed = _masked_and_slim(f"{VIT}:vit")
    names = list(prunable(masked, "filter"))
    assert names == ["encoder.layers.encoder_layer_0.mlp.0.weight", "encoder.layers.encoder_layer_1.mlp.0.weight"]
    fixed = fixed_filters(masked)
    assert "logits" in fixed["heads.head.weight"]
    assert "LayerNorm" in fixed["encoder.layers.encoder_layer_0.mlp.3.weight"]  # the residual stream
    layer = slimmed.encoder.layers.encoder_layer_0.mlp
    assert layer[0].out_features == 32 and layer[3].in_features == 32  # 64 hidden -> 32
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(masked(x), slimmed(x), atol=1e-5)


def test_convnext_mlp_is_pruned_through_timm():
    """timm's ConvNeXt with the MLP as two linear layers (as in ConvNeXt-T; the smallest variants
    default to 1x1 convs, which filter pruning already narrowed)."""
    pytest.importorskip("timm")
    spec, masked, slimmed = _masked_and_slim("timm:convnext_atto", 0.3, conv_mlp=False)
    assert isinstance(masked.stages[0].blocks[0].mlp.fc1, torch.nn.Linear)
    assert "stages.0.blocks.0.mlp.fc1.weight" in prunable(masked, "filter")
    assert "LayerNorm" in fixed_filters(masked)["stages.0.blocks.0.mlp.fc2.weight"]
    assert slimmed.stages[0].blocks[0].mlp.fc1.out_features < masked.stages[0].blocks[0].mlp.fc1.out_features
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(masked(x), slimmed(x), atol=1e-4)


def test_a_vit_through_the_pipeline(tmp_path, capsys):
    """`compress filter` on a ViT from the user's file: MLP widths in the ratio table, slim model
    equal to the masked one, ONNX export with parity."""
    run = tmp_path / "run"
    code = main(["filter", "--ratio", "0.5", "--model", f"{VIT}:vit", "--data", "sample", "--dense-epochs", "1",
                 "--epochs", "1", "--batch-size", "256", "--out", str(run), "--no-quantize", "--no-bench",
                 "--no-report"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "encoder.layers.encoder_layer_1.mlp.0.weight" in captured.out
    slim_stats = json.loads((run / "slim" / "slim.json").read_text())
    assert slim_stats["check"]["acc_masked"] == slim_stats["check"]["acc_slim"]
    assert slim_stats["params"]["slim"] < slim_stats["params"]["masked"]
    assert (run / "onnx" / "export.json").exists()

"""Filter pruning of transformer and hybrid models: the hidden width of their MLP blocks (linear
output neurons) and whole attention heads are pruned, masked == slim, and what must stay whole
says why."""
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
    assert names == [f"encoder.layers.encoder_layer_{i}.{p}" for i in (0, 1)
                     for p in ("self_attention.in_proj_weight", "mlp.0.weight")]  # heads, MLP hidden width
    fixed = fixed_filters(masked)
    assert "logits" in fixed["heads.head.weight"]
    # the residual stream: a LayerNorm normalises it (found through the patch embedding's group)
    assert "LayerNorm" in fixed["encoder.layers.encoder_layer_0.mlp.3.weight"]
    layer = slimmed.encoder.layers.encoder_layer_0.mlp
    assert layer[0].out_features == 32 and layer[3].in_features == 32  # 64 hidden -> 32
    attn = slimmed.encoder.layers.encoder_layer_0.self_attention
    assert attn.num_heads * 2 == masked.encoder.layers.encoder_layer_0.self_attention.num_heads
    assert attn.out_proj.in_features * 2 == attn.embed_dim
    # the narrower attention is counted (Torch-Pruning's counter skipped the subclass: MACs x2.1 for
    # params x1.45 on ViT-B/16); most of a ViT's MACs are in its linear layers, so the ratios track
    from compress.prune.channels import count_macs_params
    (macs, params), (slim_macs, slim_params) = count_macs_params(masked, spec), count_macs_params(slimmed, spec)
    assert abs(macs / slim_macs - params / slim_params) < 0.15 * params / slim_params
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
    assert "residual stream" in fixed_filters(masked)["stages.0.blocks.0.mlp.fc2.weight"]
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


def test_timm_vit_loses_whole_heads_and_the_file_rebuilds_them(tmp_path):
    """timm's attention: the qkv layer's ratio is the share of heads removed. A masked head has
    zero q, k, v rows (and proj columns); slim removes them and lowers num_heads/attn_dim, and a
    slim checkpoint's history rebuilds the same module; ONNX Runtime agrees with it."""
    pytest.importorskip("timm")
    from compress.export.onnx_export import export_onnx
    from compress.export.runtime import cpu_runner
    from compress.prune.rebuild import replay_history

    args = dict(img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=4)
    spec, masked, slimmed = _masked_and_slim("timm:vit_tiny_patch16_224", 0.5, **args)
    assert "blocks.0.attn.qkv.weight" in prunable(masked, "filter")  # heads
    assert "blocks.0.mlp.fc1.weight" in prunable(masked, "filter")  # MLP hidden width
    assert "LayerNorm" in fixed_filters(masked)["blocks.0.attn.proj.weight"]  # the residual stream
    attn = slimmed.blocks[0].attn
    assert (attn.num_heads, attn.attn_dim, attn.qkv.out_features, attn.proj.in_features) == (2, 32, 96, 32)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(masked(x), slimmed(x), atol=1e-5)
    from compress.prune.channels import remove_channels
    _, history, _ = remove_channels(copy.deepcopy(masked), spec.example_input())
    assert [h[1] for h in history if h[0] == "blocks.0.attn"] == ["heads"]
    rebuilt = replay_history(spec.build().eval(), history, spec)
    rebuilt.load_state_dict(slimmed.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), slimmed(x))
    path = export_onnx(slimmed, spec, tmp_path / "vit.onnx")
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(cpu_runner(path, "ort")(x.numpy())), slimmed(x), atol=1e-4)

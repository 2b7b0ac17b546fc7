"""N:M (2:4) semi-structured pruning: masks, masked retraining through `compress nm`, and the
2:4 benchmark's storage numbers and conv-as-GEMM layout (its GPU timings need a GPU)."""
import json

import pytest
import torch
import torch.nn as nn

from compress.bench import semi_structured as ss
from compress.checkpoint import load_checkpoint
from compress.cli import main
from compress.errors import CompressError
from compress.models import ModelSpec, create_model
from compress.prune.masks import apply_masks, nm_layers, nm_masks

pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread: see conftest


def groups_of_four(t: torch.Tensor) -> torch.Tensor:
    """(groups, 4) along the input-channel axis (dim 1), at every other position."""
    return t.movedim(1, -1).reshape(-1, 4)


def test_nm_masks_keep_the_largest_n_of_every_m():
    torch.manual_seed(0)
    m = create_model("vgg11", width=0.25)
    names = nm_layers(m)
    assert "features.0.weight" not in names and "classifier.weight" in names  # 3 input channels: left dense
    params = dict(m.named_parameters())
    for n_keep in (1, 2, 3):
        masks = nm_masks(m, names, n_keep, 4)
        for name in names:
            keep, w = groups_of_four(masks[name]), groups_of_four(params[name].detach().abs())
            assert (keep.sum(1) == n_keep).all()
            assert (w.masked_fill(~keep, float("inf")).min(1).values >= w.masked_fill(keep, -1).max(1).values).all()
    with pytest.raises(CompressError, match="not a multiple of 4"):
        nm_masks(m, ["features.0.weight"], 2, 4)
    with pytest.raises(CompressError, match="0 < N < M"):
        nm_masks(m, names, 4, 4)


def test_depthwise_convs_are_left_dense():
    m = create_model("mobilenet_v2", width=0.5)
    names = nm_layers(m)
    convs = dict(m.named_modules())
    assert names and all(convs[n[: -len(".weight")]].weight.shape[1] % 4 == 0 for n in names)
    assert not any(getattr(convs[n[: -len(".weight")]], "groups", 1) > 1 for n in names)


@pytest.fixture(scope="module")
def tiny(png_folder_and_dense):
    return png_folder_and_dense


def test_cli_nm_retrains_and_keeps_exactly_two_of_four(tiny, tmp_path):
    folder, dense = tiny
    run = tmp_path / "nm"
    assert main(["nm", "--checkpoint", str(dense), "--omp", "--epochs", "2", "--batch-size", "16",
                 "--data", f"imagefolder:{folder}", "--out", str(run),
                 "--no-slim", "--no-export", "--no-bench", "--no-report"]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["job"]["kind"] == "nm" and manifest["job"]["nm"] == [2, 4] and manifest["status"] == "complete"
    ckpt = load_checkpoint(run / manifest["result"]["path"], kinds=("pruned",))
    model = ModelSpec.from_dict(ckpt["model"]).build()
    assert sorted(ckpt["masks"]) == sorted(nm_layers(model))
    state = ckpt["state_dict"]
    zeros = total = 0
    for name, keep in ckpt["masks"].items():
        w = groups_of_four(state[name])
        assert (groups_of_four(keep).sum(1) == 2).all(), name  # the pattern
        assert (w[~groups_of_four(keep)] == 0).all(), name  # pruned weights stayed zero through retraining
        assert ((w != 0).sum(1) <= 2).all(), name
        assert (w[groups_of_four(keep)] != 0).float().mean() > 0.99  # the kept ones trained
        zeros += int((state[name] == 0).sum())
        total += state[name].numel()
    assert zeros / total == pytest.approx(0.5, abs=1e-3)  # 50% on the N:M layers
    assert (state["features.0.weight"] != 0).all()  # the 3-channel first conv stays dense
    assert 0.45 < manifest["result"]["sparsity"] < 0.5  # over all conv/linear weights


def test_conv_as_gemm_puts_the_2_4_groups_along_k():
    """The benchmark's implicit-GEMM layout: channels innermost in K, so 2:4 along input channels
    is 2:4 along the GEMM reduction, and the GEMM computes the convolution."""
    torch.manual_seed(0)
    for conv in (nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
                 nn.Conv2d(12, 8, 1, bias=False)):
        keep = nm_masks(conv, ["weight"], 2, 4)["weight"]
        apply_masks(conv, {"weight": keep})
        w2d = ss.gemm_weight(conv)
        assert ((w2d.reshape(w2d.shape[0], -1, 4) != 0).sum(-1) <= 2).all()
        assert ((ss.gemm_weight(type("W", (), {"weight": keep})()).reshape(w2d.shape[0], -1, 4)).sum(-1) == 2).all()
        x = torch.randn(2, conv.in_channels, 9, 9)
        patches, (n, h, w) = ss.im2col(x, conv)
        y = nn.functional.linear(patches, w2d).view(n, h, w, -1).permute(0, 3, 1, 2)
        assert torch.allclose(y, conv(x), atol=1e-5)


def test_semi_structured_bench_without_gpu_reports_storage(tmp_path, capsys):
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8:
        pytest.skip("this machine has sparse tensor cores; the speed path runs instead")
    assert ss.main(["--model", "vgg13", "--width", "0.25", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "skipped: needs a CUDA GPU with sparse tensor cores" in text
    report = json.loads((tmp_path / "semi_structured.json").read_text())
    rows = {r["layer"]: r for r in report["storage"]["rows"]}
    assert rows["features.0"]["ratio"] == 1.0 and "in=3" in rows["features.0"]["reason"]
    conv = rows["features.3"]  # 16x16x3x3 in fp16: 4608 B dense, 2304 B values, 288 B metadata
    assert (conv["dense_bytes"], conv["values_bytes"], conv["metadata_bytes"]) == (4608, 2304, 288)
    assert conv["ratio"] == pytest.approx(0.5625)
    assert 0.5625 < report["storage"]["ratio"] < 0.57
    assert report["speed"]["skipped"].startswith("skipped")
    assert report["model"]["spec"]["name"] == "vgg13" and report["machine"]["torch"]

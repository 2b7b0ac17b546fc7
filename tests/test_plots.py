"""Figures: consistent styles, a sensible default mask layer, PNGs written atomically, bad input refused."""
import pytest
import torch

from compress import plots
from compress.models import create_model

PNG = b"\x89PNG\r\n\x1a\n"


def test_each_model_type_has_its_own_style():
    four = [plots.model_style(k, m) for k in ("unstructured", "filter") for m in ("omp", "imp")]
    assert len({s.color for s in four}) == 4 and len({s.marker for s in four}) == 4
    assert plots.model_style("filter", "IMP") == plots.MODEL_STYLES["imp_filter"]
    assert plots.model_style("unstructured", "omp").label == "OMP unstructured"


def test_default_mask_layer_is_a_mid_network_conv():
    shapes = {n: list(p.shape) for n, p in create_model("vgg13").named_parameters()}
    assert plots.default_mask_layer(shapes) == "features.14.weight"  # conv5: 256 filters x 1152 columns
    small = {n: list(p.shape) for n, p in create_model("vgg13", width=0.25).named_parameters()}
    assert plots.default_mask_layer(small) == "features.14.weight"
    assert plots.default_mask_layer({"a": [8, 3, 3, 3], "b": [10, 8]}) == "a"
    with pytest.raises(ValueError):
        plots.default_mask_layer({"fc": [10, 8]})


def test_layer_labels():
    assert plots.layer_labels(["a", "b", "c"], [[4, 3, 3, 3], [4, 4, 3, 3], [10, 4]]) == ["conv1", "conv2", "fc1"]


def test_figures_are_pngs(tmp_path):
    keep = torch.rand(16, 8, 3, 3) > 0.5
    keep[3] = False
    p = plots.mask_figure(keep, tmp_path / "m.png", model="x", layer="features.3.weight", label="OMP filter")
    assert p.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="4-D"):
        plots.mask_figure(torch.ones(4, 4, dtype=torch.bool), tmp_path / "bad.png", model="x", layer="fc")
    models = [{"kind": "unstructured", "method": "omp", "sparsity": 0.8, "accuracy": 60.0, "acc_after_prune": 20.0,
               "rounds": [{"sparsity": 0.8, "acc_after_prune": 20.0, "acc_after_retrain": 60.0}]},
              {"kind": "filter", "method": "imp", "sparsity": 0.4, "accuracy": 58.0, "acc_after_prune": 50.0,
               "rounds": [{"sparsity": s, "acc_after_prune": a, "acc_after_retrain": b}
                          for s, a, b in [(0.16, 50, 61), (0.29, 45, 60), (0.4, 40, 58)]]}]
    p = plots.accuracy_vs_sparsity(models, 62.0, tmp_path / "a.png")
    assert p.read_bytes()[:8] == PNG
    curves = {"magnitude": [{"sparsity": s, "accuracy": a} for s, a in [(0.8, 62), (0.9, 61.5), (0.95, 30)]]}
    p = plots.sweep_figure(curves, 62.0, tmp_path / "s.png", kind="unstructured", tolerance=1.0,
                           tradeoffs={"magnitude": {"sparsity": 0.9, "accuracy": 61.5}})
    assert p.read_bytes()[:8] == PNG
    assert not list(tmp_path.glob(".*.tmp"))

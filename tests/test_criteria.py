"""Pruning criteria: Taylor (data) and SynFlow (data-free), per weight and per filter, and the CLI."""
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from compress.checkpoint import load_checkpoint
from compress.cli import main
from compress.data import Dataset
from compress.errors import CompressError
from compress.models import create_model
from compress.prune.criteria import (
    CRITERIA,
    Criterion,
    get_criterion,
    linearise,
    synflow_ratios,
    synflow_scores,
    taylor_scores,
)
from compress.prune.masks import apply_masks, filter_masks, unstructured_masks
from compress.prune.ratios import prunable, pruned_count

X = torch.zeros(1, 3, 32, 32)


pytestmark = pytest.mark.usefixtures("one_thread")  # one torch thread: see conftest


def subset(ds, start, n=64):
    return Dataset(name="part", source=ds.source, classes=ds.classes, train_x=ds.train_x[start:start + n],
                   train_y=ds.train_y[start:start + n], test_x=ds.test_x[:n], test_y=ds.test_y[:n],
                   fingerprint=f"part{start}")


@pytest.mark.parametrize("criterion", ["taylor", "synflow"])
@pytest.mark.parametrize("kind", ["unstructured", "filter", "nm"])
def test_score_shapes(criterion, kind, small):
    torch.manual_seed(0)
    m = create_model("vgg11", width=0.125).eval()
    names = list(prunable(m, "filter" if kind == "filter" else "unstructured"))
    ratios = {n: 0.5 for n in names}
    scores = get_criterion(criterion).scores(m, kind, ratios, subset(small, 0), X)
    params = dict(m.named_parameters())
    for n in names:
        want = (params[n].shape[0],) if kind == "filter" else params[n].shape
        assert scores[n].shape == want and scores[n].dtype == torch.float32, n
    assert get_criterion("magnitude").scores(m, kind, ratios, None, X) is None  # the mask functions use |w| / L2 norm


def test_taylor_is_first_order_and_depends_on_the_data(small):
    torch.manual_seed(0)
    m = create_model("vgg11", width=0.125).eval()
    names = ["features.4.weight", "classifier.weight"]
    a = subset(small, 0)
    # one batch holding the whole subset: compare with |g·w| and (Σ_f g·w)² computed by hand
    per_weight = taylor_scores(m, names, a, batches=1, batch_size=64)
    per_filter = taylor_scores(m, names, a, batches=1, batch_size=64, per_filter=True)
    xb = (a.train_x.float() - torch.tensor(a.mean).view(1, 3, 1, 1) * 255) / (torch.tensor(a.std).view(1, 3, 1, 1) * 255)
    m.zero_grad()
    F.cross_entropy(m(xb), a.train_y).backward()
    w = m.features[4].weight
    assert torch.allclose(per_weight["features.4.weight"], (w.grad * w).abs(), rtol=1e-4, atol=1e-9)
    assert torch.allclose(per_filter["features.4.weight"], (w.grad * w).flatten(1).sum(1).square(), rtol=1e-4,
                          atol=1e-12)
    m.zero_grad()
    # other images, other scores; the same images, the same scores; magnitude needs no data at all
    b = subset(small, 256)
    again = taylor_scores(m, names, a, batches=1, batch_size=64)
    other = taylor_scores(m, names, b, batches=1, batch_size=64)
    assert torch.equal(again["classifier.weight"], per_weight["classifier.weight"])
    assert not torch.allclose(other["classifier.weight"], per_weight["classifier.weight"])
    assert not m.training  # the model's mode is restored
    with pytest.raises(Exception, match="needs training data"):
        get_criterion("taylor").scores(m, "unstructured", {n: 0.5 for n in names}, None, X)


def test_synflow_is_data_free_and_prunes_what_it_scored_lowest():
    torch.manual_seed(0)
    m = create_model("vgg11", width=0.125).eval()
    ratios = {n: 0.8 for n in prunable(m, "unstructured")}
    before = {k: v.clone() for k, v in m.state_dict().items()}
    s1 = get_criterion("synflow").scores(m, "unstructured", ratios, None, X)
    s2 = synflow_scores(m, ratios, X)
    assert all(torch.equal(s1[n], s2[n]) for n in ratios)  # no data, no randomness
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())  # the model is untouched
    masks = unstructured_masks(m, ratios, s1)
    for n, keep in masks.items():
        pruned = s1[n] == -float("inf")  # SynFlow's own choice after its 100 steps
        assert int(pruned.sum()) == pruned_count(0.8, keep.numel())
        assert torch.equal(~keep, pruned)


def test_synflow_keeps_already_pruned_weights_pruned():
    torch.manual_seed(0)
    m = create_model("vgg11", width=0.125).eval()
    first = unstructured_masks(m, {"features.4.weight": 0.3})
    apply_masks(m, first)
    scores = synflow_scores(m, {"features.4.weight": 0.6}, X)
    second = unstructured_masks(m, {"features.4.weight": 0.6}, scores, previous=first)
    assert not (second["features.4.weight"] & ~first["features.4.weight"]).any()


def test_global_synflow_avoids_layer_collapse_where_magnitude_does_not():
    torch.manual_seed(0)
    m = create_model("vgg11", width=0.125).eval()
    target = 0.99
    ratios, scores = synflow_ratios(m, target, X)
    params = prunable(m, "unstructured")
    total = sum(p.numel() for p in params.values())
    pruned = sum(round(r * params[n].numel()) for n, r in ratios.items())
    assert abs(pruned / total - target) < 1e-3
    assert max(ratios.values()) < 1.0  # every layer of the chain keeps weights
    # and the pruned network still passes signal from input to output
    apply_masks(m, unstructured_masks(m, ratios, scores))
    assert (linearise(m)(torch.ones(1, 3, 32, 32, dtype=torch.float64)) > 0).all()
    # the same global target by |w| alone removes a whole layer (the classifier: smallest init)
    torch.manual_seed(0)
    fresh = create_model("vgg11", width=0.125)
    w = torch.cat([p.detach().abs().flatten() for p in prunable(fresh, "unstructured").values()])
    threshold = torch.kthvalue(w, int(target * w.numel())).values
    assert any(bool((p.detach().abs() <= threshold).all()) for p in prunable(fresh, "unstructured").values())


def test_linearised_network_is_positive_with_batchnorm_and_relu6():
    torch.manual_seed(0)
    m = create_model("mobilenet_v2", width=0.25).eval()
    for mod in m.modules():  # trained-looking statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-3, 3)
            mod.bias.data.uniform_(-1, 1)
    net = linearise(m)
    assert not any(isinstance(x, nn.ReLU6) for x in net.modules())  # would clamp at 6 and cut the flow
    assert all((p >= 0).all() for p in net.parameters())
    assert all((b.running_mean == 0).all() for b in net.modules() if isinstance(b, nn.BatchNorm2d))
    out = net(torch.ones(1, 3, 32, 32, dtype=torch.float64))
    assert torch.isfinite(out).all() and (out > 0).all()
    assert any(isinstance(x, nn.ReLU6) for x in m.modules())  # the original is untouched


def test_synflow_filters_of_a_residual_group_go_together_and_pruned_ones_stay():
    torch.manual_seed(0)
    m = create_model("resnet20", width=0.5).eval()
    ratios = {n: 0.5 for n in prunable(m, "filter")}
    previous = filter_masks(m, {n: 0.25 for n in ratios}, X)
    apply_masks(m, previous)
    scores = synflow_scores(m, ratios, X, iterations=20, per_filter=True)
    masks = filter_masks(m, ratios, X, scores, previous=previous)
    stage = ["conv1.weight", "layer1.0.conv2.weight", "layer1.1.conv2.weight", "layer1.2.conv2.weight"]
    dead = [~masks[n].flatten(1).any(1) for n in stage]
    assert all(torch.equal(dead[0], d) for d in dead[1:]) and int(dead[0].sum()) == 4
    for n in ratios:  # masks only grow
        assert not (masks[n] & ~previous[n]).any()
    assert (scores["conv1.weight"][~previous["conv1.weight"].flatten(1).any(1)] == -float("inf")).all()


@pytest.fixture(scope="module")
def tiny_run_inputs(png_folder_and_dense):
    return png_folder_and_dense


@pytest.mark.parametrize("kind, criterion, ratio", [("unstructured", "taylor", "0.8"), ("filter", "synflow", "0.4")])
def test_cli_runs_with_a_second_criterion(kind, criterion, ratio, tiny_run_inputs, tmp_path):
    folder, dense = tiny_run_inputs
    run = tmp_path / "run"
    assert main([kind, "--checkpoint", str(dense), "--criterion", criterion, "--ratio", ratio, "--omp",
                 "--epochs", "1", "--batch-size", "16", "--data", f"imagefolder:{folder}", "--out", str(run),
                 "--no-slim", "--no-export", "--no-bench", "--no-report"]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["job"]["criterion"] == criterion and manifest["status"] == "complete"
    ckpt = load_checkpoint(run / manifest["result"]["path"], kinds=("pruned",))
    assert ckpt["meta"]["criterion"] == criterion
    assert manifest["result"]["sparsity"] >= float(ratio) - 0.01


def test_criteria_are_objects_found_by_name():
    """One registry: the CLI's choices are its names; each criterion says what it needs."""
    from compress.cli import build_parser

    assert list(CRITERIA) == ["magnitude", "taylor", "synflow"]
    assert all(isinstance(c, Criterion) and c.name == n for n, c in CRITERIA.items())
    assert [n for n, c in CRITERIA.items() if c.needs_data] == ["taylor"]
    assert [n for n, c in CRITERIA.items() if c.iterative] == ["synflow"]
    assert get_criterion(CRITERIA["taylor"]) is CRITERIA["taylor"]
    with pytest.raises(CompressError, match="unknown criterion 'tayler'.*taylor"):
        get_criterion("tayler")
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in ("unstructured", "filter", "plan", "sensitivity"):
        criterion = next(a for a in sub.choices[command]._actions if a.dest == "criterion")
        assert tuple(criterion.choices) == tuple(CRITERIA), command

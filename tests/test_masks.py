import pytest
import torch

from compress.enforcer import MaskEnforcer
from compress.models import create_model
from compress.prune.masks import apply_masks, filter_masks, nm_masks, unstructured_masks
from compress.prune.ratios import prunable, pruned_count
from compress.prune.sparsity import sparsity_report

X = torch.zeros(1, 3, 32, 32)


def test_unstructured_exact_counts_smallest_magnitudes():
    m = create_model("vgg11", width=0.25)
    ratios = {n: r for n, r in zip(prunable(m, "unstructured"), [0.1, 0.5, 0.33, 0.9, 0.7, 0.2, 0.0, 0.95, 0.6])}
    masks = unstructured_masks(m, ratios)
    params = dict(m.named_parameters())
    for n, r in ratios.items():
        keep = masks[n]
        assert int((~keep).sum()) == pruned_count(r, keep.numel())
        if (~keep).any() and keep.any():
            assert params[n].detach().abs()[~keep].max() <= params[n].detach().abs()[keep].min()


def test_ties_are_broken_deterministically():
    m = create_model("vgg11", width=0.125)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(1.0)  # every weight ties
    a = unstructured_masks(m, {"features.0.weight": 0.5})
    b = unstructured_masks(m, {"features.0.weight": 0.5})
    assert torch.equal(a["features.0.weight"], b["features.0.weight"])
    assert not a["features.0.weight"].flatten()[0] and a["features.0.weight"].flatten()[-1]  # lowest index first


def test_masks_only_grow():
    m = create_model("vgg11", width=0.25)
    first = unstructured_masks(m, {"features.4.weight": 0.3})
    apply_masks(m, first)
    with torch.no_grad():  # make some pruned weights large again: they must stay pruned
        m.features[4].weight.add_(torch.randn_like(m.features[4].weight))
    second = unstructured_masks(m, {"features.4.weight": 0.6}, previous=first)
    assert not (second["features.4.weight"] & ~first["features.4.weight"]).any()
    assert int((~second["features.4.weight"]).sum()) == pruned_count(0.6, m.features[4].weight.numel())


def test_filter_masks_zero_filters_and_their_batchnorm():
    m = create_model("vgg13", width=0.25).eval()
    masks = filter_masks(m, {"features.0.weight": 0.5, "features.7.weight": 0.25}, X)
    apply_masks(m, masks)
    w = m.features[0].weight
    dead = w.flatten(1).abs().sum(1) == 0
    assert int(dead.sum()) == pruned_count(0.5, w.shape[0])
    assert (m.features[1].weight[dead] == 0).all() and (m.features[1].bias[dead] == 0).all()
    # the pruned channels output exactly zero
    out = m.features[:3](torch.randn(4, 3, 32, 32))
    assert (out[:, dead] == 0).all()
    assert sparsity_report(m, "filter")["pruned"] == int(dead.sum()) + pruned_count(0.25, m.features[7].weight.shape[0])


def test_filter_masks_pick_smallest_l2_norms():
    m = create_model("vgg11", width=0.25).eval()
    masks = filter_masks(m, {"features.4.weight": 0.5}, X)
    norms = m.features[4].weight.detach().flatten(1).norm(dim=1)
    dead = ~masks["features.4.weight"].flatten(1).any(1)
    assert norms[dead].max() <= norms[~dead].min()


def test_residual_groups_agree():
    m = create_model("resnet20", width=0.5).eval()
    ratios = {n: 0.5 for n in prunable(m, "filter")}
    masks = filter_masks(m, ratios, X)
    stage = ["conv1.weight", "layer1.0.conv2.weight", "layer1.1.conv2.weight", "layer1.2.conv2.weight"]
    dead = [~masks[n].flatten(1).any(1) for n in stage]
    assert all(torch.equal(dead[0], d) for d in dead[1:]) and dead[0].sum() == 4


def test_residual_group_with_disagreeing_ratios_is_an_error():
    from compress.errors import CompressError

    m = create_model("resnet20", width=0.5).eval()
    with pytest.raises(CompressError, match="share their output channels"):
        filter_masks(m, {"conv1.weight": 0.5, "layer1.0.conv2.weight": 0.25}, X)


def test_pruned_weights_stay_zero_through_sgd_with_momentum_and_weight_decay():
    torch.manual_seed(0)
    m = create_model("vgg11", width=0.125)
    masks = unstructured_masks(m, {n: 0.7 for n in prunable(m, "unstructured")})
    masks |= filter_masks(m.eval(), {"features.4.weight": 0.5}, X)
    m.train()
    apply_masks(m, masks)
    # momentum buffers that already hold values for pruned weights: the hook must still win
    opt = torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9, nesterov=True, weight_decay=5e-2)
    for p in m.parameters():
        opt.state[p]["momentum_buffer"] = torch.randn_like(p)
    enforcer = MaskEnforcer(m, masks)
    for _ in range(5):
        loss = m(torch.randn(8, 3, 32, 32)).square().mean()
        opt.zero_grad()
        loss.backward()
        enforcer.mask_grads()
        opt.step()
        enforcer.apply()
    enforcer.check()
    params = dict(m.named_parameters())
    for n, keep in masks.items():
        assert (params[n][~keep] == 0).all()
        assert (params[n][keep] != 0).any()  # the kept ones did train


def test_nm_masks_keep_two_of_every_four_input_channels():
    m = create_model("vgg11", width=0.25)
    names = ["features.4.weight", "classifier.weight"]
    masks = nm_masks(m, names, 2, 4)
    conv = masks["features.4.weight"]  # (out, in, kh, kw): groups of 4 along `in`
    groups = conv.movedim(1, -1).reshape(-1, 4)
    assert (groups.sum(1) == 2).all()
    assert (masks["classifier.weight"].reshape(-1, 4).sum(1) == 2).all()

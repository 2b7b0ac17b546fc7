"""Masks are data: {parameter name: bool tensor}, True = kept. Computing, applying, enforcing."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch_pruning._helpers import to_plain_idxs, to_root_idxs

from compress.errors import CompressError
from compress.models.attention import Heads, head_attentions
from compress.models.structure import FIXED_ATTR, build_graph, fixed_in_graph, prunable_groups
from compress.prune.ratios import prunable, pruned_count


# --------------------------------------------------------------------------- computing masks
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned entries in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, keep in masks.items():
            params[name].mul_(keep.to(params[name].device, params[name].dtype))


def unstructured_masks(model: nn.Module, ratios: dict[str, float], scores: dict[str, torch.Tensor] | None = None,
                       previous: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Per layer, exactly `round(ratio * numel)` lowest-scoring weights pruned (score = |w| by default).

    Ties go to the lower flat index (stable sort), so masks are deterministic. Weights pruned
    in `previous` stay pruned (IMP: masks only grow).
    """
    params = dict(model.named_parameters())
    masks = {}
    for name, r in ratios.items():
        w = params[name].detach()
        s = (scores[name] if scores is not None else w.abs()).flatten().float().cpu().clone()
        k = pruned_count(r, s.numel())
        if previous is not None and name in previous:
            already = ~previous[name].flatten().cpu()
            s[already] = -float("inf")
            k = max(k, int(already.sum()))
        keep = torch.ones(s.numel(), dtype=torch.bool)
        keep[torch.argsort(s, stable=True)[:k]] = False
        masks[name] = keep.view_as(w)
    return masks


class FilterGroup:
    """Output channels that must be pruned together (Torch-Pruning's coupling), as parameter names.

    For VGG a group is one conv and its BatchNorm; for a ResNet stage it is every conv whose
    output reaches the same residual add, with their BatchNorms. `members` maps each
    out-channel-pruned parameter to the channel indices that correspond to the root's channels.
    """

    def __init__(self, root: str, channels: int, members: dict[str, list[int]], convs: list[str],
                 channel_groups: int = 1, consumers: list[str] | None = None):
        self.root, self.channels, self.members, self.convs = root, channels, members, convs
        # conv/linear layers whose input channels these are (they shrink too when the group is cut)
        self.consumers = consumers or []
        # a grouped conv (ResNeXt, RegNet) in the group: its G channel blocks must stay equal in
        # size, so the same positions are pruned in every block (as Torch-Pruning's MetaPruner does)
        self.channel_groups = channel_groups

    def __repr__(self):
        return f"FilterGroup({self.root}, {self.channels} channels, convs={self.convs})"


def filter_groups(model: nn.Module, example_inputs: torch.Tensor, dg=None) -> list[FilterGroup]:
    """Coupled filter groups of `model`, rooted at conv layers, from Torch-Pruning's DependencyGraph
    (`dg`: one the caller built for `model` already, so a job traces the model once)."""
    was_training = model.training
    model.eval()
    dg = dg if dg is not None else build_graph(model, example_inputs)
    if FIXED_ATTR not in model.__dict__:  # built outside ModelSpec.build(): find them in this graph
        model.__dict__[FIXED_ATTR] = fixed_in_graph(model, dg)
    fixed = model.__dict__[FIXED_ATTR]
    names = {m: n for n, m in model.named_modules()}
    groups = []
    for group in prunable_groups(dg):
        root_module = group[0].dep.target.module
        channels = root_module.out_channels if isinstance(root_module, nn.Conv2d) else root_module.out_features
        members: dict[str, list[int]] = {}
        convs, consumers = [], []
        channel_groups = 1
        for item in group.items:
            dep, idxs = item.dep, item.idxs
            module = dep.target.module
            if isinstance(module, nn.Conv2d) and 1 < module.groups < module.out_channels:
                channel_groups = max(channel_groups, module.groups)
            if not dg.is_out_channel_pruning_fn(dep.handler) or module not in names:
                if isinstance(module, (nn.Conv2d, nn.Linear)) and module in names and \
                        dg.is_in_channel_pruning_fn(dep.handler):
                    consumers.append(names[module])
                continue
            order = [p for _, p in sorted(zip(to_root_idxs(idxs), to_plain_idxs(idxs)))]
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                convs.append(names[module])
                members[f"{names[module]}.weight"] = order
                if module.bias is not None:
                    members[f"{names[module]}.bias"] = order
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                members[f"{names[module]}.weight"] = order
                members[f"{names[module]}.bias"] = order
        if convs and not any(f"{c}.weight" in fixed for c in convs):
            convs = list(dict.fromkeys(convs))
            groups.append(FilterGroup(names[root_module], channels, members, convs,
                                      channel_groups if channels % channel_groups == 0 else 1,
                                      [c for c in dict.fromkeys(consumers) if c not in convs]))
    model.train(was_training)
    return groups


def head_score(h: Heads, params: dict[str, torch.Tensor], scores: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """One score per head: its q, k, v rows' scores summed (squared L2 norms by default)."""
    s = scores[h.qkv] if scores is not None and h.qkv in scores else params[h.qkv].detach().pow(2).sum(1)
    s = s.float().cpu()
    return torch.stack([s[h.rows([i])].sum() for i in range(h.heads)])


def dead_heads(h: Heads, params: dict[str, torch.Tensor]) -> list[int]:
    """Heads whose q, k, v rows (and biases) are all zero; at least one head stays."""
    zero = params[h.qkv].detach().abs().sum(1) == 0
    if h.qkv_bias is not None:
        zero &= params[h.qkv_bias].detach() == 0
    zero = zero.cpu()
    dead = [i for i in range(h.heads) if bool(zero[h.rows([i])].all())]
    return dead[:-1] if len(dead) == h.heads else dead


def head_masks(h: Heads, params: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """Masks that zero the removed heads' q, k, v rows and their output-projection columns."""
    gone = [i for i in range(h.heads) if not keep[i]]
    out = {}
    for name in (h.qkv, h.qkv_bias):
        if name is not None:
            m = torch.ones(params[name].shape, dtype=torch.bool)
            m[h.rows(gone)] = False
            out[name] = m
    proj = torch.ones(params[h.proj].shape, dtype=torch.bool)
    proj[:, h.cols(gone)] = False
    out[h.proj] = proj
    return out


def filter_masks(model: nn.Module, ratios: dict[str, float], example_inputs: torch.Tensor,
                 scores: dict[str, torch.Tensor] | None = None, previous: dict[str, torch.Tensor] | None = None,
                 groups: list[FilterGroup] | None = None) -> dict[str, torch.Tensor]:
    """Prune whole output filters with the lowest score (L2 norm by default), group by group.

    The mask zeroes the filter, its conv bias and the matching BatchNorm weight and bias, so
    a pruned channel outputs exactly zero and removing it later changes nothing. In a coupled
    group (residual stage, depthwise conv) the filters' scores are summed and one choice made
    for all members. `scores` maps conv weight names to one score per filter.
    """
    params = dict(model.named_parameters())
    groups = groups if groups is not None else filter_groups(model, example_inputs)
    masks: dict[str, torch.Tensor] = {}
    for g in groups:
        weights = [f"{c}.weight" for c in g.convs]
        listed = {w: ratios[w] for w in weights if w in ratios}
        if not listed:
            continue
        # ratios within one channel of each other agree (an allocation's top-up raises one layer by
        # a channel); the group takes the largest. Others are a contradiction the user must resolve
        counts = [pruned_count(r, g.channels) for r in listed.values()]
        if max(counts) - min(counts) > 1:
            raise CompressError(
                f"layers {', '.join(listed)} share their output channels (a residual group) but have different "
                f"ratios {sorted(set(listed.values()))}", "give every layer of the group the same ratio")
        ratio = max(listed.values())
        score = group_score(g, params, scores)
        already = None
        if previous is not None and weights[0] in previous:
            already = ~previous[weights[0]].flatten(1).any(1).cpu()[g.members[weights[0]]]
        keep_root = _keep_channels(score, ratio, already, g.channel_groups)
        for pname, idx in g.members.items():
            p = params[pname]
            keep = torch.ones(p.shape[0], dtype=torch.bool)
            keep[torch.tensor(idx)] = keep_root
            masks[pname] = keep.view(-1, *([1] * (p.ndim - 1))).expand_as(p).clone()
    for h in head_attentions(model).values():
        if h.qkv not in ratios:
            continue
        already = None
        if previous is not None and h.qkv in previous:
            gone = ~previous[h.qkv].flatten(1).any(1).cpu()
            already = torch.tensor([bool(gone[h.rows([i])].all()) for i in range(h.heads)])
        masks.update(head_masks(h, params, _keep_channels(head_score(h, params, scores), ratios[h.qkv], already)))
    return masks


def group_score(group: FilterGroup, params: dict[str, torch.Tensor],
                scores: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """One score per root channel of the group: its filters' scores summed over the group's
    convs (squared L2 norm of each filter when `scores` has none for a conv)."""
    score = torch.zeros(group.channels)
    for w in (f"{c}.weight" for c in group.convs):
        s = scores[w] if scores is not None and w in scores else params[w].detach().flatten(1).pow(2).sum(1)
        score += s.float().cpu()[group.members[w]]
    return score


def _keep_channels(score: torch.Tensor, ratio: float, already: torch.Tensor | None, blocks: int = 1) -> torch.Tensor:
    """Root channels to keep: the lowest-scoring `ratio` share pruned, earlier prunings kept
    pruned. With `blocks` > 1 the same positions go in every block (scores averaged over blocks)."""
    size = score.numel() // blocks
    score = score.view(blocks, size).mean(0)
    if already is not None:
        already = already.view(blocks, size).all(0)
    k = pruned_count(ratio, size)
    if already is not None:
        score[already] = -float("inf")
        k = max(k, int(already.sum()))
    keep = torch.ones(size, dtype=torch.bool)
    keep[torch.argsort(score, stable=True)[:k]] = False
    return keep.repeat(blocks)


def mask_sparsity(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of masked-out entries over all masked parameters."""
    total = sum(m.numel() for m in masks.values())
    return sum(int((~m).sum()) for m in masks.values()) / max(1, total)


def nm_layers(model: nn.Module, m: int = 4) -> list[str]:
    """Conv/linear weights whose input-channel count is a multiple of M (N:M applies to them).

    Left out: a first conv on 3-channel images, and depthwise convs (one input channel per
    filter); they stay dense, as the 2:4 kernels could not take them either.
    """
    return [n for n, w in prunable(model, "unstructured").items() if w.shape[1] % m == 0]


def nm_masks(model: nn.Module, names: list[str], n: int = 2, m: int = 4,
             scores: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """N:M semi-structured masks: in every run of M consecutive input channels, keep the N best.

    For a conv the runs lie along the input-channel axis at each (filter, kh, kw) position,
    which is the GEMM reduction axis of a channels-last convolution; for a linear layer
    along the input features, the layout `torch.sparse.to_sparse_semi_structured` takes.
    """
    if not 0 < n < m:
        raise CompressError(f"N:M needs 0 < N < M (got {n}:{m})", "e.g. --nm 2:4")
    params = dict(model.named_parameters())
    masks = {}
    for name in names:
        w = params[name].detach()
        if w.shape[1] % m:
            raise CompressError(f"{name} has {w.shape[1]} input channels, not a multiple of {m}",
                                "leave that layer out of N:M pruning")
        s = (scores[name] if scores is not None else w.abs()).float().cpu()
        moved = s.movedim(1, -1)  # (..., in)
        groups = moved.reshape(-1, m)
        order = torch.argsort(groups, dim=1, stable=True)
        keep = torch.ones_like(groups, dtype=torch.bool)
        keep.scatter_(1, order[:, : m - n], False)
        masks[name] = keep.view(moved.shape).movedim(-1, 1).contiguous()
    return masks

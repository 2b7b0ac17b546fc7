"""Removing channels (and attention heads) from a module with Torch-Pruning's DependencyGraph:
what `slim` does to a masked model, recorded as the history `rebuild.replay_history` replays;
and what a slim model's MACs, parameters and widths are."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp

from compress.errors import CompressError
from compress.models import ModelSpec
from compress.models.attention import PrunedSelfAttention, head_attentions, pruned_attention_flops, remove_heads
from compress.models.structure import build_graph
from compress.prune.masks import FilterGroup, dead_heads, filter_groups, group_score
from compress.prune.ratios import prunable
from compress.prune.rebuild import HEADS


def dead_channels(model: nn.Module, group: FilterGroup) -> list[int]:
    """Root-channel indices whose output is exactly zero in every member of the group:
    the conv filter (and bias) and the BatchNorm weight and bias are all zero."""
    params = dict(model.named_parameters())
    dead = torch.ones(group.channels, dtype=torch.bool)
    for pname, idx in group.members.items():
        p = params[pname].detach()
        zero = p.flatten(1).abs().sum(1) == 0 if p.ndim > 1 else p == 0
        dead &= zero.cpu()[torch.tensor(idx)]
    if dead.all():  # a layer must keep at least one channel to stay a layer
        dead[0] = False
    return torch.nonzero(dead).flatten().tolist()


def round_down_channels(model: nn.Module, group: FilterGroup, dead: list[int], multiple: int) -> list[int]:
    """More channels to remove so that the kept count is a multiple of `multiple`
    (lowest summed filter L2 norm first). These are live filters: accuracy can change."""
    kept = group.channels - len(dead)
    target = max(multiple, (kept // multiple) * multiple)
    if group.channels <= multiple or kept <= target:
        return dead
    score = group_score(group, dict(model.named_parameters()))
    score[dead] = -float("inf")
    extra = torch.argsort(score, stable=True)[: group.channels - target]
    return sorted(set(dead) | set(extra.tolist()))


def remove_channels(model: nn.Module, example: torch.Tensor, round_to: int = 0,
                    groups: list[FilterGroup] | None = None) -> tuple[nn.Module, list, int]:
    """Slim `model` in place: (model, Torch-Pruning history, live channels removed by rounding).
    `groups`: the model's filter groups when the caller has them (they name parameters, so a
    copy's groups serve)."""
    model.eval()
    dg = build_graph(model, example)  # one trace: the groups and the removal read the same graph
    groups = groups if groups is not None else filter_groups(model, example, dg=dg)
    plan = []
    rounded_extra = 0
    for g in groups:
        dead = dead_channels(model, g)
        if round_to > 1:
            more = round_down_channels(model, g, dead, round_to)
            rounded_extra += len(more) - len(dead)
            dead = more
        if dead:
            plan.append((g.root, dead))
    modules = dict(model.named_modules())
    for root, idxs in plan:
        module = modules[root]
        prune_out = tp.prune_linear_out_channels if isinstance(module, nn.Linear) else tp.prune_conv_out_channels
        group = dg.get_pruning_group(module, prune_out, idxs)
        if not dg.check_pruning_group(group):
            raise CompressError(f"Torch-Pruning refused to remove {len(idxs)} channels of {root}")
        group.prune()
    history = [[str(name), bool(is_out), [int(i) for i in idxs]] for name, is_out, idxs in dg.pruning_history()]
    params = dict(model.named_parameters())
    for h in head_attentions(model).values():
        dead = dead_heads(h, params)
        if dead:
            remove_heads(model, h, dead)
            history.append([h.attn, HEADS, dead])
    return model, history, rounded_extra


tp.utils.op_counter.MODULES_MAPPING.setdefault(PrunedSelfAttention, pruned_attention_flops)


def count_macs_params(model: nn.Module, spec: ModelSpec) -> tuple[int, int]:
    """MACs and parameters per image, with Torch-Pruning's op counter (attention that lost heads
    counted at its narrower width: `models.attention.pruned_attention_flops`)."""
    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, spec.example_input().to(next(model.parameters()).device))
    model.train(was_training)
    return int(macs), int(params)


def conv_widths(model: nn.Module) -> dict[str, int]:
    """Output widths of the layers filter pruning may narrow: every conv, and the linear layers
    it may prune (hidden MLP layers: `ratios.prunable`), by module name."""
    linears = {n[: -len(".weight")] for n, w in prunable(model, "filter").items() if w.ndim == 2}
    return {n: m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for n, m in model.named_modules() if isinstance(m, nn.Conv2d) or (isinstance(m, nn.Linear) and n in linears)}

"""Which layers filter pruning may touch, and why not the others, from Torch-Pruning's graph.

Filter pruning removes output channels (of convs) and output neurons (of linear layers: the
hidden width of an MLP block in a ViT, Swin or ConvNeXt, a classifier's hidden layer), and with
them every channel coupled to them. Some layers must keep all their outputs:
- a conv whose channels reach the logits with no conv or linear layer in between (a conv
  classifier head, or a conv added to it): removing a filter would remove a class;
- a conv whose channels a LayerNorm or GroupNorm normalises together (ConvNeXt, Swin): a zeroed
  channel still shifts the others' mean and variance, so masking would not be removal;
- a layer whose channels pass through a reshape or concatenation Torch-Pruning cannot map
  (ShuffleNet's channel shuffle; concatenations it cannot size in Swin-S/B): the graph is still
  built (`_tolerant_index_mapping`) and only those groups stay whole;
- a layer that Torch-Pruning's dependency graph puts in no prunable group (an operation it
  cannot trace around), or a model the graph cannot be built for at all.
A linear layer whose outputs are a transformer's residual stream is normalised by its LayerNorms,
so it stays whole by the second rule; the MLP's hidden layer between two linears does not, and
the qkv layer of an attention loses whole heads (`models.attention`; its ratio is the share of
heads removed).

`mark_fixed_filters` stores {conv weight name: reason} on the module (`FIXED_ATTR`), so that
`ratios.prunable(model, "filter")` leaves those layers out of ratio files, allocations and the
filter-sparsity denominator; `ModelSpec.build()` marks every model it builds.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning._helpers import to_plain_idxs
from torch_pruning.dependency import index_mapping as _im

from compress.models.attention import head_attentions

FIXED_ATTR = "_compress_fixed_filters"
LAYERS = (nn.Conv2d, nn.Linear)  # what filter pruning narrows: conv filters, linear output neurons
LOGITS = "produces the logits (or feeds them channel for channel): pruning a filter would remove a class"
UNMAPPED = ("its channels pass through a reshape or concatenation Torch-Pruning cannot map to channels (e.g. "
            "ShuffleNet's channel shuffle): removing them could remove the wrong channels downstream")
NORMALISED = ("its channels are normalised together by a LayerNorm or GroupNorm: a zeroed channel still changes "
              "the others' statistics, so the masked model and the slim one would differ")


def fixed_filters(model: nn.Module) -> dict[str, str]:
    """{conv weight name: why filter pruning must leave it whole}, as marked; {} when unmarked."""
    return dict(model.__dict__.get(FIXED_ATTR, {}))


def mark_fixed_filters(model: nn.Module, example_inputs: torch.Tensor) -> dict[str, str]:
    fixed = find_fixed_filters(model, example_inputs)
    model.__dict__[FIXED_ATTR] = fixed  # a plain attribute: not a parameter, buffer or submodule
    return fixed


def _tolerant_index_mapping(graph) -> None:
    """Torch-Pruning's `update_index_mapping`, one node at a time: a node it fails on (a
    ZeroDivisionError on ShuffleNet's 5-D channel-shuffle view, a TypeError summing concatenation
    sizes it could not infer in Swin-S/B) is marked unmapped instead of aborting the whole graph;
    `prunable_groups` skips roots whose group then fails, and `fixed_in_graph` keeps every group
    through an unmapped node whole. Same result as TP's where it succeeds."""
    ops = tp.ops.OPTYPE
    updates = {ops.CONCAT: _im.update_concat_index_mapping, ops.SPLIT: _im.update_split_index_mapping,
               ops.RESHAPE: _im.update_reshape_index_mapping, ops.UNBIND: _im.update_unbind_index_mapping,
               ops.EXPAND: _im.update_expand_index_mapping, ops.SLICE: _im.update_slice_index_mapping}
    for node in graph.module2node.values():
        update = updates.get(node.type)
        if update is None or getattr(node, UNMAPPED_ATTR, False):
            continue
        try:
            update(graph, node)
        except (TypeError, ZeroDivisionError):
            setattr(node, UNMAPPED_ATTR, True)


UNMAPPED_ATTR = "_compress_unmapped"
_im.update_index_mapping = _tolerant_index_mapping  # TP's graph calls it through the module attribute


def build_graph(model: nn.Module, example_inputs: torch.Tensor):
    """Torch-Pruning's DependencyGraph of `model` in eval mode, quietly."""
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.enable_grad():  # TP traces through autograd
            warnings.simplefilter("ignore")
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs.to(device))
    finally:
        model.train(was_training)


def find_fixed_filters(model: nn.Module, example_inputs: torch.Tensor) -> dict[str, str]:
    if not any(isinstance(m, LAYERS) for m in model.modules()):
        return {}
    try:
        dg = build_graph(model, example_inputs)
    except Exception as e:  # noqa: BLE001 - a model TP cannot trace still prunes unstructured
        why = f"Torch-Pruning could not trace the model ({type(e).__name__}: {str(e)[:100]})"
        return {f"{n}.weight": why for n, m in model.named_modules() if isinstance(m, LAYERS)}
    return fixed_in_graph(model, dg)


def _normalises_across(module) -> bool:
    """A norm whose statistics mix the pruned channels (LayerNorm over them; GroupNorm with more
    than one channel per group): masking is then not removal. BatchNorm is per channel."""
    if isinstance(module, nn.LayerNorm):
        return True
    return isinstance(module, nn.GroupNorm) and module.num_groups < module.num_channels


RESIDUAL = ("its outputs are not an MLP's hidden width (they are added to a residual stream, reshaped, or feed "
            "something other than linear layers): only a linear layer whose outputs go straight to other linear "
            "layers (through activations) is narrowed")


def _feeds_only_linears(node) -> bool:
    """Does this linear layer's output reach only other linear layers, through one-input
    element-wise ops (activation, dropout) and the flatten-to-2-D view + matmul that a linear
    layer on a 3-D or 4-D input traces as? That is an MLP's hidden width. Anything else (a
    residual add, a reshape into heads or windows, a norm) stays whole: such groups span the
    residual stream, which LayerNorms normalise anyway, and on Swin their index maps through the
    window reshapes grow without bound (Torch-Pruning ran out of 24 GB on swin_t's last MLP)."""
    def matmul(n) -> bool:
        return n.type == tp.ops.OPTYPE.ELEMENTWISE and type(n.grad_fn).__name__ in ("AddmmBackward0", "MmBackward0")

    stack, seen = list(node.outputs), set()
    while stack:
        nxt = stack.pop()
        if nxt in seen:
            continue
        seen.add(nxt)
        if isinstance(nxt.module, nn.Linear):
            continue
        if nxt.type == tp.ops.OPTYPE.RESHAPE and nxt.outputs and all(matmul(o) for o in nxt.outputs):
            stack.extend(nxt.outputs)
        elif matmul(nxt) and nxt.outputs and all(isinstance(o.module, nn.Linear) for o in nxt.outputs):
            stack.extend(nxt.outputs)
        elif nxt.type == tp.ops.OPTYPE.ELEMENTWISE and len(nxt.inputs) == 1 and nxt.outputs:
            stack.extend(nxt.outputs)
        else:
            return False
    return bool(seen)


def _normalised_next(node) -> bool:
    """Does this conv's output go into a LayerNorm/GroupNorm before any other layer (Swin's and
    ViT's patch embedding, through a permute or flatten)? Then its group is the normalised
    residual stream: whole by rule, and not worth tracing (on swin_v2_t the group's index maps
    through the window reshapes exhausted memory)."""
    stack, seen = list(node.outputs), set()
    while stack:
        nxt = stack.pop()
        if nxt in seen or isinstance(nxt.module, (nn.Conv2d, nn.Linear)):
            continue
        seen.add(nxt)
        if _normalises_across(nxt.module):
            return True
        if nxt.type in (tp.ops.OPTYPE.ELEMENTWISE, tp.ops.OPTYPE.RESHAPE) and len(nxt.inputs) == 1:
            stack.extend(nxt.outputs)
    return False


def prunable_groups(dg, normalised: set | None = None, unmapped: set | None = None):
    """Torch-Pruning's `get_all_groups` over conv layers and MLP-hidden linear layers as roots
    (`_feeds_only_linears`); each group once, as TP yields them. Convs whose output a norm reads
    first are left out and added to `normalised`; roots whose group TP cannot map, or maps
    inconsistently (`consistent`), are left out and their layers added to `unmapped`."""
    visited: set = set()
    normalised = normalised if normalised is not None else set()
    unmapped = unmapped if unmapped is not None else set()
    for module, node in list(dg.module2node.items()):
        if module in visited or not isinstance(module, LAYERS):
            continue
        if isinstance(module, nn.Linear) and not _feeds_only_linears(node):
            continue
        if isinstance(module, nn.Conv2d) and _normalised_next(node):
            normalised.add(module)
            continue
        pruner = dg.get_pruner_of_module(module)
        if pruner is None or pruner.get_out_channels(module) is None:
            continue
        try:
            group = dg.get_pruning_group(module, pruner.prune_out_channels,
                                         list(range(pruner.get_out_channels(module))))
        except (IndexError, TypeError, ZeroDivisionError):  # an index map through an unmapped node
            unmapped.add(module)
            continue
        members = [it.dep.target.module for it in group.items if dg.is_out_channel_pruning_fn(it.dep.handler)]
        visited.update(members)
        if not consistent(group, dg):
            unmapped.update(members)
            continue
        yield group


def consistent(group, dg) -> bool:
    """Does every out-channel member of the group map one channel per root channel, each inside
    the member's own channels? Not where TP's index maps went wrong through a concatenation or
    slice (timm's GhostNet: 160 indices for an 80-channel root; CSPDarkNet: index 128 of a
    128-channel layer); such a group would be cut in the wrong places, so it stays whole."""
    root = group.items[0].dep.target.module
    n = root.out_channels if isinstance(root, nn.Conv2d) else getattr(root, "out_features", None)
    for it in group.items:
        m = it.dep.target.module
        if not dg.is_out_channel_pruning_fn(it.dep.handler) or not isinstance(m, _SIZED):
            continue
        size = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features if isinstance(m, nn.Linear) \
            else m.num_features
        idxs = to_plain_idxs(it.idxs)
        if (n is not None and len(idxs) != n) or (idxs and (max(idxs) >= size or min(idxs) < 0)):
            return False
    return True


_SIZED = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


def fixed_in_graph(model: nn.Module, dg) -> dict[str, str]:
    """`find_fixed_filters` on a dependency graph already built for `model` (one trace per caller)."""
    convs = {m: f"{n}.weight" for n, m in model.named_modules() if isinstance(m, LAYERS)}
    reaches = _reaches_output(dg)
    grouped: set[nn.Module] = set()
    fixed: dict[str, str] = {}
    normalised: set = set()
    unmapped: set = set()
    for group in prunable_groups(dg, normalised, unmapped):
        members = [it.dep.target.module for it in group.items if dg.is_out_channel_pruning_fn(it.dep.handler)]
        group_convs = [m for m in members if m in convs]
        grouped.update(group_convs)
        if any(reaches.get(m, False) for m in members):
            for m in group_convs:
                fixed[convs[m]] = LOGITS
        elif any(_normalises_across(it.dep.target.module) for it in group.items):
            for m in group_convs:
                fixed[convs[m]] = NORMALISED
        elif any(getattr(n, UNMAPPED_ATTR, False) for it in group.items for n in (it.dep.source, it.dep.target)):
            for m in group_convs:
                fixed[convs[m]] = UNMAPPED
    heads = {h.qkv for h in head_attentions(model).values()}  # narrowed head by head (models.attention)
    for m, name in convs.items():
        if name in heads:
            fixed.pop(name, None)
        elif m in normalised and m not in grouped:
            fixed[name] = NORMALISED
        elif m in unmapped and m not in grouped:
            fixed[name] = UNMAPPED
        elif m not in grouped and name not in fixed and isinstance(m, nn.Linear):
            fixed[name] = LOGITS if reaches.get(m, False) else RESIDUAL
        elif m not in grouped and name not in fixed:
            fixed[name] = ("Torch-Pruning's dependency graph has no prunable group for it (not reached by the traced "
                          "eval forward pass, e.g. an auxiliary training head, or an operation it cannot trace)")
    return fixed


def _reaches_output(dg) -> dict[nn.Module, bool]:
    """Per module: do its output channels reach the model's output without passing through
    another conv or linear layer (which would mix channels)?"""
    memo: dict = {}

    def walk(node, stack=()) -> bool:
        if node in memo:
            return memo[node]
        if node in stack:
            return False
        if not node.outputs:
            memo[node] = True
            return True
        found = False
        for nxt in node.outputs:
            if isinstance(nxt.module, (nn.Conv2d, nn.Linear, nn.Conv1d, nn.Conv3d)):
                continue
            if walk(nxt, (*stack, node)):
                found = True
                break
        memo[node] = found
        return found

    return {module: walk(node) for module, node in dg.module2node.items()}


def layer_rows(model: nn.Module, example_inputs: torch.Tensor) -> list[dict]:
    """One row per conv/linear layer: name, shape, share of parameters and of MACs, and
    whether filter pruning can touch it (and why not). The assignment's 'find the layer names'."""
    macs: dict[nn.Module, int] = {}
    heads = head_attentions(model)

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs[module] = output[0].numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.MultiheadAttention) and inputs:  # its packed qkv projection, per token
            macs[module] = module.in_proj_weight.numel() * (inputs[0][0].numel() // inputs[0].shape[-1])
        else:
            macs[module] = module.in_features * module.out_features * (output[0].numel() // module.out_features)

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
              or (n in heads and isinstance(m, nn.MultiheadAttention))]
    handles = [m.register_forward_hook(hook) for _, m in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            model(example_inputs[:1].to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    fixed = fixed_filters(model)
    total_params = sum(p.numel() for p in model.parameters()) or 1
    total_macs = sum(macs.values()) or 1
    rows = []
    qkv = {h.qkv for h in heads.values()}
    for n, m in layers:
        weight = m.in_proj_weight if isinstance(m, nn.MultiheadAttention) else m.weight
        name = heads[n].qkv if n in heads else f"{n}.weight"
        conv = isinstance(m, nn.Conv2d)
        why = fixed.get(name)
        kind = type(m).__name__ + (" (whole heads)" if name in qkv else "")
        rows.append({"name": name, "type": kind, "shape": list(weight.shape),
                     "params": weight.numel(), "param_share": weight.numel() / total_params,
                     "macs": macs.get(m, 0), "mac_share": macs.get(m, 0) / total_macs,
                     "filter": why is None, "why_not": why,
                     "groups": m.groups if conv else 1})
    return rows

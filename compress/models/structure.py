"""Which layers filter pruning may touch, and why not the others, from Torch-Pruning's graph.

Filter pruning removes output channels (of convs) and output neurons (of linear layers: the
hidden width of an MLP block in a ViT, Swin or ConvNeXt, a classifier's hidden layer), and with
them every channel coupled to them. Some layers must keep all their outputs:
- a conv whose channels reach the logits with no conv or linear layer in between (a conv
  classifier head, or a conv added to it): removing a filter would remove a class;
- a conv whose channels a LayerNorm or GroupNorm normalises together (ConvNeXt, Swin): a zeroed
  channel still shifts the others' mean and variance, so masking would not be removal;
- a layer that Torch-Pruning's dependency graph puts in no prunable group (an operation it
  cannot trace around), or a model the graph cannot be built for at all.
A linear layer whose outputs are a transformer's residual stream is normalised by its LayerNorms,
so it stays whole by the second rule; the MLP's hidden layer between two linears does not.

`mark_fixed_filters` stores {conv weight name: reason} on the module (`FIXED_ATTR`), so that
`ratios.prunable(model, "filter")` leaves those layers out of ratio files, allocations and the
filter-sparsity denominator; `ModelSpec.build()` marks every model it builds.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch_pruning as tp

FIXED_ATTR = "_compress_fixed_filters"
LAYERS = (nn.Conv2d, nn.Linear)  # what filter pruning narrows: conv filters, linear output neurons
LOGITS = "produces the logits (or feeds them channel for channel): pruning a filter would remove a class"
NORMALISED = ("its channels are normalised together by a LayerNorm or GroupNorm: a zeroed channel still changes "
              "the others' statistics, so the masked model and the slim one would differ")


def fixed_filters(model: nn.Module) -> dict[str, str]:
    """{conv weight name: why filter pruning must leave it whole}, as marked; {} when unmarked."""
    return dict(model.__dict__.get(FIXED_ATTR, {}))


def mark_fixed_filters(model: nn.Module, example_inputs: torch.Tensor) -> dict[str, str]:
    fixed = find_fixed_filters(model, example_inputs)
    model.__dict__[FIXED_ATTR] = fixed  # a plain attribute: not a parameter, buffer or submodule
    return fixed


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


def fixed_in_graph(model: nn.Module, dg) -> dict[str, str]:
    """`find_fixed_filters` on a dependency graph already built for `model` (one trace per caller)."""
    convs = {m: f"{n}.weight" for n, m in model.named_modules() if isinstance(m, LAYERS)}
    reaches = _reaches_output(dg)
    grouped: set[nn.Module] = set()
    fixed: dict[str, str] = {}
    for group in dg.get_all_groups(root_module_types=list(LAYERS)):
        members = [it.dep.target.module for it in group.items if dg.is_out_channel_pruning_fn(it.dep.handler)]
        group_convs = [m for m in members if m in convs]
        grouped.update(group_convs)
        if any(reaches.get(m, False) for m in members):
            for m in group_convs:
                fixed[convs[m]] = LOGITS
        elif any(_normalises_across(it.dep.target.module) for it in group.items):
            for m in group_convs:
                fixed[convs[m]] = NORMALISED
    for m, name in convs.items():
        if m not in grouped and name not in fixed:
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

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs[module] = output[0].numel() * (module.in_channels // module.groups) * kh * kw
        else:
            macs[module] = module.in_features * module.out_features * (output[0].numel() // module.out_features)

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
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
    for n, m in layers:
        name = f"{n}.weight"
        conv = isinstance(m, nn.Conv2d)
        why = fixed.get(name)
        rows.append({"name": name, "type": type(m).__name__, "shape": list(m.weight.shape),
                     "params": m.weight.numel(), "param_share": m.weight.numel() / total_params,
                     "macs": macs.get(m, 0), "mac_share": macs.get(m, 0) / total_macs,
                     "filter": why is None, "why_not": why,
                     "groups": m.groups if conv else 1})
    return rows

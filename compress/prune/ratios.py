"""Layer-wise pruning ratios: read from YAML and checked against the model, or allocated.

A ratio file maps parameter names to the fraction of that layer to prune:

    prune_ratios:
      features.0.weight: 0.3
      features.3.weight: 0.8

Unstructured pruning ratios are fractions of a layer's weights; filter pruning ratios are
fractions of a conv layer's output filters. Overall sparsity is defined in `sparsity.py`.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import yaml

from compress.errors import CompressError, did_you_mean
from compress.io import atomic_write
from compress.kinds import ALLOCATIONS, Kind
from compress.models.attention import head_attentions
from compress.models.structure import FIXED_ATTR, fixed_filters

KINDS = ("unstructured", "filter", "nm")


def prunable(model: nn.Module, kind: str) -> dict[str, torch.Tensor]:
    """The weights a pruning kind may touch, by parameter name, in model order.

    unstructured / N:M: conv and linear weights (the classifier counts);
    filter: conv weights (output filters), linear weights (output neurons) and attention qkv
    weights (whole heads: `models.attention`), except those that must stay whole (the layer that produces the logits, outputs a LayerNorm normalises, layers
    Torch-Pruning cannot handle: see `structure.py`).
    """
    traced = FIXED_ATTR in model.__dict__  # linear layers only once the graph said which may go
    types = (nn.Conv2d, nn.Linear) if kind != Kind.FILTER or traced else (nn.Conv2d,)
    fixed = fixed_filters(model) if kind == Kind.FILTER else {}
    heads = {h.attn: h.qkv for h in head_attentions(model).values()} if kind == Kind.FILTER and traced else {}
    params = dict(model.named_parameters())
    out = {}
    for mname, m in model.named_modules():
        name = f"{mname}.weight" if mname else "weight"
        if isinstance(m, types) and m.weight is not None and name not in fixed:
            out[name] = m.weight
        elif mname in heads and heads[mname] not in out:  # nn.MultiheadAttention: its packed qkv weight
            out[heads[mname]] = params[heads[mname]]
    return out


def require_prunable(model: nn.Module, kind: str) -> dict[str, torch.Tensor]:
    """`prunable`, or one clear error when the kind can touch no layer of this model (every conv
    fixed, e.g. a channel shuffle Torch-Pruning cannot trace), before any training."""
    params = prunable(model, kind)
    if params:
        return params
    reasons = sorted(set(fixed_filters(model).values())) if kind == Kind.FILTER else []
    why = reasons[0] if len(reasons) == 1 else "; ".join(r[:80] for r in reasons[:2]) or "it has no conv or linear layer"
    raise CompressError(f"no layer of this model can be {kind}-pruned ({why})",
                        "`compress layers --model SOURCE` shows each layer and why; unstructured or nm pruning "
                        "may still apply" if kind == Kind.FILTER else "`compress layers --model SOURCE` shows its layers")


def units(weight: torch.Tensor, kind: str) -> int:
    """What a layer ratio counts: weights (unstructured) or output filters (filter)."""
    return weight.shape[0] if kind == Kind.FILTER else weight.numel()


def pruned_count(ratio: float, n: int) -> int:
    """Units pruned for a layer ratio: rounded, and at least one unit kept."""
    return min(n - 1, int(round(ratio * n)))


# --------------------------------------------------------------------------- YAML
class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _no_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise CompressError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})",
                                "each layer may appear once; remove one of the entries")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def read_ratio_file(path: Path | str, model: nn.Module, kind: str) -> dict[str, float]:
    """Read and check a ratio file against `model`; every problem is one clear error."""
    path = Path(path)
    where = f"ratio file {path}"
    if not path.is_file():
        raise CompressError(f"{where} does not exist", "pass --config with a YAML file (see configs/)")
    try:
        doc = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise CompressError(f"{where} is not valid YAML{line}", "fix the syntax (mapping of 'name: ratio')") from None
    except UnicodeDecodeError:
        raise CompressError(f"{where} is not a text file", "pass a YAML ratio file") from None
    if doc is None:
        raise CompressError(f"{where} is empty", "it needs a 'prune_ratios:' mapping of parameter names to ratios")
    if not isinstance(doc, dict) or "prune_ratios" not in doc:
        raise CompressError(f"{where} has no 'prune_ratios' mapping", "start the file with 'prune_ratios:'")
    extra = [k for k in doc if k != "prune_ratios"]
    if extra:
        raise CompressError(f"{where} has unknown top-level key {extra[0]!r}", "only 'prune_ratios' is allowed")
    table = doc["prune_ratios"]
    if not isinstance(table, dict) or not table:
        raise CompressError(f"{where}: 'prune_ratios' must be a non-empty mapping of parameter name to ratio")
    return check_ratios(table, model, kind, where)


def check_ratios(table: dict, model: nn.Module, kind: str, where: str = "ratios") -> dict[str, float]:
    """Every name must be a prunable parameter of the model, every ratio a number in [0, 1)."""
    params = dict(model.named_parameters())
    allowed = prunable(model, kind)
    ratios: dict[str, float] = {}
    for name, value in table.items():
        name = str(name)
        if name not in params:
            raise CompressError(f"{where}: {name!r} is not a parameter of the model", did_you_mean(name, allowed))
        if kind == Kind.FILTER and name in fixed_filters(model):
            raise CompressError(f"{where}: {name!r} cannot be filter-pruned: {fixed_filters(model)[name]}",
                                "remove it from the ratio file (`compress layers` lists what can be pruned)")
        if name not in allowed:
            what = ("conv weights (4-D) and hidden linear layers" if kind == Kind.FILTER
                    else "conv and linear weights")
            shape = tuple(params[name].shape)
            raise CompressError(f"{where}: {name!r} (shape {shape}) cannot be {kind}-pruned",
                                f"{kind} pruning applies to {what}; did you mean {did_you_mean(name, allowed)[13:-1] or 'a conv weight'}?")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CompressError(f"{where}: the ratio of {name!r} is {value!r}, not a number", "use a number in [0, 1), e.g. 0.8")
        if not 0 <= value < 1:
            raise CompressError(f"{where}: the ratio of {name!r} is {value}, outside [0, 1)",
                                "a ratio is the fraction pruned: 0 keeps the layer whole, 0.9 prunes 90%")
        ratios[name] = float(value)
    return ratios


def write_ratio_file(path: Path, ratios: dict[str, float], header: str = "") -> Path:
    body = "".join(f"# {line}\n" for line in header.splitlines()) + yaml.safe_dump(
        {"prune_ratios": {k: round(v, 4) for k, v in ratios.items()}}, sort_keys=False)
    return atomic_write(path, lambda tmp: tmp.write_text(body))


# --------------------------------------------------------------------------- overall
def planned_sparsity(model: nn.Module, kind: str, ratios: dict[str, float]) -> float:
    """Overall sparsity the ratios produce, under the definition of `kind` (see sparsity.py)."""
    params = require_prunable(model, kind)
    total = sum(units(w, kind) for w in params.values())
    pruned = sum(pruned_count(r, units(params[n], kind)) for n, r in ratios.items())
    return pruned / total


def allocate(model: nn.Module, kind: str, target: float, method: str = "uniform",
             scores: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Layer ratios that reach `target` overall sparsity (at least; within one unit per layer).

    uniform: the same ratio for every prunable layer.
    global:  rank all units of all layers together by score (|w| for unstructured, filter L2
             norm relative to the layer's mean for filter) and prune the lowest `target` share;
             each layer keeps at least 2% of its units so no layer collapses.
    """
    if not 0 <= target < 1:
        raise CompressError(f"target sparsity {target} is outside [0, 1)", "e.g. --ratio 0.8")
    params = require_prunable(model, kind)
    if method == "uniform":
        ratios = {n: target for n in params}
    elif method == "global":
        ratios = _global_ratios(params, kind, target, scores)
    else:
        raise CompressError(f"unknown allocation {method!r}", f"choose one of: {', '.join(ALLOCATIONS)}")
    return _top_up(params, kind, ratios, target)


def top_up(model: nn.Module, kind: str, ratios: dict[str, float], target: float) -> dict[str, float]:
    """Raise layer ratios (largest layers first) until the overall target is reached."""
    return _top_up(prunable(model, kind), kind, ratios, target)


def _global_ratios(params, kind, target, scores) -> dict[str, float]:
    per_layer = []
    for n, w in params.items():
        s = (scores or {}).get(n)
        if s is None:
            s = w.detach().abs() if kind != Kind.FILTER else w.detach().flatten(1).norm(dim=1)
        s = s.flatten().float()
        if kind == Kind.FILTER:
            s = s / s.mean().clamp_min(1e-12)  # filter norms are only comparable within a layer
        per_layer.append((n, s))
    allv = torch.cat([s for _, s in per_layer])
    k = int(round(target * allv.numel()))
    if k == 0:
        return {n: 0.0 for n in params}
    threshold = torch.kthvalue(allv, k).values
    cap = 0.98
    return {n: min(cap, (s <= threshold).float().mean().item()) for n, s in per_layer}


def _top_up(params, kind, ratios, target) -> dict[str, float]:
    """Nudge ratios up, one unit per layer per pass, largest layers first, until the rounded
    counts reach the target. One unit at a time: layers that share their channels (a residual
    group) then never differ by more than one channel, which filter masks accept as agreeing."""
    total = sum(units(w, kind) for w in params.values())
    need = math.ceil(target * total - 1e-9)
    ratios = dict(ratios)
    order = sorted(params, key=lambda n: -units(params[n], kind))
    short = need - sum(pruned_count(ratios.get(n, 0.0), units(params[n], kind)) for n in params)
    while short > 0:
        moved = False
        for n in order:
            u = units(params[n], kind)
            have = pruned_count(ratios.get(n, 0.0), u)
            if have < u - max(1, u // 50):
                ratios[n] = (have + 1) / u
                short -= 1
                moved = True
            if short <= 0:
                break
        if not moved:
            raise CompressError(f"target {target} cannot be reached while every layer keeps a few units",
                                "choose a lower --ratio")
    return ratios


def round_to_multiple(model: nn.Module, ratios: dict[str, float], multiple: int, target: float = 0.0) -> dict[str, float]:
    """Filter ratios whose kept filter counts are multiples of `multiple` (hardware-friendly widths).

    Each layer's kept count is rounded to the nearest multiple (at least one multiple); then,
    while overall filter sparsity is below `target`, the widest layers give up one more
    multiple. Layers with equal width and ratio move together, so residual groups stay agreed.
    """
    if multiple <= 1:
        return dict(ratios)
    params = prunable(model, "filter")
    kept = {}
    for n, r in ratios.items():
        c = params[n].shape[0]
        k = c - pruned_count(r, c)
        kept[n] = k if c <= multiple else min(c, max(multiple, int(round(k / multiple)) * multiple))
    total = sum(w.shape[0] for w in params.values())

    def sparsity():
        return sum(params[n].shape[0] - k for n, k in kept.items()) / total

    while sparsity() < target - 1e-9:
        shrinkable = [n for n in kept if kept[n] - multiple >= multiple]
        if not shrinkable:
            raise CompressError(f"widths rounded to {multiple} cannot reach {target} filter sparsity",
                                "use a smaller --round-to or a lower --ratio")
        widest = max(shrinkable, key=lambda n: (kept[n], params[n].shape[0]))
        key = (kept[widest], ratios[widest], params[widest].shape[0])
        for n in shrinkable:
            if (kept[n], ratios[n], params[n].shape[0]) == key:
                kept[n] -= multiple
    return {n: (params[n].shape[0] - k) / params[n].shape[0] for n, k in kept.items()}

"""Pruning criteria: how important each weight (or filter) is. Lower scores are pruned first.

magnitude  |w| per weight, ||w_f||² per filter (the default; needs nothing but the weights).
taylor     first-order Taylor estimate of the loss change when a weight is removed
           (Molchanov et al. 2019): |g·w| per weight, (Σ_f g·w)² per filter, averaged over a
           few training batches.
synflow    Iterative Synaptic Flow (Tanaka et al. 2020): data-free; the model is linearised
           (|w|, all-ones input) and |∂R/∂w · w| is recomputed over many small pruning
           steps, so no layer is cut off entirely.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import Dataset, Loader
from .errors import CompressError, did_you_mean

CRITERIA = ("magnitude", "taylor", "synflow")


def scores_for(criterion: str, kind: str, model: nn.Module, ratios: dict[str, float], data: Dataset | None,
               example: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """Scores for the layers in `ratios`: per weight (unstructured, N:M) or per filter (filter).

    None means magnitude, which the mask functions compute themselves.
    """
    if criterion == "magnitude":
        return None
    if criterion == "taylor":
        if data is None:
            raise CompressError("the taylor criterion needs training data")
        return taylor_scores(model, list(ratios), data, per_filter=kind == "filter")
    if criterion == "synflow":
        return synflow_scores(model, ratios, example, per_filter=kind == "filter")
    raise CompressError(f"unknown criterion {criterion!r}", did_you_mean(criterion, CRITERIA))


def taylor_scores(model: nn.Module, names: list[str], data: Dataset, batches: int = 8, batch_size: int = 64,
                  per_filter: bool = False) -> dict[str, torch.Tensor]:
    """Accumulate first-order Taylor importance over `batches` training batches (eval-mode BN)."""
    params = dict(model.named_parameters())
    device = next(model.parameters()).device
    acc = {n: torch.zeros(params[n].shape[0] if per_filter else params[n].shape, device=device) for n in names}
    was_training = model.training
    model.eval()
    loader = Loader(data.train_x, data.train_y, batch_size, mean=data.mean, std=data.std, shuffle=True,
                    generator=torch.Generator().manual_seed(0))
    for i, (xb, yb) in enumerate(loader):
        if i == batches:
            break
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb.to(device)), yb.to(device)).backward()
        with torch.no_grad():
            for n in names:
                gw = params[n].grad * params[n]
                acc[n] += gw.flatten(1).sum(1).pow(2) if per_filter else gw.abs()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: (a / batches).cpu() for n, a in acc.items()}


def synflow_scores(model: nn.Module, ratios: dict[str, float], example: torch.Tensor, iterations: int = 100,
                   per_filter: bool = False) -> dict[str, torch.Tensor]:
    """Iterative SynFlow on a linearised copy; already-pruned (zero) weights score -1."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    params = dict(net.named_parameters())
    names = list(ratios)
    keep = {n: params[n].detach() != 0 for n in names}
    ones = torch.ones_like(example, dtype=torch.float64)
    scores: dict[str, torch.Tensor] = {}
    for it in range(1, iterations + 1):
        net.zero_grad(set_to_none=True)
        with torch.no_grad():
            for n in names:
                params[n].mul_(keep[n])
        net(ones).sum().backward()
        scores = {}
        for n in names:
            s = (params[n].grad * params[n]).detach().abs()
            s[~keep[n]] = -1.0
            scores[n] = s
        # prune to an exponentially growing share of each layer's final ratio (the paper's schedule)
        for n in names:
            target = 1 - (1 - ratios[n]) ** (it / iterations)
            s = scores[n].flatten(1).sum(1) if per_filter else scores[n].flatten()
            k = int(round(target * s.numel()))
            pruned = torch.zeros(s.numel(), dtype=torch.bool, device=s.device)
            pruned[torch.argsort(s, stable=True)[:k]] = True
            if per_filter:
                keep[n] = keep[n] & ~pruned.view(-1, *([1] * (keep[n].ndim - 1)))
            else:
                keep[n] = keep[n] & ~pruned.view_as(keep[n])
    out = {}
    for n in names:
        s = scores[n].float().cpu()
        out[n] = s.flatten(1).sum(1) if per_filter else s
    return out

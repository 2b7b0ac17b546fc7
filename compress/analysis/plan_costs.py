"""What narrowing a filter group costs, per width: its filters' criterion scores, or the training
loss measured with the group narrowed (on 512 training images, cached per model and data)."""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from compress.analysis.latency_table import cache_folder, candidate_widths
from compress.analysis.sensitivity import interpolate
from compress.console import progress
from compress.data import Dataset
from compress.io import atomic_write
from compress.kinds import PLAN_COSTS
from compress.models import ModelSpec
from compress.prune.masks import FilterGroup, apply_masks, filter_masks, group_score
from compress.prune.width_search import GroupCurve
from compress.train import evaluate

# --------------------------------------------------------------------------- importance
COSTS = PLAN_COSTS
LOSS_IMAGES = 512  # training images the loss cost is measured on (never test images)


def score_costs(model: nn.Module, groups: list[FilterGroup], scores) -> dict[str, Callable[[int], float]]:
    """Per group, width -> importance removed: the sum of the cut filters' scores, normalised by
    the group's mean (filter scores compare within a layer, not across layers): how many
    "average filters" of the group are removed."""
    params = dict(model.named_parameters())
    costs = {}
    for g in groups:
        s = group_score(g, params, scores)
        s = torch.sort(s / s.mean().clamp_min(1e-12)).values
        cum = [0.0] + torch.cumsum(s.double(), 0).tolist()
        costs[g.root] = lambda w, cum=cum, c=g.channels: cum[c - w]
    return costs


def loss_costs(model: nn.Module, spec: ModelSpec, groups: list[FilterGroup], scores, data: Dataset,
               widths: dict[str, list[int]], criterion: str = "magnitude",
               show: bool = True) -> dict[str, Callable[[int], float]]:
    """Per group, width -> increase of the cross-entropy loss on LOSS_IMAGES training images
    when that group alone is cut to the width (one-shot, the criterion's lowest filters),
    measured at `widths` and interpolated between them (0 at full width, never smaller for a
    narrower width). A one-layer-at-a-time sensitivity scan (Li et al. 2017, section 4.2).
    Cached beside the latency tables, keyed by the weights, data, criterion and widths."""
    path = _loss_cache_file(model, data, criterion, widths)
    curves = _read_curves(path)
    if curves is None:
        curves = _measure_loss_curves(model, spec, groups, scores, data, widths, show)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(curves)))
    return {root: (lambda w, xs=xs, ys=ys: interpolate(xs, ys, w)) for root, (xs, ys) in curves.items()}


def _loss_cache_file(model: nn.Module, data: Dataset, criterion: str, widths: dict[str, list[int]]) -> Path:
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    key = json.dumps({"weights": digest.hexdigest(), "data": data.fingerprint, "criterion": criterion,
                      "widths": widths, "images": LOSS_IMAGES}, sort_keys=True)
    return cache_folder() / f"loss_cost_{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"


def _read_curves(path: Path) -> dict | None:
    try:
        return {root: (list(xs), list(ys)) for root, (xs, ys) in json.loads(path.read_text()).items()}
    except (OSError, ValueError, TypeError):
        return None  # absent or damaged: measure again


def _measure_loss_curves(model, spec, groups, scores, data, widths, show) -> dict[str, tuple[list, list]]:
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(data.train_x.shape[0], generator=gen)[:LOSS_IMAGES].to(data.train_x.device)
    subset = replace(data, train_x=data.train_x[idx].cpu(), train_y=data.train_y[idx].cpu())

    def loss(net: nn.Module) -> float:
        return evaluate(net, subset, "cpu", batch_size=256, split="train")[1]

    base = loss(model)
    example = spec.example_input()
    curves = {}
    with progress(transient=True, show=show) as bar:
        task = bar.add_task("loss cost", total=sum(len(w) for w in widths.values()), status="")
        for g in groups:
            if g.root not in widths:
                continue
            xs, ys = [g.channels], [0.0]
            for w in sorted(widths[g.root], reverse=True):
                bar.update(task, status=f"{g.root} at {w}/{g.channels}")
                masked = copy.deepcopy(model)
                ratios = {f"{c}.weight": (g.channels - w) / g.channels for c in g.convs}
                apply_masks(masked, filter_masks(masked, ratios, example, scores=scores, groups=groups))
                xs.append(w)
                ys.append(max(ys[-1], loss(masked) - base))  # cutting more never helps (noise aside)
                bar.advance(task)
            curves[g.root] = (xs[::-1], ys[::-1])
    return curves


def curves_for(latency, groups: list[FilterGroup], costs: dict[str, Callable[[int], float]],
               round_to: int) -> list[GroupCurve]:
    """Each narrowable group's candidate widths with the latency model's saving (that group
    alone cut) and the cost of each width."""
    curves = []
    for g in groups:
        if g.root not in latency.channels:
            continue
        widths = candidate_widths(g, round_to)
        curves.append(GroupCurve(g.root, [f"{c}.weight" for c in g.convs], g.channels, widths,
                                 [latency.saving_ms({g.root: w}) for w in widths], [costs[g.root](w) for w in widths]))
    return curves

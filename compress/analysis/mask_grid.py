"""Masks at any sparsity from scores computed once: one-shot criteria (magnitude, Taylor) and
SynFlow's iterative path, so a sweep's hundred points cost one scoring each."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from compress.data import Dataset
from compress.kinds import Kind
from compress.prune.criteria import get_criterion, linearise
from compress.prune.masks import apply_masks, filter_groups, filter_masks, unstructured_masks
from compress.prune.ratios import allocate, prunable, pruned_count

SYNFLOW_ITERATIONS = 100  # score-and-prune steps up to the highest target (the paper's default)


# --------------------------------------------------------------------------- masks at any sparsity
class OneShot:
    """Masks for a rising list of overall targets from one trained model.

    Magnitude and Taylor scores do not depend on the target: they are computed once, each
    layer is sorted once, and a point's mask is "all but the k lowest" (equal to
    `unstructured_masks` / `filter_masks` with the same ratios and scores). SynFlow's
    iterative scores do depend on it: one iterative pass runs up to the highest target and
    hands out the mask at each target on the way (see `SynflowPath`).

    Layer ratios come from `allocate` on a frozen copy of the original weights: uniform, or
    one global ranking by the criterion's own scores (SynFlow: its log scores for
    unstructured; magnitude for filter, as filter scores are normalised per layer).
    """

    def __init__(self, model: nn.Module, kind: str, criterion: str, allocation: str, data: Dataset,
                 example: torch.Tensor, groups=None):
        self.kind, self.criterion, self.allocation = kind, get_criterion(criterion), allocation
        self.reference = copy.deepcopy(model).eval()  # the original weights, whatever happens to `model`
        self.data, self.example = data, example
        self.params = prunable(self.reference, kind)
        self.groups = groups if kind != Kind.FILTER or groups is not None else filter_groups(self.reference, example)
        self.scores = None
        if not self.criterion.iterative:  # target-independent: scored once (magnitude: None, the masks' own |w|)
            self.scores = self.criterion.scores(self.reference, kind, {n: 0.5 for n in self.params}, data, example)
        self.order = {}
        if kind == Kind.UNSTRUCTURED and not self.criterion.iterative:
            for n, w in self.params.items():
                s = (self.scores[n] if self.scores is not None else w.detach().abs()).flatten().float().cpu()
                self.order[n] = torch.argsort(s, stable=True)

    def ratios(self, target: float, scores: dict | None = None) -> dict[str, float]:
        if self.allocation != "global":
            return allocate(self.reference, self.kind, target, "uniform")
        if self.criterion.iterative and self.kind == Kind.FILTER:
            scores = None
        return allocate(self.reference, self.kind, target, "global", scores=scores if scores is not None else self.scores)

    def masks(self, ratios: dict[str, float]) -> dict[str, torch.Tensor]:
        if self.kind == Kind.FILTER:
            return filter_masks(self.reference, ratios, self.example, self.scores, groups=self.groups)
        masks = {}
        for n, r in ratios.items():
            w = self.params[n]
            keep = torch.ones(w.numel(), dtype=torch.bool)
            keep[self.order[n][: pruned_count(r, w.numel())]] = False
            masks[n] = keep.view_as(w)
        return masks

    def along(self, targets: list[float]):
        """(target, masks) for each target, in rising order."""
        if self.criterion.iterative:
            yield from SynflowPath(self.reference, self.kind, self.ratios, targets, self.example, self.groups,
                                   iterations=SYNFLOW_ITERATIONS)
            return
        for t in targets:
            yield t, self.masks(self.ratios(t))


class SynflowPath:
    """One iterative SynFlow pass (Tanaka et al. 2020) that yields the mask at each target.

    Running SynFlow's 100 score-and-prune steps separately for each of 91 sweep points
    would cost hours for VGG13 on a CPU. Instead the exponential schedule runs once up to
    the highest target, with each target inserted as an extra step; masks only grow, as in
    IMP, so each point is the mask iterative SynFlow had reached at that sparsity.
    `ratio_fn(s, log_scores)` gives the layer ratios at overall sparsity s.
    """

    def __init__(self, model: nn.Module, kind: str, ratio_fn, targets: list[float], example: torch.Tensor,
                 groups=None, iterations: int = 100):


        self.model, self.kind, self.ratio_fn, self.example, self.groups = model, kind, ratio_fn, example, groups
        self.targets = sorted(targets)
        top = self.targets[-1]
        steps = {round(1 - (1 - top) ** (i / iterations), 9) for i in range(1, iterations + 1)}
        self.schedule = sorted(steps | set(self.targets))
        self.net = linearise(model)

    def __iter__(self):
        params = dict(self.net.named_parameters())
        names = list(prunable(self.net, self.kind))
        ones = torch.ones((1, *self.example.shape[1:]), dtype=torch.float64, device=self.example.device)
        masks = None
        wanted = set(self.targets)
        for s in self.schedule:
            self.net.zero_grad(set_to_none=True)
            self.net(ones).sum().backward()
            with torch.no_grad():
                sal = {n: (params[n].grad * params[n]).abs() for n in names}
                if self.kind == Kind.FILTER:
                    scores = {n: v.flatten(1).sum(1).float().cpu() for n, v in sal.items()}
                else:  # log: products of |w| over many layers overflow float32's range
                    scores = {n: v.clamp_min(1e-300).log().float().cpu() for n, v in sal.items()}
            ratios = self.ratio_fn(s, scores)
            if self.kind == Kind.FILTER:
                masks = filter_masks(self.model, ratios, self.example, scores, previous=masks, groups=self.groups)
            else:
                masks = unstructured_masks(self.model, ratios, scores, previous=masks)
            apply_masks(self.net, masks)  # pruned weights (and channels, BN included) carry no flow
            if s in wanted:
                yield s, masks

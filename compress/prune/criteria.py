"""Pruning criteria: how important each weight (or filter) is. Lower scores are pruned first.

magnitude  |w| per weight, ||w_f||² per filter (the default; needs nothing but the weights).
taylor     first-order Taylor estimate of the loss change when a weight is removed
           (Molchanov et al. 2019): |g·w| per weight, (Σ_f g·w)² per filter, averaged over a
           few training batches.
synflow    Iterative Synaptic Flow (Tanaka et al. 2020): data-free; the model is linearised
           (|w|, all-ones input) and |∂R/∂w · w| is recomputed over many small pruning
           steps (exponential schedule), so with a global ranking no layer is cut off.

Scores are dicts {conv/linear weight name: tensor}: the weight's shape (unstructured, N:M)
or one value per output filter (filter). The mask functions in `compress.prune.masks` turn them
into masks with the layer ratios; `None` means magnitude, which they compute themselves. Each
criterion is a `Criterion` object, found by name in the `CRITERIA` registry (`get_criterion`).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from compress import kinds
from compress.data import Dataset, Loader
from compress.errors import CompressError, did_you_mean
from compress.kinds import Kind
from compress.prune.masks import filter_groups
from compress.prune.ratios import allocate, prunable, pruned_count, top_up

# Activations that are not the identity on positive inputs: replaced by it in the linearised net.
SATURATING = (nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Tanh)


class Criterion:
    """How important each weight or filter is (as Torch-Pruning's importance objects): `scores`
    for the layers in `ratios`, per weight (unstructured, N:M) or per output filter (filter).

    needs_data: it reads training images (a command must load them).
    iterative:  its scores depend on how much is pruned (SynFlow), so a path over many targets
                re-scores as it goes instead of cutting every target from one ranking.
    """

    name = ""
    needs_data = False
    iterative = False

    def scores(self, model: nn.Module, kind: str, ratios: dict[str, float], data: Dataset | None,
               example: torch.Tensor) -> dict[str, torch.Tensor] | None:
        raise NotImplementedError

    def global_ratios(self, model: nn.Module, kind: str, target: float, data: Dataset | None,
                      example: torch.Tensor) -> dict[str, float]:
        """Layer ratios from ranking every unit of every layer together by this criterion."""
        names = {n: target for n in prunable(model, kind)}
        return allocate(model, kind, target, "global", scores=self.scores(model, kind, names, data, example))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Magnitude(Criterion):
    """|w| per weight, ||w_f||² per filter: `None` scores, which the mask functions compute themselves."""

    name = "magnitude"

    def scores(self, model, kind, ratios, data, example):
        return None


class Taylor(Criterion):
    """First-order Taylor importance over a few training batches (see `taylor_scores`)."""

    name = "taylor"
    needs_data = True

    def scores(self, model, kind, ratios, data, example):
        if data is None:
            raise CompressError("the taylor criterion needs training data", "pass --data, or use --criterion synflow")
        return taylor_scores(model, list(ratios), data, per_filter=kind == Kind.FILTER)


class SynFlow(Criterion):
    """Iterative SynFlow, data-free (see `synflow_scores`); for unstructured global ratios, the
    paper's own global scope (`synflow_ratios`)."""

    name = "synflow"
    iterative = True

    def scores(self, model, kind, ratios, data, example):
        return synflow_scores(model, ratios, example, per_filter=kind == Kind.FILTER)

    def global_ratios(self, model, kind, target, data, example):
        if kind == Kind.UNSTRUCTURED:
            return top_up(model, "unstructured", synflow_ratios(model, target, example)[0], target)
        return super().global_ratios(model, kind, target, data, example)


CRITERIA: dict[str, Criterion] = {c.name: c for c in (Magnitude(), Taylor(), SynFlow())}
assert tuple(CRITERIA) == kinds.CRITERIA, "compress.kinds.CRITERIA names the registry's criteria"


def get_criterion(name: str | Criterion) -> Criterion:
    """The registered criterion of that name (a Criterion passes through)."""
    if isinstance(name, Criterion):
        return name
    if name not in CRITERIA:
        raise CompressError(f"unknown criterion {name!r}", did_you_mean(name, CRITERIA))
    return CRITERIA[name]


# --------------------------------------------------------------------------- Taylor
def taylor_scores(model: nn.Module, names: list[str], data: Dataset, batches: int = 8, batch_size: int = 64,
                  per_filter: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """First-order Taylor importance, averaged over `batches` training batches.

    Per weight |g·w| (the loss change, to first order, of setting w to 0); per filter
    (Σ_f g·w)², the squared first-order change of removing the whole filter (Molchanov et
    al. 2019, eq. 8), squared per batch before averaging so that opposite signs in different
    batches do not cancel. The model runs in eval mode: BatchNorm uses (and keeps) its
    running statistics and dropout is off, so the scores are about the deployed function.
    Weights that are already zero score 0.
    """
    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise CompressError(f"no parameter {unknown[0]!r} in the model", did_you_mean(unknown[0], params))
    device = next(model.parameters()).device
    acc = {n: torch.zeros(params[n].shape[0] if per_filter else params[n].shape, device=device,
                          dtype=torch.float64) for n in names}
    was_training = model.training
    model.eval()
    loader = Loader(data.train_x, data.train_y, min(batch_size, data.train_x.shape[0]), mean=data.mean,
                    std=data.std, shuffle=True, generator=torch.Generator().manual_seed(seed))
    used = 0
    for xb, yb in loader:
        if used == batches:
            break
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb.to(device)), yb.to(device)).backward()
        with torch.no_grad():
            for n in names:
                gw = (params[n].grad * params[n]).double()
                acc[n] += gw.flatten(1).sum(1).square() if per_filter else gw.abs()
        used += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {n: (a / max(1, used)).float().cpu() for n, a in acc.items()}


# --------------------------------------------------------------------------- SynFlow
def synflow_scores(model: nn.Module, ratios: dict[str, float], example: torch.Tensor, iterations: int = 100,
                   per_filter: bool = False) -> dict[str, torch.Tensor]:
    """Iterative SynFlow with each layer pruned to its own ratio (the toolchain's layer ratios).

    Returns log synaptic saliency (float32 cannot hold the raw products of |w| of a deep
    net): weights or filters that SynFlow pruned, or that were already zero, score -inf, so
    the mask functions, which prune the same counts, select exactly SynFlow's choice.
    """
    return _synflow(model, ratios, example, iterations, per_filter, scope="layer")[0]


def synflow_ratios(model: nn.Module, target: float, example: torch.Tensor, iterations: int = 100,
                   names: list[str] | None = None) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Global-scope iterative SynFlow (the paper's setting) for unstructured pruning.

    All weights of all conv/linear layers are ranked together at every step, so the layer
    ratios come out of SynFlow itself; it keeps every layer alive where a global magnitude
    ranking can remove a whole layer (layer collapse). Returns (layer ratios, log scores).
    """
    names = names or list(prunable(model, "unstructured"))
    scores, keep = _synflow(model, {n: target for n in names}, example, iterations, False, scope="global")
    ratios = {n: 1 - keep[n].float().mean().item() for n in names}
    return ratios, scores


@torch.no_grad()
def linearise(model: nn.Module) -> nn.Module:
    """A float64 copy in eval mode with every parameter replaced by its absolute value.

    As in the paper's code, which runs BatchNorm in eval mode with abs() over the whole
    state_dict: there (at initialisation) the running mean is 0 and BatchNorm is the positive
    affine map |γ|·x/sqrt(var+eps) + |β|. A trained model's running mean is not 0, and
    subtracting it could make linearised activations negative, so that ReLUs would cut flow
    and break the conservation SynFlow relies on; we zero it to keep that positive map.
    """
    net = copy.deepcopy(model).double().eval()
    for t in net.state_dict().values():
        if t.is_floating_point():
            t.abs_()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.zero_()
    # Activations must be the identity on the (positive) linearised activations; ReLU is, but
    # a saturating one (MobileNetV2's ReLU6) would clamp them at 6 and stop all gradient flow.
    for parent in list(net.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, SATURATING):
                setattr(parent, child_name, nn.Identity())
    return net


def _synflow(model: nn.Module, ratios: dict[str, float], example: torch.Tensor, iterations: int,
             per_filter: bool, scope: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The pruning loop: score, prune to the step's share, repeat; (log scores, keep masks per unit)."""
    if iterations < 1:
        raise CompressError(f"SynFlow needs at least one iteration (got {iterations})")
    names = list(ratios)
    units = _filter_units(model, ratios, example) if per_filter else [_WeightUnits(n, ratios[n]) for n in names]
    net = linearise(model)
    params = dict(net.named_parameters())
    keep = {u.key: u.alive(params) for u in units}  # already-zero weights / filters stay pruned
    ones = torch.ones((1, *example.shape[1:]), dtype=torch.float64, device=example.device)
    for it in range(1, iterations + 1):
        for u in units:
            u.zero_pruned(params, keep[u.key])
        net.zero_grad(set_to_none=True)
        net(ones).sum().backward()
        saliency = {u.key: u.saliency(params) for u in units}
        share = it / iterations  # kept fraction (1 - r)^(t/T): the paper's exponential schedule
        if scope == "global":
            total = sum(s.numel() for s in saliency.values())
            k = int(round((1 - (1 - ratios[names[0]]) ** share) * total))
            flat = torch.cat([torch.where(keep[key], saliency[key], -math.inf).flatten() for key in saliency])
            pruned = torch.zeros(total, dtype=torch.bool, device=flat.device)
            pruned[torch.argsort(flat, stable=True)[:k]] = True
            offset = 0
            for key, s in saliency.items():
                keep[key] = keep[key] & ~pruned[offset:offset + s.numel()].view_as(s)
                offset += s.numel()
        else:
            for u in units:
                s = torch.where(keep[u.key], saliency[u.key], -math.inf).flatten()
                k = pruned_count(1 - (1 - u.ratio) ** share, s.numel())
                pruned = torch.zeros_like(s, dtype=torch.bool)
                pruned[torch.argsort(s, stable=True)[:k]] = True
                keep[u.key] = keep[u.key] & ~pruned.view_as(keep[u.key])
    scores: dict[str, torch.Tensor] = {}
    for u in units:
        log = saliency[u.key].clamp_min(1e-300).log()  # live but flow-less units stay above pruned ones
        scores.update(u.to_scores(torch.where(keep[u.key], log, -math.inf).float().cpu()))
    return scores, {u.key: keep[u.key].cpu() for u in units}


class _WeightUnits:
    """One conv/linear weight, pruned weight by weight."""

    def __init__(self, name: str, ratio: float):
        self.key, self.ratio = name, ratio

    def alive(self, params):
        return params[self.key].detach() != 0

    def zero_pruned(self, params, keep):
        params[self.key].detach().mul_(keep)

    def saliency(self, params):
        p = params[self.key]
        return (p.grad * p).detach().abs()

    def to_scores(self, s):
        return {self.key: s}


class _FilterUnits:
    """The output channels of a coupled filter group (a conv and its BatchNorm; in a residual
    stage, every conv reaching the same add), pruned channel by channel. Removing a channel
    zeroes every member, BatchNorm included, so a pruned channel carries no flow at all, as
    in the masked model (the paper's code leaves BatchNorm unmasked: its β would keep
    feeding the next layer)."""

    def __init__(self, group, ratio: float, out_channels: dict[str, int]):
        self.group, self.ratio, self.key = group, ratio, group.root
        self.index = {p: torch.tensor(i) for p, i in group.members.items()}
        self.convs = [f"{c}.weight" for c in group.convs]
        self.out_channels = {w: out_channels[w] for w in self.convs}

    def alive(self, params):
        live = torch.zeros(self.group.channels, dtype=torch.bool, device=params[self.convs[0]].device)
        for w in self.convs:
            p = params[w].detach()
            live |= (p.flatten(1).abs().sum(1) != 0)[self.index[w].to(p.device)]
        return live

    def zero_pruned(self, params, keep):
        for pname, idx in self.index.items():
            p = params[pname].detach()
            p[idx.to(p.device)[~keep]] = 0

    def saliency(self, params):
        """A filter's synaptic saliency: the summed |∂R/∂w · w| of its incoming weights (by
        conservation, the flow through the channel), summed over the group's convs."""
        total = None
        for w in self.convs:
            p = params[w]
            s = (p.grad * p).detach().abs().flatten(1).sum(1)[self.index[w].to(p.device)]
            total = s if total is None else total + s
        return total

    def to_scores(self, s):
        """Per-conv filter scores for `filter_masks`, which sums its group's members: the root
        conv carries the group score, the others 0 (log scores must not be summed)."""
        out = {}
        for i, w in enumerate(self.convs):
            own = torch.zeros(self.out_channels[w])
            if i == 0:
                own[self.index[w]] = s
            out[w] = own
        return out


def _filter_units(model, ratios, example):
    out_channels = {n: p.shape[0] for n, p in model.named_parameters()}
    units = []
    for g in filter_groups(model, example):
        listed = [ratios[f"{c}.weight"] for c in g.convs if f"{c}.weight" in ratios]
        if listed:
            units.append(_FilterUnits(g, max(listed), out_channels))
    return units

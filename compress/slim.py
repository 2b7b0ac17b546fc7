"""Physical removal of pruned filters with Torch-Pruning's DependencyGraph (the assignment's
`prune_channels_after_filter_prune()`), verified against the masked model.

A filter-pruned model still computes every zero filter. Here each coupled group (a conv, its
BatchNorm, the next conv's input channels or the classifier's inputs; for residual networks
every conv feeding the same add) loses the channels that are zero in all its members, so
the slim model computes the same function with smaller tensors. The slim checkpoint stores
Torch-Pruning's pruning history (module name, out/in, indices): replaying it on a fresh model
of the same spec rebuilds the exact slim architecture, with no pickled modules.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from .data import Dataset, calibration_batch
from .errors import CompressError
from .masks import FilterGroup, filter_groups, group_score
from .models import ModelSpec
from .sparsity import sparsity_report
from .train import evaluate


def example_input(spec: ModelSpec, batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, spec.in_channels, spec.image_size, spec.image_size)


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
    import torch_pruning as tp

    model.eval()
    groups = groups if groups is not None else filter_groups(model, example)
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
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    modules = dict(model.named_modules())
    for root, idxs in plan:
        module = modules[root]
        group = dg.get_pruning_group(module, tp.prune_conv_out_channels, idxs)
        if not dg.check_pruning_group(group):
            raise CompressError(f"Torch-Pruning refused to remove {len(idxs)} channels of {root}")
        group.prune()
    history = [[str(name), bool(is_out), [int(i) for i in idxs]] for name, is_out, idxs in dg.pruning_history()]
    return model, history, rounded_extra


def replay_history(model: nn.Module, history: list, spec: ModelSpec) -> nn.Module:
    """Rebuild a slim architecture: replay Torch-Pruning's history on a fresh model."""
    import torch_pruning as tp

    model.eval()
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_input(spec))
    try:
        dg.load_pruning_history([list(h) for h in history])
    except (AttributeError, IndexError, KeyError, RuntimeError) as e:
        raise CompressError(f"the slim model's pruning history does not fit a {spec.name} ({type(e).__name__})",
                            "the file was made for another architecture") from None
    return model


def count_macs_params(model: nn.Module, spec: ModelSpec) -> tuple[int, int]:
    """MACs and parameters per image, with Torch-Pruning's op counter."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, example_input(spec).to(next(model.parameters()).device))
    model.train(was_training)
    return int(macs), int(params)


def conv_widths(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@dataclass
class SlimResult:
    model: nn.Module
    history: list
    stats: dict


def slim(masked: nn.Module, spec: ModelSpec, data: Dataset | None = None, *, round_to: int = 0,
         rtol: float = 1e-4) -> SlimResult:
    """Remove the pruned channels of a masked model and prove nothing changed.

    Checks the slim model against the masked one (with any rounding-removed filters zeroed
    too) on real test images: logits equal within `rtol` relative to their scale, and
    identical test accuracy. Returns the slim model, its history and the numbers a user wants:
    params, MACs, widths, sparsity dense -> masked -> slim, accuracies and the check.
    """
    device = next(masked.parameters()).device
    masked = masked.eval()
    example = example_input(spec).to(device)
    reference = copy.deepcopy(masked)
    slim_model = copy.deepcopy(masked)
    t0 = time.perf_counter()
    slim_model, history, extra = remove_channels(slim_model, example, round_to)
    seconds = time.perf_counter() - t0
    if not history:
        raise CompressError("nothing to remove: the model has no all-zero filters, so no file was written",
                            "slim works on filter-pruned models (compress filter ...)")
    if extra:  # rounding removed live filters: the reference is the masked model with them zeroed
        _zero_removed_filters(reference, history, spec)

    dense = spec.build().to(device)
    macs = {k: count_macs_params(m, spec) for k, m in (("dense", dense), ("masked", masked), ("slim", slim_model))}
    stats = {
        "params": {k: v[1] for k, v in macs.items()},
        "macs": {k: v[0] for k, v in macs.items()},
        "widths": {"dense": conv_widths(dense), "slim": conv_widths(slim_model)},
        "filter_sparsity": {"dense": 0.0, "masked": sparsity_report(masked, "filter")["overall"],
                            "slim": sparsity_report(slim_model, "filter")["overall"]},
        "weight_sparsity": {"dense": 0.0, "masked": sparsity_report(masked, "unstructured")["overall"],
                            "slim": sparsity_report(slim_model, "unstructured")["overall"]},
        "removed_by_rounding": extra,
        "round_to": round_to,
        "seconds": round(seconds, 3),
    }
    stats["filters_removed"] = sum(stats["widths"]["dense"].values()) - sum(stats["widths"]["slim"].values())
    stats["filter_fraction_removed"] = stats["filters_removed"] / sum(stats["widths"]["dense"].values())
    if data is not None:
        stats["check"] = verify(reference, slim_model, data, rtol)
    return SlimResult(slim_model, history, stats)


def verify(reference: nn.Module, slim_model: nn.Module, data: Dataset, rtol: float = 1e-4) -> dict:
    """Slim vs reference on real test images: max relative logit difference and accuracies."""
    device = next(reference.parameters()).device
    x, _ = calibration_batch(data, 256)
    with torch.no_grad():
        a, b = reference(x.to(device)).float(), slim_model(x.to(device)).float()
    rel = ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()
    acc_ref, _ = evaluate(reference, data, device)
    acc_slim, _ = evaluate(slim_model, data, device)
    check = {"max_rel_diff": rel, "rtol": rtol, "acc_masked": round(acc_ref, 2), "acc_slim": round(acc_slim, 2),
             "images": int(data.test_x.shape[0])}
    if rel > rtol or acc_ref != acc_slim:
        raise CompressError(f"the slim model differs from the masked one (max relative difference {rel:.2e}, "
                            f"accuracy {acc_ref:.2f}% vs {acc_slim:.2f}%)",
                            "this is a bug in channel removal; please report it with the model file")
    return check


def _zero_removed_filters(model: nn.Module, history: list, spec: ModelSpec) -> None:
    """Zero, in the masked model, every output channel the history removes (incl. coupled BN)."""
    groups = {g.root: g for g in filter_groups(model, example_input(spec).to(next(model.parameters()).device))}
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, is_out, idxs in history:
            g = groups.get(name)
            if not is_out or g is None:
                continue
            for pname, member_idx in g.members.items():
                params[pname][torch.tensor([member_idx[i] for i in idxs])] = 0


def slim_checkpoint(ckpt: dict, data: Dataset | None, *, round_to: int = 0, device: torch.device | None = None) -> tuple[dict, SlimResult]:
    """A pruned checkpoint in, a slim checkpoint (state_dict + pruning history) out."""
    from .checkpoint import model_from_checkpoint
    from .env import versions

    if ckpt.get("kind") == "slim":
        raise CompressError("this model is already slim", "pass the masked model (Omp_/Imp_ ...pt) instead")
    spec = ModelSpec.from_dict(ckpt["model"])
    model = model_from_checkpoint(ckpt).to(device or "cpu")
    result = slim(model, spec, data, round_to=round_to)
    meta = dict(ckpt.get("meta", {}))
    if "check" in result.stats:
        meta["accuracy"] = result.stats["check"]["acc_slim"]
    meta.update(slim=result.stats, source_kind=ckpt.get("kind"), versions=versions())
    payload = {"kind": "slim", "model": spec.to_dict(),
               "state_dict": {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()},
               "pruning_history": result.history, "meta": meta}
    return payload, result

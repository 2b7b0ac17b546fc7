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
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.data import Dataset, calibration_batch
from compress.env import versions
from compress.errors import CompressError
from compress.io import check_writable
from compress.models import ModelSpec
from compress.prune.channels import conv_widths, count_macs_params, remove_channels
from compress.prune.masks import filter_groups
from compress.prune.rebuild import model_from_checkpoint
from compress.prune.sparsity import sparsity_report
from compress.train import evaluate


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
    example = spec.example_input().to(device)
    reference = copy.deepcopy(masked)
    slim_model = copy.deepcopy(masked)
    t0 = time.perf_counter()
    slim_model, history, extra = remove_channels(slim_model, example, round_to)
    seconds = time.perf_counter() - t0
    if not history:
        raise CompressError("nothing to remove: the model has no all-zero filters, so no file was written",
                            "slim works on filter-pruned models (compress filter ...)")
    _check_runs(slim_model, example)
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
    """Slim vs reference on real test images: max relative logit difference and accuracies.

    Both run as fp32 copies on the CPU, wherever the models live: on a GPU, TF32 or bf16
    kernels and the two models' memory formats (Torch-Pruning rebuilds weights contiguous)
    would pick different kernels, and equal models would differ by more than `rtol`."""
    device = torch.device("cpu")
    reference = copy.deepcopy(reference).float().to(device, memory_format=torch.contiguous_format).eval()
    slim_model = copy.deepcopy(slim_model).float().to(device, memory_format=torch.contiguous_format).eval()
    x, _ = calibration_batch(data, 256)
    with torch.no_grad():  # in slices of 32: a MaxViT at 224 px needs GBs for 256 images at once
        a = torch.cat([reference(xb.to(device)).float() for xb in x.split(32)])
        b = torch.cat([slim_model(xb.to(device)).float() for xb in x.split(32)])
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


def _check_runs(slim_model: nn.Module, example: torch.Tensor) -> None:
    """One forward pass of the slim model, before anything counts or compares it: where
    Torch-Pruning left two shapes inconsistent (timm's LeViT, CSPDarkNet) that is one error line."""
    try:
        with torch.no_grad():
            slim_model.eval()(example)
    except RuntimeError as e:
        raise CompressError(f"the slim model does not run ({str(e).splitlines()[0][:120]}): Torch-Pruning removed "
                            "channels this architecture cannot lose", "this is a bug in channel removal; please "
                            "report it with the model; unstructured or nm pruning still apply") from None


def _zero_removed_filters(model: nn.Module, history: list, spec: ModelSpec) -> None:
    """Zero, in the masked model, every output channel the history removes (incl. coupled BN)."""
    groups = {g.root: g for g in filter_groups(model, spec.example_input().to(next(model.parameters()).device))}
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


def slim_file(checkpoint: Path, out: Path | None, data_for: Callable[[dict], Dataset], *, round_to: int = 0,
              device: torch.device | None = None, force: bool = False) -> tuple[Path, SlimResult]:
    """`compress slim` on files (the CLI and `compress.api` alike): the pruned checkpoint read, the
    slim one written to `out` (default MODEL_slim.pt beside it; refused if it exists unless
    `force`). `data_for(ckpt)` gives the data the slim model is checked on."""
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint, kinds=("pruned", "dense", "slim"))
    path = Path(out) if out else checkpoint.with_name(checkpoint.stem + "_slim.pt")
    check_writable(path, force=force)
    payload, result = slim_checkpoint(ckpt, data_for(ckpt).to(device or "cpu"), round_to=round_to, device=device)
    return save_checkpoint(path, payload), result

"""The report's figures, drawn from what the runs recorded (`compress.plots` does the drawing)."""
from __future__ import annotations

from pathlib import Path

import torch

from compress import plots
from compress.analysis.evaluate import layer_blocks
from compress.errors import CompressError, did_you_mean
from compress.kinds import Kind
from compress.models import ModelSpec
from compress.prune.sparsity import DEFINITIONS
from compress.report.markdown import split_sizes
from compress.report.runs import RunData


# --------------------------------------------------------------------------- figures
def _weight_shapes(run: RunData) -> dict[str, list[int]]:
    state = (run.result or {}).get("state_dict", {})
    return {k: list(v.shape) for k, v in state.items() if k.endswith("weight") and v.ndim == 4}


def _keep(run: RunData, layer: str) -> torch.Tensor | None:
    ckpt = run.result or {}
    masks = ckpt.get("masks") or {}
    if layer in masks:
        return masks[layer].bool()
    w = ckpt.get("state_dict", {}).get(layer)
    return None if w is None else w != 0


def dense_accuracy(top: dict, runs: list[RunData]) -> float | None:
    if isinstance(top.get("dense"), dict) and top["dense"].get("accuracy") is not None:
        return top["dense"]["accuracy"]
    for r in runs:
        acc = r.manifest.get("dense", {}).get("accuracy")
        if acc is not None:
            return acc
    return None


def _model_points(runs: list[RunData]) -> list[dict]:
    pts = []
    for r in runs:
        if not r.complete:
            continue
        res = r.manifest["result"]
        pts.append({"kind": r.kind, "method": r.method, "sparsity": res["sparsity"], "accuracy": res["accuracy"],
                    "acc_after_prune": res.get("acc_after_prune"), "rounds": r.manifest.get("rounds", [])})
    return pts


def _slim_note(runs: list[RunData]) -> str:
    parts = []
    for r in runs:
        if r.slim and "params" in r.slim:
            p = r.slim["params"]
            parts.append(f"{r.label}: {100 * r.slim.get('filter_fraction_removed', 0):.1f}% of filters removed → "
                         f"{100 * (1 - p['slim'] / p['dense']):.1f}% fewer parameters once slimmed")
    return "; ".join(parts)


def make_figures(folder: Path, top: dict, runs: list[RunData], mask_layer: str | None) -> dict[str, Path]:
    figdir = folder / "figures"
    figs: dict[str, Path] = {}
    dense_acc = dense_accuracy(top, runs)
    points = _model_points(runs)
    spec = runs[0].manifest.get("model", {})
    data = runs[0].manifest.get("dataset", {})
    if points and dense_acc is not None:
        figs["accuracy"] = plots.accuracy_vs_sparsity(
            points, dense_acc, figdir / "accuracy_vs_sparsity.png",
            title=f"{spec.get('name', '?')} (width {spec.get('width', 1):g}) on {data.get('name', '?')}: "
                  f"accuracy vs overall sparsity",
            note=_slim_note(runs), images=split_sizes(runs)[1])
    for r in runs:
        shapes = _weight_shapes(r)
        if not shapes:
            continue
        layer = mask_layer or plots.default_mask_layer(shapes)
        if layer not in shapes:
            raise CompressError(f"--layer {layer!r} is not a conv weight of the model", did_you_mean(layer, shapes))
        keep = _keep(r, layer)
        name = (r.manifest.get("result") or {}).get("path", r.name)
        figs[f"mask_{r.name}"] = plots.mask_figure(keep, figdir / f"mask_{r.name}.png", model=name.removesuffix(".pt"),
                                                   layer=layer, label=r.label)
    for kind in (Kind.UNSTRUCTURED, Kind.FILTER, Kind.NM):
        members = [r for r in runs if r.kind == kind and r.sparsity]
        if not members:
            continue
        layers = [dict(l, weights=_numel(l["shape"])) for l in members[0].sparsity["layers"]]
        series = {r.label: {l["name"]: l["sparsity"] for l in r.sparsity["layers"]} for r in members}
        colors = {r.label: plots.model_style(r.kind, r.method).color for r in members}
        blocks = _blocks(spec, members[0].sparsity.get("kind", kind))
        unit = "filters" if kind == Kind.FILTER else "weights"
        figs[f"layers_{kind}"] = plots.layer_sparsity_figure(
            series, layers, figdir / f"layer_sparsity_{kind}.png", colors=colors, blocks=blocks,
            title=f"Per-layer {kind} sparsity ({spec.get('name', '?')})", ylabel=f"sparsity (% of the layer's {unit})",
            note=DEFINITIONS.get(kind, ""))
    return figs


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _blocks(spec: dict, kind: str) -> dict[str, str] | None:
    try:
        s = ModelSpec.from_dict(spec)
        return layer_blocks(s.build(), s.example_input(), Kind(kind).definition)
    except Exception:  # blocks only decorate the figure
        return None

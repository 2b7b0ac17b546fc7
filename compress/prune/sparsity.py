"""Sparsity, defined exactly (the assignment's `test_sparity()`), per layer and overall.

unstructured: zero weights / all weights, over conv and linear weights (the classifier
              counts; BatchNorm and biases do not).
filter:       all-zero output filters / all output filters, over conv layers.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch.nn as nn
from rich.table import Table

from compress.io import atomic_write
from compress.kinds import Kind
from compress.prune.ratios import prunable

DEFINITIONS = {
    "unstructured": "zero weights / all weights over conv and linear weights (classifier included; BN and biases excluded)",
    "filter": "all-zero output filters / all output filters over conv layers",
    "nm": "zero weights / all weights over conv and linear weights (N:M pattern)",
}


def sparsity_report(model: nn.Module, kind: str) -> dict:
    """Per-layer and overall sparsity of `model` under the definition of `kind`."""
    layers = []
    pruned_total = units_total = 0
    for name, w in prunable(model, kind).items():
        w = w.detach()
        if kind == Kind.FILTER:
            total = w.shape[0]
            pruned = int((w.flatten(1).abs().sum(1) == 0).sum())
        else:
            total = w.numel()
            pruned = int((w == 0).sum())
        layers.append({"name": name, "shape": list(w.shape), "total": total, "pruned": pruned,
                       "sparsity": pruned / total})
        pruned_total += pruned
        units_total += total
    return {"kind": kind, "definition": DEFINITIONS[kind], "unit": "filters" if kind == Kind.FILTER else "weights",
            "layers": layers, "pruned": pruned_total, "total": units_total,
            "overall": pruned_total / max(1, units_total)}


def sparsity_table(report: dict, title: str = "") -> Table:
    unit = report["unit"]
    t = Table(title=title or f"{report['kind']} sparsity", caption=report["definition"])
    t.add_column("layer")
    t.add_column("shape")
    t.add_column(f"pruned {unit}", justify="right")
    t.add_column(f"all {unit}", justify="right")
    t.add_column("sparsity", justify="right")
    for row in report["layers"]:
        t.add_row(row["name"], "×".join(map(str, row["shape"])), f"{row['pruned']:,}", f"{row['total']:,}",
                  f"{100 * row['sparsity']:.2f}%")
    t.add_section()
    t.add_row("overall", "", f"{report['pruned']:,}", f"{report['total']:,}", f"{100 * report['overall']:.2f}%",
              style="bold")
    return t


def write_report(report: dict, path: Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))



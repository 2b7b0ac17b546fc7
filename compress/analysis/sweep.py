"""One-shot sparsity sweep: prune a trained model at many sparsities and see where it breaks.

The question is where accuracy gives way, so the sweep must be fine (91 points from
80% to 98%) and each point cheap. A point restores the original weights (a tensor copy, no
file read), applies masks cut from scores sorted once per layer, and evaluates with
BatchNorm folded into the convs in channels-last layout: 3-4.5 s per point for full-width
VGG13 on the 1017-image sample on 2 CPU cores (the default 91 points took 402 s with
another job on the machine). Optionally each point is treated before it
is measured: its BatchNorm statistics re-estimated on a few training batches (no weight
changes; one-shot accuracy of BN networks collapses early mostly because those statistics
go stale), and/or a short masked fine-tune with the shared training loop. The untreated
one-shot accuracy is kept beside it.

The trade-off rule: walking up the grid, the trade-off is the last point before accuracy
first falls more than `tolerance` points below dense (the highest sparsity within tolerance
that is not preceded by a breakdown; a lucky point after the curve has collapsed does not count).
Every point is measured on the validation split (the choice reads nothing else) and, for the
report only, on the test split; without a validation split (--val-split 0) the test split is
both, and the outputs say so.
The default tolerance is one point or two standard errors of an accuracy on the split it reads,
whichever is larger: on the sample's 814 validation images one standard error is 1.6 points
(3.2 as tolerance), so a fixed one-point rule would stop at the first unlucky point (measured
on the test split before there was a validation split: the 80% point of VGG13 sat 1.5 points
below dense while 81-85% sat 1.1-2.1 below, and the rule fell back to the knee at 92%, 15
points down). On full CIFAR-10 (5000 validation images) it stays one point.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from compress import plots
from compress.analysis.evaluate import (
    Evaluator,
    describe_blocks,
    finetune_subset,
    layer_blocks,
    layer_table,
    prepare_analysis,
    recalibrate_bn,
)
from compress.analysis.mask_grid import OneShot

# the options live in a torch-free module (the CLI builds its arguments from them); named here too
from compress.analysis.options import DEFAULT_GRID, KINDS, MAX_POINTS, SweepOptions, sparsity_grid  # noqa: F401
from compress.checkpoint import load_state
from compress.console import progress
from compress.data import Dataset
from compress.distributed import current, gathered, mine
from compress.env import machine
from compress.io import atomic_write
from compress.kinds import Kind
from compress.models import ModelSpec
from compress.prune.masks import apply_masks, filter_groups
from compress.prune.sparsity import DEFINITIONS, sparsity_report
from compress.train import TrainConfig, train

RULE = ("the last sparsity before accuracy first falls more than {tol:g} point(s) below dense; "
        "if the first point already does, the knee of the curve")


def standard_error(accuracy: float, images: int) -> float:
    """Binomial standard error, in points, of an accuracy measured on `images` images."""
    p = accuracy / 100
    return 100 * math.sqrt(p * (1 - p) / max(images, 1))


def default_tolerance(dense_acc: float, images: int) -> float:
    """One point, or two standard errors when the split is too small for one point to be signal."""
    return max(1.0, round(2 * standard_error(dense_acc, images), 1))


def choose_tradeoff(points: list[dict], dense_acc: float, tolerance: float) -> dict | None:
    """The point just before the first one more than `tolerance` below dense; when the first
    point already is, the knee of the curve (see `knee`). The result says which (`by`)."""
    ordered = sorted(points, key=lambda p: p["target"])
    best = None
    for p in ordered:
        if p["accuracy"] < dense_acc - tolerance - 1e-9:
            break
        best = p
    if best is not None:
        return best | {"by": "tolerance"}
    k = knee(ordered)
    return None if k is None else k | {"by": "knee"}


def knee(ordered: list[dict]) -> dict | None:
    """Kneedle (Satopää et al. 2011): with sparsity and accuracy scaled to [0, 1], the point
    farthest above the straight line from the first point to the last, i.e. where accuracy
    turns from sliding to falling. Needs three points and a curve that ends lower than it starts."""
    if len(ordered) < 3 or ordered[-1]["accuracy"] >= ordered[0]["accuracy"]:
        return None
    x0, x1 = ordered[0]["target"], ordered[-1]["target"]
    y0, y1 = ordered[0]["accuracy"], ordered[-1]["accuracy"]
    if x1 <= x0:
        return None

    def lift(p):  # height above the chord, in scaled units
        x = (p["target"] - x0) / (x1 - x0)
        return (p["accuracy"] - y1) / (y0 - y1) - (1 - x)

    return max(ordered[1:-1], key=lift)


# --------------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    summary: dict  # what sweep.json holds
    files: dict[str, Path] = field(default_factory=dict)


def run_sweep(ckpt: dict, data: Dataset, opts: SweepOptions, out_dir: Path, *, device: torch.device,
              source: str = "", show: bool = True, force: bool = False, command: list[str] | None = None) -> SweepResult:
    """Sweep a dense checkpoint; writes sweep.csv/json/png and tradeoff_layers.json/png to `out_dir`."""
    opts.validate()
    grid = opts.grid()
    out_dir = Path(out_dir)
    spec, model, original, example = prepare_analysis(
        ckpt, data, device, out_dir, ("sweep.csv", "sweep.json", "sweep.png", "tradeoff_layers.json",
                                      "tradeoff_layers.png"), force)
    evaluator = Evaluator(data, device, split=data.choice_split)  # what the trade-off reads
    tester = Evaluator(data, device) if data.has_val else None  # reported beside it, never read by a choice
    t_start = time.perf_counter()
    dense_acc = evaluator.accuracy(model)
    dense_test = tester.accuracy(model) if tester else dense_acc
    points, reports = _sweep_points(model, original, spec, data, opts, grid, example, evaluator, tester, dense_acc,
                                    device, show)
    seconds = time.perf_counter() - t_start

    curves = {c: [p for p in points if p["criterion"] == c] for c in opts.criteria}
    tol = opts.max_drop if opts.max_drop is not None else default_tolerance(dense_acc, evaluator.images)
    tradeoffs = {c: choose_tradeoff(pts, dense_acc, tol) for c, pts in curves.items()}
    layers_doc = _tradeoff_layers(model, example, opts, tradeoffs, reports, tol, dense_acc)
    load_state(model, original, spec.name)
    summary = {
        "format": "compress-sweep/1", "source": source, "model": spec.to_dict(), "dataset": data.describe(),
        "kind": opts.kind, "definition": DEFINITIONS[opts.kind], "options": asdict(opts) | {"criteria": list(opts.criteria)},
        "grid": {"start": grid[0], "stop": grid[-1], "step": opts.step or DEFAULT_GRID[opts.kind][2], "points": len(grid)},
        "choices_on": "validation" if tester else "test (no validation split: --val-split 0)",
        "dense_accuracy": round(dense_acc, 2), "dense_test_accuracy": round(dense_test, 2), "tolerance": tol,
        "tolerance_source": "--max-drop" if opts.max_drop is not None else "default: max(1 point, 2 standard errors)",
        "rule": RULE.format(tol=tol),
        "treatment": opts.treatment or "none (pure one-shot)",
        # binomial standard error of one accuracy on the split the choice reads: differences below it are noise
        "standard_error": round(standard_error(dense_acc, evaluator.images), 2),
        "tradeoffs": {c: (None if t is None else {k: t[k] for k in ("target", "sparsity", "accuracy", "drop", "by",
                                                                    "test_accuracy")})
                      for c, t in tradeoffs.items()},
        "breakdown": {c: _first_below(curves[c], dense_acc, tol) for c in opts.criteria},
        "seconds": round(seconds, 1), "seconds_per_point": round(sum(p["seconds"] for p in points) / len(points), 3),
        "evaluator": {"images": evaluator.images, "split": evaluator.split, "test_images": (tester or evaluator).images,
                      "batchnorm_folded": True, "device": str(device)},
        "machine": machine(), "command": command, "points": points,
    }
    files = _write_sweep(out_dir, summary, curves, tradeoffs, layers_doc, opts, spec) if current().main else {}
    return SweepResult(summary, files)


def _sweep_points(model, original, spec, data, opts: SweepOptions, grid, example, evaluator, tester, dense_acc,
                  device, show) -> tuple[list[dict], dict]:
    """Every (criterion, target) point measured (under torchrun: this rank's share, gathered), and
    each point's per-layer sparsity report (a few numbers each, for the trade-off's layer table)."""
    groups = filter_groups(model, example) if opts.kind == Kind.FILTER else None
    tune_data = finetune_subset(data, opts.finetune_steps, opts.finetune_batch, opts.seed) if opts.finetune_steps else None
    points: list[dict] = []
    reports: dict[tuple[str, float], dict] = {}
    index = 0
    with progress(show=show) as bar:
        task = bar.add_task(f"sweep {spec.name} {opts.kind}", total=len(grid) * len(opts.criteria), status="")
        for criterion in opts.criteria:
            load_state(model, original, spec.name)
            pruner = OneShot(model, opts.kind, criterion, opts.allocation, data, example, groups)
            t0 = time.perf_counter()
            for target, masks in pruner.along(grid):
                load_state(model, original, spec.name)
                apply_masks(model, masks)
                rep = reports[(criterion, target)] = sparsity_report(model, opts.kind)
                index += 1
                if not mine(index - 1):  # under torchrun the points are dealt round robin to the ranks
                    bar.update(task, advance=1)
                    continue
                m = _measure_point(model, masks, data, tune_data, opts, evaluator, tester, device)
                p = {"criterion": criterion, "target": target, "sparsity": round(rep["overall"], 6),
                     "accuracy": round(m["accuracy"], 2), "drop": round(dense_acc - m["accuracy"], 2),
                     "test_accuracy": round(m["test_accuracy"], 2), "seconds": round(time.perf_counter() - t0, 3)}
                if opts.treatment:
                    p["acc_oneshot"] = round(m["acc_oneshot"], 2)
                points.append(p)
                t0 = time.perf_counter()
                bar.update(task, advance=1, status=f"{criterion} {100 * rep['overall']:.1f}% → {p['accuracy']:.2f}%")
    order = {c: i for i, c in enumerate(opts.criteria)}
    return sorted(gathered(points), key=lambda p: (order[p["criterion"]], p["target"])), reports


def _measure_point(model, masks, data, tune_data, opts: SweepOptions, evaluator, tester, device) -> dict:
    """One masked model's accuracy (%), after the point's treatment (BatchNorm re-estimated and/or
    a short masked fine-tune) when there is one; the untreated one-shot accuracy beside it."""
    acc = acc_oneshot = evaluator.accuracy(model)
    if opts.recalibrate_bn:
        recalibrate_bn(model, data, opts.recalibrate_bn, opts.finetune_batch, opts.seed)
        acc = evaluator.accuracy(model)
    if tune_data is not None:
        cfg = TrainConfig(epochs=1, batch_size=opts.finetune_batch, lr=opts.finetune_lr, warmup_epochs=0.0,
                          schedule="constant", eval_every=0, seed=opts.seed)
        train(model, tune_data, cfg, device=device, masks=masks, show=False, data_parallel=False)
        acc = evaluator.accuracy(model)
    return {"accuracy": acc, "test_accuracy": tester.accuracy(model) if tester else acc, "acc_oneshot": acc_oneshot}


def _tradeoff_layers(model, example, opts: SweepOptions, tradeoffs: dict, reports: dict, tol: float,
                     dense_acc: float) -> dict:
    """Per-layer (and per-block) sparsity at each criterion's trade-off point."""
    blocks = layer_blocks(model, example, opts.kind)
    doc = {"kind": opts.kind, "definition": DEFINITIONS[opts.kind], "allocation": opts.allocation,
           "rule": RULE.format(tol=tol), "dense_accuracy": round(dense_acc, 2), "tradeoffs": []}
    for c in opts.criteria:
        t = tradeoffs[c]
        if t is None:
            continue
        rep = layer_table(reports[(c, t["target"])], model, opts.kind, blocks)
        doc["tradeoffs"].append({"criterion": c, "target": t["target"], "sparsity": rep["overall"],
                                 "accuracy": t["accuracy"], "by": t["by"], "layers": rep["layers"], "blocks": rep["blocks"],
                                 "by_type": rep["by_type"], "observations": describe_blocks(rep, opts.allocation)})
    return doc


def _first_below(points, dense_acc, tol) -> dict | None:
    for p in sorted(points, key=lambda p: p["target"]):
        if p["accuracy"] < dense_acc - tol - 1e-9:
            return {k: p[k] for k in ("target", "sparsity", "accuracy", "drop")}
    return None


def _write_sweep(out_dir: Path, summary, curves, tradeoffs, layers_doc, opts: SweepOptions, spec) -> dict[str, Path]:
    files = {}
    cols = (["criterion", "target", "sparsity", "accuracy", "drop"] + (["acc_oneshot"] if opts.treatment else [])
            + ["test_accuracy", "seconds"])

    def write_csv(tmp: Path):
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            for p in summary["points"]:
                w.writerow({k: p.get(k) for k in cols})

    files["csv"] = atomic_write(out_dir / "sweep.csv", write_csv)
    files["json"] = atomic_write(out_dir / "sweep.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    files["tradeoff_json"] = atomic_write(out_dir / "tradeoff_layers.json",
                                          lambda tmp: tmp.write_text(json.dumps(layers_doc, indent=2)))
    title = (f"One-shot {opts.kind} pruning sweep of {spec.name} (width {spec.width:g})\n"
             f"{opts.allocation} allocation · {summary['dataset']['name']}, chosen on {summary['evaluator']['images']} "
             f"{'validation' if summary['evaluator']['split'] == 'val' else 'TEST (no validation split)'} images")
    files["png"] = plots.sweep_figure(curves, summary["dense_accuracy"], out_dir / "sweep.png", kind=opts.kind,
                                      tolerance=summary["tolerance"], tradeoffs=tradeoffs, title=title,
                                      standard_error=summary["standard_error"], images=summary["evaluator"]["images"],
                                      treatment=opts.treatment, split=summary["evaluator"]["split"])
    files["tradeoff_png"] = tradeoff_figure(layers_doc, out_dir / "tradeoff_layers.png", spec)
    return files


def tradeoff_figure(layers_doc: dict, path: Path, spec: ModelSpec) -> Path:
    """Per-layer and per-block bars (one colour per criterion) at each criterion's trade-off."""
    entries = layers_doc["tradeoffs"]
    kind = layers_doc["kind"]
    if not entries:
        return plots.empty_figure(path, "No trade-off point: the first swept sparsity is already below the "
                                        "tolerance; sweep from a lower --start")
    layers = entries[0]["layers"]
    series, block_series, colors = {}, {}, {}
    for e in entries:
        st = plots.criterion_style(e["criterion"])
        label = f"{st.label}: {100 * e['sparsity']:.1f}% overall, {e['accuracy']:.2f}% accuracy"
        series[label] = {l["name"]: l["sparsity"] for l in e["layers"]}
        block_series[label] = {b["block"]: b["sparsity"] for b in e["blocks"]}
        colors[label] = st.color
    notes = [(f"{plots.criterion_style(e['criterion']).label}: " if len(entries) > 1 else "") + "; ".join(e["observations"])
             for e in entries if e["observations"]]
    unit = "filters" if kind == Kind.FILTER else "weights"
    return plots.layer_sparsity_figure(
        series, layers, path, colors=colors, blocks={l["name"]: l["block"] for l in layers},
        block_series=block_series, block_rows=entries[0]["blocks"],
        title=f"Sparsity per layer at the trade-off point ({spec.name}, {layers_doc['allocation']} allocation)",
        ylabel=f"sparsity (% of the layer's {unit})", note="\n".join(notes))

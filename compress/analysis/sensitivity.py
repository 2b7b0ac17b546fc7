"""Per-layer sensitivity: prune one layer alone at several ratios, and propose layer ratios.

Which layers can lose most without hurting accuracy is an empirical question (Li et al.,
"Pruning Filters for Efficient ConvNets", 2017, section 4.2). Each layer (for filter
pruning: each group of convs that share output channels) is pruned alone, one-shot, and
the accuracy drop recorded. The proposal treats the drops as additive, interpolates each
layer's drop curve linearly (0 at ratio 0, never decreasing), and buys the required
number of pruned units at the lowest predicted drop per unit: a greedy walk over each
curve's lower convex hull, so a big layer that costs little per weight goes first.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from compress import plots
from compress.analysis import mask_grid
from compress.analysis.evaluate import Evaluator, prepare_analysis, recalibrate_bn

# the options live in a torch-free module (the CLI builds its arguments from them); named here too
from compress.analysis.options import DEFAULT_RATIOS, DEFAULT_TARGET, KINDS, SensitivityOptions  # noqa: F401
from compress.checkpoint import load_state
from compress.console import progress
from compress.data import Dataset
from compress.distributed import current, gathered, mine
from compress.errors import CompressError
from compress.io import atomic_write
from compress.kinds import Kind
from compress.models.attention import head_attentions
from compress.plots import layer_labels
from compress.prune.criteria import get_criterion
from compress.prune.masks import apply_masks, filter_groups, filter_masks, unstructured_masks
from compress.prune.ratios import planned_sparsity, prunable, pruned_count, read_ratio_file, units, write_ratio_file
from compress.prune.sparsity import DEFINITIONS

STEP = 0.005  # ratio resolution of the proposal


@dataclass
class Unit:
    """What is pruned alone: one layer, or (filter pruning) a group of convs that share channels."""

    label: str  # conv1, conv2, ..., fc1
    params: list[str]  # weight names
    size: int  # pruned-unit count under the kind's definition (weights or filters)
    shape: list[int]


def analysis_units(model: nn.Module, kind: str, groups=None) -> list[Unit]:
    params = prunable(model, kind)
    labels = dict(zip(params, layer_labels(list(params), [list(w.shape) for w in params.values()])))
    if kind == Kind.UNSTRUCTURED:
        return [Unit(labels[n], [n], w.numel(), list(w.shape)) for n, w in params.items()]
    out, seen = [], set()
    for g in groups:
        names = [f"{c}.weight" for c in g.convs if f"{c}.weight" in params and f"{c}.weight" not in seen]
        if not names:
            continue
        seen.update(names)
        label = "+".join(labels[n] for n in names)
        out.append(Unit(label, names, sum(params[n].shape[0] for n in names), list(params[names[0]].shape)))
    for h in head_attentions(model).values():  # whole heads: one unit per attention
        if h.qkv in params and h.qkv not in seen:
            seen.add(h.qkv)
            out.append(Unit(labels[h.qkv], [h.qkv], params[h.qkv].shape[0], list(params[h.qkv].shape)))
    missing = [n for n in params if n not in seen]
    if missing:
        raise CompressError(f"no filter group found for {missing[:3]}", "this architecture is not supported by filter sensitivity")
    return sorted(out, key=lambda u: list(params).index(u.params[0]))


# --------------------------------------------------------------------------- the proposal
def drop_curve(ratios: list[float], drops: list[float]) -> tuple[list[float], list[float]]:
    """(ratios, drops) with the origin added and drops made non-decreasing (noise is not a gain)."""
    xs, ys = [0.0], [0.0]
    for r, d in sorted(zip(ratios, drops)):
        xs.append(r)
        ys.append(max(ys[-1], d))
    return xs, ys


def interpolate(xs: list[float], ys: list[float], x: float) -> float:
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x <= x1 + 1e-12:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
    return ys[-1]


def propose_ratios(curves: dict[str, tuple[list[float], list[float]]], sizes: dict[str, int],
                   counts: dict[str, callable], total: int, target: float) -> dict[str, float]:
    """Ratios (per unit label) that prune >= target x total units with the least summed predicted drop.

    `curves`: label -> (ratios, drops) as measured; `counts`: label -> (ratio -> pruned units,
    with the per-layer rounding of the mask functions). Greedy: repeatedly take the move
    (one unit's ratio up to any higher grid point) with the lowest added drop per added
    pruned unit; the last move is trimmed to just reach the target.
    """
    need = math.ceil(target * total - 1e-9)
    grids, preds = {}, {}
    for label, (rs, ds) in curves.items():
        xs, ys = drop_curve(rs, ds)
        g = [round(i * STEP, 6) for i in range(int(round(xs[-1] / STEP)) + 1)]
        if g[-1] < xs[-1] - 1e-9:
            g.append(xs[-1])
        grids[label] = g
        preds[label] = [interpolate(xs, ys, x) for x in g]
    pos = {label: 0 for label in curves}

    def pruned() -> int:
        return sum(counts[l](grids[l][pos[l]]) for l in curves)

    while pruned() < need:
        best = None
        for l in curves:
            i = pos[l]
            c0, d0 = counts[l](grids[l][i]), preds[l][i]
            for j in range(i + 1, len(grids[l])):
                gain = counts[l](grids[l][j]) - c0
                if gain <= 0:
                    continue
                rate = (preds[l][j] - d0) / gain
                key = (rate, -gain)
                if best is None or key < best[0]:
                    best = (key, l, j)
        if best is None:
            raise CompressError(f"the target {target} cannot be reached with the measured ratios",
                                "add a higher ratio to --ratios or lower --target")
        _, l, j = best
        short = need - (pruned() - counts[l](grids[l][pos[l]]))
        for k in range(pos[l] + 1, j + 1):  # trim: the smallest step on this move that is enough
            if counts[l](grids[l][k]) >= short or k == j:
                pos[l] = k
                break
    return {l: grids[l][pos[l]] for l in curves}


# --------------------------------------------------------------------------- the analysis
@dataclass
class SensitivityResult:
    summary: dict
    ratios: dict[str, float]  # parameter name -> proposed ratio
    files: dict[str, Path] = field(default_factory=dict)


def run_sensitivity(ckpt: dict, data: Dataset, opts: SensitivityOptions, out_dir: Path, *, device: torch.device,
                    source: str = "", show: bool = True, force: bool = False,
                    command: list[str] | None = None) -> SensitivityResult:
    """Measure every layer's drop curve; write sensitivity.csv/json/png and proposed.yaml to `out_dir`."""
    ratios, target = opts.resolved()
    out_dir = Path(out_dir)
    spec, model, original, example = prepare_analysis(
        ckpt, data, device, out_dir, ("sensitivity.csv", "sensitivity.json", "sensitivity.png", "proposed.yaml"), force)
    groups = filter_groups(model, example) if opts.kind == Kind.FILTER else None
    unit_list = analysis_units(model, opts.kind, groups)
    params = prunable(model, opts.kind)
    scores = None
    criterion = get_criterion(opts.criterion)
    if not criterion.iterative:  # scored once, from the original weights (magnitude: None, computed by the masks)
        scores = criterion.scores(model, opts.kind, {n: 0.5 for n in params}, data, example)
    reference = copy.deepcopy(model)  # the original weights, for scores and masks
    evaluator = Evaluator(data, device, split=data.choice_split)  # the proposal reads validation only
    t_start = time.perf_counter()
    dense_acc = evaluator.accuracy(model)

    rows = _scan(model, original, reference, spec, data, opts, unit_list, ratios, scores, example, groups,
                 evaluator, dense_acc, show)
    seconds = time.perf_counter() - t_start

    curves, per_unit, proposed, predicted, uniform = _proposal(model, opts, unit_list, rows, params, target)
    reached = planned_sparsity(model, opts.kind, proposed)

    summary = {
        "format": "compress-sensitivity/1", "source": source, "model": spec.to_dict(), "dataset": data.describe(),
        "kind": opts.kind, "definition": DEFINITIONS[opts.kind], "criterion": opts.criterion, "ratios": ratios,
        "recalibrate_bn_images": opts.recalibrate_bn * 128,
        "target": target, "dense_accuracy": round(dense_acc, 2),
        "choices_on": "validation" if data.has_val else "test (no validation split: --val-split 0)",
        "images": evaluator.images,
        "layers": [{"label": u.label, "params": u.params, "shape": u.shape, "units": u.size,
                    "accuracy": dict(zip([f"{r:g}" for r in ratios], [x["accuracy"] for x in rows if x["layer"] == u.label])),
                    "drop": dict(zip([f"{r:g}" for r in ratios], curves[u.label][1])),
                    "proposed": per_unit[u.label]} for u in unit_list],
        "proposal": {"ratios": proposed, "planned_sparsity": reached,
                     "predicted_drop": round(predicted, 2), "uniform_predicted_drop": round(uniform, 2),
                     "method": "greedy on interpolated per-layer drop curves, lowest predicted drop per pruned "
                               f"{'filter' if opts.kind == 'filter' else 'weight'}; drops assumed additive",
                     "note": "predicted drops are sums of single-layer drops: a score for comparing allocations, "
                             "not an accuracy forecast (they can exceed the dense accuracy)"},
        "seconds": round(seconds, 1), "evaluations": len(rows), "command": command,
    }
    if not current().main:
        return SensitivityResult(summary, proposed, {})
    files = _write(out_dir, summary, rows, proposed, spec, opts, source)
    check = read_ratio_file(files["yaml"], model, opts.kind)  # the file reads back and reaches the target
    if planned_sparsity(model, opts.kind, check) < target - 1e-9:
        raise AssertionError(f"proposed ratios reach {planned_sparsity(model, opts.kind, check)} < {target}")
    return SensitivityResult(summary, proposed, files)


def _scan(model, original, reference, spec, data, opts: SensitivityOptions, unit_list, ratios, scores, example,
          groups, evaluator, dense_acc: float, show: bool) -> list[dict]:
    """Every (unit, ratio) cell: the unit alone pruned to the ratio from the original weights,
    measured on the split choices read (under torchrun: this rank's share, gathered)."""
    rows = []
    cell = 0
    with progress(show=show) as bar:
        task = bar.add_task(f"sensitivity {spec.name} {opts.kind}", total=len(unit_list) * len(ratios), status="")
        for u in unit_list:
            for r, masks in _masks_along(reference, opts, u, ratios, scores, example, groups):
                cell += 1
                if not mine(cell - 1):  # under torchrun the cells are dealt round robin to the ranks
                    bar.update(task, advance=1)
                    continue
                load_state(model, original, spec.name)
                apply_masks(model, masks)
                if opts.recalibrate_bn:
                    recalibrate_bn(model, data, opts.recalibrate_bn)
                acc = evaluator.accuracy(model)
                rows.append({"layer": u.label, "params": ",".join(u.params), "ratio": r, "accuracy": round(acc, 2),
                             "drop": round(dense_acc - acc, 2)})
                bar.update(task, advance=1, status=f"{u.label} {100 * r:g}% → {acc:.2f}%")
    load_state(model, original, spec.name)
    order = {u.label: i for i, u in enumerate(unit_list)}
    return sorted(gathered(rows), key=lambda row: (order[row["layer"]], row["ratio"]))


def _proposal(model, opts: SensitivityOptions, unit_list, rows: list[dict], params: dict, target: float):
    """(drop curves, ratio per unit, ratio per parameter, predicted drop, uniform's predicted drop):
    the greedy allocation on the measured curves that reaches `target`."""
    curves = {u.label: ([r["ratio"] for r in rows if r["layer"] == u.label],
                        [r["drop"] for r in rows if r["layer"] == u.label]) for u in unit_list}
    counts = {u.label: (lambda x, u=u: sum(pruned_count(x, units(params[n], opts.kind)) for n in u.params))
              for u in unit_list}
    total = sum(units(w, opts.kind) for w in params.values())
    per_unit = propose_ratios(curves, {u.label: u.size for u in unit_list}, counts, total, target)
    proposed = {}
    for u in unit_list:
        for n in u.params:
            proposed[n] = math.ceil(per_unit[u.label] * 1e4 - 1e-6) / 1e4  # the file keeps 4 decimals: round up
    predicted = sum(interpolate(*drop_curve(*curves[label]), per_unit[label]) for label in curves)
    uniform = sum(interpolate(*drop_curve(*curves[label]), target) for label in curves)
    return curves, per_unit, proposed, predicted, uniform


def _masks_along(reference: nn.Module, opts: SensitivityOptions, u: Unit, ratios: list[float], scores, example, groups):
    """(ratio, masks) pruning unit `u` alone at each ratio, from the original weights.

    SynFlow runs one iterative pass per unit up to its highest ratio (see `SynflowPath`).
    """
    if get_criterion(opts.criterion).iterative:
        yield from mask_grid.SynflowPath(reference, opts.kind, lambda s, _scores: {n: s for n in u.params}, ratios, example,
                                     groups, iterations=mask_grid.SYNFLOW_ITERATIONS)
        return
    for r in ratios:
        layer_ratios = {n: r for n in u.params}
        if opts.kind == Kind.FILTER:
            yield r, filter_masks(reference, layer_ratios, example, scores, groups=groups)
        else:
            yield r, unstructured_masks(reference, layer_ratios, scores)


def _write(out_dir, summary, rows, proposed, spec, opts, source) -> dict[str, Path]:
    files = {}

    def write_csv(tmp: Path):
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["layer", "params", "ratio", "accuracy", "drop"])
            w.writeheader()
            w.writerows(rows)

    files["csv"] = atomic_write(out_dir / "sensitivity.csv", write_csv)
    files["json"] = atomic_write(out_dir / "sensitivity.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    p = summary["proposal"]
    kind, target = summary["kind"], summary["target"]
    header = (f"Layer ratios proposed by `compress sensitivity` for {spec.name} (width {spec.width:g}) from {source or 'a checkpoint'},\n"
              f"on {summary['dataset']['name']} ({summary['images']} {summary['choices_on']} images, dense {summary['dense_accuracy']:.2f}%).\n"
              f"Each layer was pruned alone ({opts.criterion}, one-shot"
              f"{f', BatchNorm re-estimated on {opts.recalibrate_bn * 128} images' if opts.recalibrate_bn else ''}) "
              f"at ratios {', '.join(f'{r:g}' for r in summary['ratios'])};\n"
              f"the accuracy drops were interpolated linearly and assumed additive, and the {kind} units were\n"
              f"bought greedily at the lowest predicted drop per unit until {100 * target:g}% overall.\n"
              f"Overall {kind} sparsity: {100 * p['planned_sparsity']:.2f}% ({DEFINITIONS[kind]}).\n"
              f"Predicted drop before retraining: {p['predicted_drop']:.2f} points (uniform {100 * target:g}%: "
              f"{p['uniform_predicted_drop']:.2f}); a sum of single-layer drops,\n"
              f"for comparing allocations, not an accuracy forecast.\n"
              f"Use: compress {kind} --config THIS.yaml --checkpoint {source or 'DENSE.pt'}")
    files["yaml"] = write_ratio_file(out_dir / "proposed.yaml", proposed, header=header)
    labels = [l["label"] for l in summary["layers"]]
    drops = [[l["drop"][f"{r:g}"] for r in summary["ratios"]] for l in summary["layers"]]
    files["png"] = plots.sensitivity_figure(
        labels, summary["ratios"], drops, out_dir / "sensitivity.png",
        proposed={l["label"]: l["proposed"] for l in summary["layers"]}, target=target, kind=kind,
        dense_acc=summary["dense_accuracy"], sizes=[l["units"] for l in summary["layers"]],
        split="val" if summary["choices_on"] == "validation" else "test", images=summary["images"])
    return files

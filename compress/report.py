"""One Markdown report from a run folder (or a suite of four runs), with its figures.

Everything is read from files the stages wrote: manifest.json, the result checkpoint,
sparsity.json, slim/slim.json, onnx/export.json, bench/bench.json. A stage that did not run
is one line in the report, never a failure; the report is written atomically.
"""
from __future__ import annotations

import datetime
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import atomic_write, load_checkpoint
from .errors import CompressError
from .models.sources import label
from .planner import final_speedup
from .sparsity import DEFINITIONS
from .stats import with_ci

SUITE_ORDER = ("omp_unstructured", "imp_unstructured", "omp_filter", "imp_filter")


@dataclass
class RunData:
    """What one run folder holds, read defensively (None = that file is absent)."""

    name: str  # omp_unstructured, ...
    path: Path
    rel: str  # path relative to the report's folder ("" for a single run)
    manifest: dict
    sparsity: dict | None = None
    slim: dict | None = None
    export: dict | None = None
    bench: dict | None = None
    result: dict | None = None  # the result checkpoint (state_dict, masks)
    problems: list[str] = field(default_factory=list)

    @property
    def job(self) -> dict:
        return self.manifest.get("job", {})

    @property
    def kind(self) -> str:
        return self.job.get("kind", "?")

    @property
    def method(self) -> str:
        return self.job.get("method", "?")

    @property
    def label(self) -> str:
        from .plots import model_style

        return model_style(self.kind, self.method).label

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete" and bool(self.manifest.get("result"))


def read_json(path: Path, problems: list[str] | None = None) -> dict | None:
    """A JSON file's content; None if absent; None plus a noted problem if unreadable."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return doc
    except (OSError, ValueError) as e:
        if problems is not None:
            problems.append(f"`{path.name}` could not be read ({type(e).__name__}); its section is left out")
        return None


def load_run(path: Path, name: str | None = None, rel: str = "") -> RunData:
    manifest = read_json(path / "manifest.json")
    if manifest is None:
        raise CompressError(f"{path} has no readable manifest.json", "pass a run folder made by `compress unstructured|filter`")
    job = manifest.get("job", {})
    run = RunData(name or f"{job.get('method', 'run')}_{job.get('kind', '')}", path, rel, manifest)
    run.sparsity = read_json(path / "sparsity.json", run.problems)
    run.slim = read_json(path / "slim" / "slim.json", run.problems)
    run.export = read_json(path / "onnx" / "export.json", run.problems)
    run.bench = read_json(path / "bench" / "bench.json", run.problems)
    result = manifest.get("result") or {}
    rounds = manifest.get("rounds") or []
    ckpt_name = result.get("path") or (f"rounds/round_{rounds[-1]['round']}.pt" if rounds else None)
    if ckpt_name:
        try:
            run.result = load_checkpoint(path / ckpt_name)
            if not result.get("path"):
                run.problems.append(f"the run is unfinished; its mask figure shows the last round (`{ckpt_name}`)")
        except Exception as e:  # a missing or damaged result only costs its figures
            run.problems.append(f"`{ckpt_name}` could not be loaded ({type(e).__name__}: {e}); no mask figure")
    return run


def load_runs(folder: Path) -> tuple[dict, list[RunData]]:
    """(top manifest, runs) for a run folder or a suite folder."""
    top = read_json(folder / "manifest.json")
    if top is None:
        if not folder.is_dir():
            raise CompressError(f"{folder} does not exist", "pass a run folder (e.g. runs/vgg13_filter_0.40_imp3)")
        raise CompressError(f"{folder} has no readable manifest.json",
                            "pass a run folder made by `compress unstructured|filter` or a suite from `compress all`")
    fmt = top.get("format", "")
    if fmt.startswith("compress-suite"):
        runs = []
        entries = top.get("runs") or {}
        if not entries:
            raise CompressError(f"the suite {folder} lists no runs", "its manifest.json needs a 'runs' mapping")
        order = sorted(entries, key=lambda n: (SUITE_ORDER.index(n) if n in SUITE_ORDER else 99, n))
        for name in order:
            sub = Path(entries[name])
            sub = sub if sub.is_absolute() else folder / sub
            try:
                runs.append(load_run(sub, name, rel=_relative(sub, folder)))
            except CompressError as e:
                top.setdefault("_problems", []).append(f"run `{name}`: {e.message}")
        if not runs:
            raise CompressError(f"none of the suite's runs in {folder} could be read")
        return top, runs
    if fmt.startswith("compress-run"):
        return top, [load_run(folder)]
    raise CompressError(f"{folder}/manifest.json is not a run or suite manifest (format {fmt!r})",
                        "pass a folder made by `compress unstructured|filter|all`")


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


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


def _dense_accuracy(top: dict, runs: list[RunData]) -> float | None:
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
    from . import plots

    figdir = folder / "figures"
    figs: dict[str, Path] = {}
    dense_acc = _dense_accuracy(top, runs)
    points = _model_points(runs)
    spec = runs[0].manifest.get("model", {})
    data = runs[0].manifest.get("dataset", {})
    if points and dense_acc is not None:
        figs["accuracy"] = plots.accuracy_vs_sparsity(
            points, dense_acc, figdir / "accuracy_vs_sparsity.png",
            title=f"{spec.get('name', '?')} (width {spec.get('width', 1):g}) on {data.get('name', '?')}: "
                  f"accuracy vs overall sparsity",
            note=_slim_note(runs), images=_split_sizes(runs)[1])
    for r in runs:
        shapes = _weight_shapes(r)
        if not shapes:
            continue
        layer = mask_layer or plots.default_mask_layer(shapes)
        if layer not in shapes:
            from .errors import did_you_mean

            raise CompressError(f"--layer {layer!r} is not a conv weight of the model", did_you_mean(layer, shapes))
        keep = _keep(r, layer)
        name = (r.manifest.get("result") or {}).get("path", r.name)
        figs[f"mask_{r.name}"] = plots.mask_figure(keep, figdir / f"mask_{r.name}.png", model=name.removesuffix(".pt"),
                                                   layer=layer, label=r.label)
    for kind in ("unstructured", "filter", "nm"):
        members = [r for r in runs if r.kind == kind and r.sparsity]
        if not members:
            continue
        layers = [dict(l, weights=_numel(l["shape"])) for l in members[0].sparsity["layers"]]
        series = {r.label: {l["name"]: l["sparsity"] for l in r.sparsity["layers"]} for r in members}
        colors = {r.label: plots.model_style(r.kind, r.method).color for r in members}
        blocks = _blocks(spec, members[0].sparsity.get("kind", kind))
        unit = "filters" if kind == "filter" else "weights"
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
        from .models import ModelSpec
        from .slim import example_input
        from .sweep import layer_blocks

        s = ModelSpec.from_dict(spec)
        return layer_blocks(s.build(), example_input(s), "filter" if kind == "filter" else "unstructured")
    except Exception:  # blocks only decorate the figure
        return None


# --------------------------------------------------------------------------- markdown
def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _acc(x) -> str:
    return "–" if x is None else f"{x:.2f}%"


def _table(header: list[str], rows: list[list], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _link(folder_rel: str, path: str) -> str:
    return f"{folder_rel}/{path}" if folder_rel else path


def _split_sizes(runs: list[RunData]) -> tuple[int | None, int | None]:
    """(validation images, test images) of the runs' data."""
    ds = runs[0].manifest.get("dataset", {}) if runs else {}
    return ds.get("val_images") or None, ds.get("test_images")


def _results_section(top: dict, runs: list[RunData], figs: dict) -> list[str]:
    dense_acc = _dense_accuracy(top, runs)
    n_val, n_test = _split_sizes(runs)
    dense_val = next((r.manifest.get("dense", {}).get("val_accuracy") for r in runs
                      if r.manifest.get("dense", {}).get("val_accuracy") is not None), None)
    rows = [["dense", "–", "0.00%", "–", with_ci(dense_val, n_val), with_ci(dense_acc, n_test), "–", "`dense.pt`"]]
    for r in runs:
        res = r.manifest.get("result") or {}
        if not r.complete:
            rows.append([r.label, r.kind, "–", "–", "–", f"unfinished (status {r.manifest.get('status', '?')})", "–", "–"])
            continue
        delta = res["accuracy"] - dense_acc if dense_acc is not None else None
        rows.append([r.label, r.kind, _pct(res["sparsity"]), _acc(res.get("acc_after_prune")),
                     with_ci(res.get("val_accuracy"), n_val), with_ci(res["accuracy"], n_test),
                     "–" if delta is None else f"{delta:+.2f}", f"`{_link(r.rel, res['path'])}`"])
    split = (f"Validation: {n_val} training images held out (seeded, per class); every choice the toolchain "
             f"makes reads them. Test: {n_test} images, reported here and read by nothing else."
             if n_val else "**No validation split** (`--val-split 0`): choices were made on the test split, so "
                           "the test accuracies below are optimistic.")
    out = ["## Accuracy and sparsity", "", split + " Brackets: 95% Wilson intervals.", "",
           _table(["model", "kind", "overall sparsity", "test accuracy right after pruning (round 1)",
                   "validation accuracy", "test accuracy after retraining", "Δ vs dense (points)", "file"], rows,
                  "llrrrrrl"), ""]
    kinds = sorted({r.kind for r in runs})
    out += [f"Sparsity definitions: " + "; ".join(f"**{k}**: {DEFINITIONS.get(k, k)}" for k in kinds) + ".", ""]
    if "accuracy" in figs:
        out += [f"![accuracy vs sparsity](figures/{figs['accuracy'].name})", ""]
    return out


def _confidence_section(runs: list[RunData]) -> list[str]:
    """Paired sentences on the test images: each model vs dense, then the assignment's pairs."""
    from .comparisons import correctness, one_seed, sentence

    found = correctness({r.name: r.manifest for r in runs if r.complete})
    results = one_seed(found) if len(found) > 1 else []
    if not results:
        return []
    n = results[0]["n"]
    return (["## How sure: paired comparisons on the test images", "",
             f"Two models scored on the same {n} test images differ only where they disagree; McNemar's exact test "
             "on those images gives the p-value, and the interval is that of the paired difference. One seed: "
             "the training noise between seeds is not in these intervals (see `--seeds`). "
             f"{len(results)} comparisons at the 5% level: about {len(results) / 20:.1f} 'better' verdicts are "
             "expected by chance alone (no correction for multiple comparisons is applied).", ""]
            + [f"- {sentence(r)}" for r in results] + [""] + _on_validation(runs))


def _on_validation(runs: list[RunData]) -> list[str]:
    """The same comparisons on the validation split: what to choose a recipe by."""
    from .comparisons import correctness, one_seed, sentence

    results = one_seed(correctness({r.name: r.manifest for r in runs if r.complete}, "val"))
    if not results:
        return []
    return (["To choose between these recipes for another run, compare them on the validation split (the test "
             "split above is the report; choosing by it would make its numbers optimistic):", ""]
            + [f"- validation: {sentence(r)}" for r in results] + [""])


def _rounds_section(runs: list[RunData]) -> list[str]:
    out = ["## Rounds: accuracy right after pruning vs after retraining", ""]
    for r in runs:
        rounds = r.manifest.get("rounds") or []
        if not rounds:
            continue
        job = r.job
        retrain = job.get("retrain", {})
        out += [f"**{r.label}** ({job.get('rounds', 1)} round{'s' if job.get('rounds', 1) != 1 else ''}, "
                f"{job.get('schedule', '')} schedule, rewind `{job.get('rewind', '')}`, criterion "
                f"`{job.get('criterion', 'magnitude')}`, {retrain.get('epochs', '?')} retraining epochs in all, "
                f"peak lr {retrain.get('lr', '?')})", ""]
        rows = [[k["round"], _pct(k.get("target")), _pct(k.get("sparsity")), _acc(k.get("acc_after_prune")),
                 _acc(k.get("acc_after_retrain")),
                 f"{k['acc_after_retrain'] - k['acc_after_prune']:+.2f}" if k.get("acc_after_prune") is not None else "–",
                 k.get("epochs", "–"), f"{k.get('seconds', 0):.0f}"] for k in rounds]
        out += [_table(["round", "target", "sparsity", "after pruning", "after retraining", "recovered (points)",
                        "epochs", "seconds"], rows), ""]
    return out


def _layers_section(runs: list[RunData], figs: dict) -> list[str]:
    out = ["## Per-layer sparsity", ""]
    for kind in ("unstructured", "filter", "nm"):
        members = [r for r in runs if r.kind == kind and r.sparsity]
        if not members:
            continue
        unit = "filters" if kind == "filter" else "weights"
        header = ["layer", "shape", f"{unit}"] + [r.label for r in members]
        rows = []
        for i, l in enumerate(members[0].sparsity["layers"]):
            row = [f"`{l['name']}`", "×".join(map(str, l["shape"])), f"{l['total']:,}"]
            for r in members:
                ls = r.sparsity["layers"]
                row.append(_pct(ls[i]["sparsity"]) if i < len(ls) else "–")
            rows.append(row)
        rows.append(["**overall**", "", f"{members[0].sparsity.get('total', 0):,}"] +
                     [f"**{_pct(r.sparsity.get('overall'))}**" for r in members])
        out += [f"### {kind} ({DEFINITIONS.get(kind, '')})", "", _table(header, rows, "llr" + "r" * len(members)), ""]
        if f"layers_{kind}" in figs:
            out += [f"![per-layer {kind} sparsity](figures/{figs[f'layers_{kind}'].name})", ""]
    missing = [r.label for r in runs if not r.sparsity]
    if missing:
        out += [f"No `sparsity.json` for: {', '.join(missing)} (the run did not finish).", ""]
    return out


def _masks_section(runs: list[RunData], figs: dict) -> list[str]:
    out = ["## Weight masks", "",
           "One conv layer per model, its 4-D weight reshaped to 2-D: a row per output filter, "
           "in_channels × kh × kw columns; dark = non-zero, light = zero.", ""]
    any_fig = False
    for r in runs:
        key = f"mask_{r.name}"
        if key in figs:
            out += [f"![mask of {r.label}](figures/{figs[key].name})", ""]
            any_fig = True
    if not any_fig:
        out += ["No result checkpoint could be read, so there are no mask figures.", ""]
    return out


def _all_zero_filters(run: RunData) -> tuple[int, int] | None:
    state = (run.result or {}).get("state_dict")
    if not state:
        return None
    zero = total = 0
    for k, w in state.items():
        if k.endswith("weight") and w.ndim == 4:
            zero += int((w.flatten(1).abs().sum(1) == 0).sum())
            total += w.shape[0]
    return zero, total


def _slim_section(runs: list[RunData]) -> list[str]:
    out = ["## Removing the pruned channels (slim) — the assignment's questions", ""]
    filt = [r for r in runs if r.kind == "filter"]
    for r in runs:
        if r.kind != "filter":
            z = _all_zero_filters(r)
            extra = (f": {z[0]} of {z[1]} conv filters are all zero, so "
                     f"{'there is nothing to remove' if z[0] == 0 else 'only those could be removed'}") if z else ""
            out += [f"- {r.label}: channel removal does not apply to {r.kind} pruning (zeros are scattered inside "
                    f"filters){extra}.", ""]
    with_slim = [r for r in filt if r.slim and "params" in r.slim]
    for r in filt:
        if r not in with_slim:
            out += [f"- {r.label}: the slim stage did not run (no `{_link(r.rel, 'slim/slim.json')}`); "
                    f"run `compress slim {_link(r.rel, r.manifest.get('result', {}).get('path', 'MODEL.pt'))}` "
                    "and this report again to answer the questions below with its numbers.", ""]
    if not with_slim:
        out += ["The four questions need a slimmed filter-pruned model; this folder has none, so they are not "
                "answered with measured numbers here.", ""]
        return out
    rows = []
    for r in with_slim:
        s = r.slim
        check = s.get("check") or {}
        rows.append([r.label, f"{s['params']['dense']:,} → {s['params']['slim']:,} ({s['params']['slim'] / s['params']['dense']:.3f}×)",
                     f"{s['macs']['dense']:,} → {s['macs']['slim']:,} ({s['macs']['slim'] / s['macs']['dense']:.3f}×)",
                     f"{_pct(s['filter_sparsity']['masked'])} → {_pct(s['filter_sparsity']['slim'])}",
                     f"{_pct(s['weight_sparsity']['masked'])} → {_pct(s['weight_sparsity']['slim'])}",
                     f"{_acc(check.get('acc_masked'))} → {_acc(check.get('acc_slim'))}",
                     f"{check.get('max_rel_diff', float('nan')):.1e}" if check else "–"])
    out += [_table(["model", "parameters dense → slim", "MACs / image dense → slim", "filter sparsity masked → slim",
                    "weight sparsity masked → slim", "test accuracy masked → slim", "max relative logit difference"],
                   rows), ""]
    r = with_slim[-1]
    s = r.slim
    check = s.get("check") or {}
    removed = s.get("filter_fraction_removed", 0)
    p = s["params"]
    cut = 1 - p["slim"] / p["dense"]
    arch = r.manifest.get("model", {}).get("name", "the model")
    out += [f"Answers from {r.label} ({arch}); the table has the same numbers for every slimmed model.", ""]
    out += [f"1. **How does sparsity change after removing the channels?** The pruned filters are gone, so the "
            f"slim model is dense again: filter sparsity {_pct(s['filter_sparsity']['masked'])} → "
            f"{_pct(s['filter_sparsity']['slim'])}, weight sparsity {_pct(s['weight_sparsity']['masked'])} → "
            f"{_pct(s['weight_sparsity']['slim'])}. What the sparsity was worth becomes size: "
            f"{s.get('filters_removed', '?')} filters ({100 * removed:.1f}%) removed cut the parameters by "
            f"{100 * cut:.1f}% and the MACs by {100 * (1 - s['macs']['slim'] / s['macs']['dense']):.1f}% — more than "
            f"the filter share, because each removed filter also removes the matching input channel of the next "
            f"layer (about 1 − (1 − s)² of a conv's weights when both of its sides lose a share s).", ""]
    if check:
        same = check.get("acc_masked") == check.get("acc_slim")
        out += [f"2. **Does accuracy go down, up or stay?** It stays: {_acc(check.get('acc_masked'))} masked vs "
                f"{_acc(check.get('acc_slim'))} slim on {check.get('images', '?')} test images"
                f"{'' if same else ' (they differ: see the check)'}, largest relative logit difference "
                f"{check.get('max_rel_diff', float('nan')):.1e}.", ""]
    else:
        out += ["2. **Does accuracy go down, up or stay?** The slim stage ran without data, so the accuracies were "
                "not compared here; by construction (see 3) they are equal.", ""]
    diff = f", hence the {check['max_rel_diff']:.1e} relative difference above" if check.get("max_rel_diff") is not None else ""
    out += ["3. **Why?** A pruned filter was masked together with its BatchNorm weight and bias, so its channel is "
            "exactly zero after BN and ReLU; the next layer's weights on that channel only ever multiply zeros. "
            "Removing the filter and those input weights computes the same function; only the order of float "
            f"additions changes{diff}. (Had the BN bias been left alive, the channel would "
            "carry the constant ReLU(β) and removing it would change the output, unless folded into the next "
            "layer's bias.)", ""]
    if arch.startswith("resnet"):
        out += [f"4. **Would the same hold for ResNet?** This run is a ResNet ({arch}), and it does: channels that "
                "meet at a residual addition were pruned as one group (Torch-Pruning's dependency graph), so every "
                "removed channel was zero in all the tensors being added.", ""]
    else:
        out += ["4. **Would the same hold for ResNet?** Yes, but only when pruning respects the residual coupling. "
                "In a ResNet the output channels of the convs whose results meet at an addition (the block's last "
                "conv, the shortcut or downsample conv, and every block of the stage) index the same tensor, so a "
                "channel can be removed only if it is zero in all of them. This toolchain finds those groups with "
                "Torch-Pruning's dependency graph and masks a channel in the whole group, so the slim ResNet equals "
                "the masked one here too; pruning each conv independently, as one would for VGG, would leave "
                "channels alive in one branch and zero in another, which cannot be removed without changing the "
                "sum. The coupling also takes freedom away: the convs of a group share one ratio (a ratio file that "
                "gives them different ones is refused), and the residual stream keeps a channel while any block of "
                "the stage still needs it.", ""]
    return out


def _deploy_section(folder: Path, top: dict, runs: list[RunData]) -> list[str]:
    out = ["## Size and latency", ""]
    exports = [(r, r.export) for r in runs if r.export]
    if exports:
        rows = []
        for r, e in exports:
            dense = e.get("dense_onnx_bytes")
            for m in e.get("models", []):
                size = m.get("bytes")
                rows.append([m.get("name", "?"), f"`{_link(r.rel, 'onnx/' + Path(str(m.get('onnx', ''))).name)}`",
                             m.get("kind") or m.get("format", "–"), f"{size / 1e6:.2f} MB" if size else "–",
                             f"{size / dense:.3f}×" if size and dense else "–",
                             f"{m['deflated_bytes'] / 1e6:.2f} MB" if m.get("deflated_bytes") else "–",
                             _parity(m.get("parity")), m.get("note") or ""])
        out += ["### ONNX export", "",
                _table(["model", "file", "kind", "size", "vs dense ONNX", "zipped", "parity with PyTorch", "note"], rows,
                       "lllrrrll"), ""]
        dense_bytes = next((e.get("dense_onnx_bytes") for _, e in exports if e.get("dense_onnx_bytes")), None)
        if dense_bytes:
            out += [f"Dense ONNX model: {dense_bytes / 1e6:.2f} MB (opset {exports[0][1].get('opset', '?')}).", ""]
    else:
        out += ["ONNX export: the export stage did not run (no `onnx/export.json`).", ""]
    out += _int8_section(runs)
    benches = [(r.rel, r.bench) for r in runs if r.bench]
    suite_bench = read_json(folder / "bench" / "bench.json") if len(runs) > 1 or folder != runs[0].path else None
    if suite_bench:
        benches.insert(0, ("", suite_bench))
    if benches:
        for rel, b in benches:
            rows, skipped = [], {}
            for res in b.get("results", []):
                if res.get("status", "ok") != "ok":  # one line per runtime and reason, not a row per cell
                    skipped.setdefault((res.get("runtime", "?"), res.get("reason") or res.get("status")), set()).add(
                        res.get("model", "?"))
                    continue
                sp = res.get("speedup_vs_dense")
                speed = f"{sp:.2f}×" if isinstance(sp, (int, float)) else "–"
                if isinstance(res.get("speedup_vs_dense_fp32"), (int, float)):  # INT8: against fp32 too
                    speed += f" (vs dense fp32 {res['speedup_vs_dense_fp32']:.2f}×, vs own fp32 {res['speedup_vs_fp32']:.2f}×)"
                rows.append([res.get("model", "?"), res.get("runtime", "?"), res.get("batch_size", "–"),
                             _num(res.get("median_ms"), ".3f"), _num(res.get("p90_ms"), ".3f"),
                             _num(res.get("images_per_s"), ",.0f"), speed])
            where = f" ({rel})" if rel else ""
            out += [f"### Latency{where}", ""]
            machine = b.get("machine") or {}
            settings = b.get("settings") or {}
            if machine:
                out += [f"Measured on {machine.get('cpu', '?')}" + (f", GPU {machine['gpu']}" if machine.get("gpu") else "") +
                        (f", {machine.get('torch_threads')} torch threads" if machine.get("torch_threads") else "") +
                        (f"; settings: {', '.join(f'{k}={_short(v)}' for k, v in settings.items() if k in BENCH_SETTINGS and v is not None)}"
                         if settings else "") + ".", ""]
            models = b.get("models") or []
            if models:
                mrows = [[m.get("name", "?"), m.get("kind", "–"), f"{m['params']:,}" if isinstance(m.get("params"), int) else "–",
                          f"{m['macs']:,}" if isinstance(m.get("macs"), int) else "–",
                          f"{m['checkpoint_bytes'] / 1e6:.2f} MB" if m.get("checkpoint_bytes") else "–",
                          f"{m['onnx_bytes'] / 1e6:.2f} MB" if m.get("onnx_bytes") else "–"] for m in models]
                out += [_table(["model", "kind", "parameters", "MACs / image", "checkpoint", "ONNX"], mrows), ""]
            if rows:
                out += [_table(["model", "runtime", "batch", "median ms", "p90 ms", "images/s", "speed-up vs dense"],
                               rows, "llrrrrr"), ""]
            for (runtime, reason), models_ in skipped.items():
                out.append(f"- {runtime}: not measured ({reason})")
            if skipped:
                out.append("")
            png = f"{rel}/bench/bench.png" if rel else "bench/bench.png"
            if (folder / png).is_file():
                out += [f"![latency]({png})", ""]
    else:
        out += ["Latency: the bench stage did not run (no `bench/bench.json`).", ""]
    return out


def _int8_section(runs: list[RunData]) -> list[str]:
    """fp32 vs INT8 per exported model (the quantize stage's onnx/quantize.json)."""
    rows, failed, docs = [], [], []
    for r in runs:
        q = read_json(r.path / "onnx" / "quantize.json")
        if not q:
            continue
        docs.append(q)
        failed += q.get("failed", [])
        for m in q.get("models", []):
            gate = m.get("gate") or {"split": "test", "drop": m["drop"]}
            rows.append([f"`{_link(r.rel, 'onnx/' + Path(m['int8']).name)}`", f"{m['fp32_acc']:.2f}%", f"{m['int8_acc']:.2f}%",
                         f"{-m['drop'] + 0.0:+.2f}", f"{-gate['drop'] + 0.0:+.2f} ({gate['split']})",
                         f"{100 * m['agreement']:.2f}%", f"{m['int8_bytes'] / 1e6:.2f} MB",
                         f"{m['int8_bytes'] / m['fp32_bytes']:.3f}×"])
    if not rows and not failed:
        return []
    m0 = (docs[0].get("models") or [{}])[0]
    out = ["### INT8 (ONNX Runtime static quantization)", "",
           f"QDQ, S8S8, {'per-channel' if m0.get('per_channel', True) else 'per-tensor'} weights, "
           f"{m0.get('method', 'minmax')} calibration on {m0.get('calibration_images', '?')} training images; both "
           f"models evaluated in ONNX Runtime on all {m0.get('test_images', '?')} test images.", ""]
    if rows:
        out += [_table(["INT8 file", "fp32 top-1", "INT8 top-1", "INT8 − fp32", "INT8 − fp32 read by the --max-drop gate",
                        "same prediction", "size", "vs fp32 file"], rows, "lrrrrrrr"), ""]
    out += [f"- **failed:** {f}" for f in failed] + ([""] if failed else [])
    return out


BENCH_SETTINGS = ("device", "batch_sizes", "threads", "repeats", "budget_s", "blocks")


def _short(v) -> str:
    return ", ".join(map(str, v)) if isinstance(v, list) else str(v)


def _parity(p) -> str:
    """ONNX Runtime vs PyTorch logits, as export.json records them (a kept file passed its check)."""
    if not isinstance(p, dict) or not p:
        return "–"
    rel, tol = p.get("max_rel_diff"), p.get("tolerance")
    if not isinstance(rel, (int, float)):
        return "checked"
    verdict = "ok" if not isinstance(tol, (int, float)) or rel <= tol else "FAILED"
    agree = p.get("argmax_agreement")
    return (f"{verdict}: max relative difference {rel:.1e}" + (f" ≤ {tol:g}" if isinstance(tol, (int, float)) else "") +
            (f" on {p['images']} images" if p.get("images") else "") +
            (f", same class for {100 * agree:.0f}%" if isinstance(agree, (int, float)) else ""))


def _num(x, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) else "–"


def _imported_section(runs: list[RunData]) -> list[str]:
    """Where a user's own weights came from, how they scored before pruning, and any warning."""
    imported = runs[0].manifest.get("imported")
    if not imported:
        return []
    m = runs[0].manifest
    ds = m.get("dataset", {})
    out = ["## Your model", "",
           f"- source: `{m.get('model', {}).get('name', '?')}`"
           + (f" with arguments `{m['model']['args']}`" if m.get("model", {}).get("args") else ""),
           f"- weights: `{imported.get('path', '?')}`: {imported.get('summary', '')}",
           f"- imported model: {_acc(m.get('dense', {}).get('accuracy'))} on {ds.get('test_images', '?')} test images "
           "(evaluated before pruning)",
           f"- input contract: {ds.get('image_size', '?')} px, pixels / 255, mean {ds.get('mean')}, std {ds.get('std')} "
           "(also in the ONNX files' metadata)"]
    if imported.get("trust_pickle"):
        out.append("- **loaded by unpickling a whole module (`--trust-pickle`)**: code from the file ran")
    if imported.get("accuracy_warning"):
        warning = imported["accuracy_warning"].replace("[bold red]", "**").replace("[/bold red]", "**")
        out += ["", f"> **Warning:** {warning}"]
    return out + [""]


def _plan_section(runs: list[RunData]) -> list[str]:
    """A run pruned for a measured speed-up: target, prediction and the measurements side by side."""
    out = []
    for run in runs:
        plan = run.manifest.get("plan")
        if not plan:
            continue
        final = final_speedup(plan, run.bench)
        files = ", ".join(f"`{_link(run.rel, f)}`" for f in plan.get("files", []))
        out += [f"Layer ratios chosen for a speed-up measured on {plan['runtime']} at batch {plan['batch']} "
                f"(`--speedup`; the plan: {files}):", "",
                _table(["target", "predicted (latency model)", "measured when planned", "measured in this run's benchmark"],
                       [[f"{plan['target_speedup']:.2f}×", f"{plan['predicted_speedup']:.2f}×",
                         f"{plan['measured_speedup']:.2f}×", f"{final[0]:.2f}×" if final else "not measured"]], "rrrr"), ""]
    return (["## Speed-up target", ""] + out) if out else []


def _environment_section(top: dict, runs: list[RunData]) -> list[str]:
    m = runs[0].manifest
    versions = top.get("versions") or m.get("versions") or {}
    ds = m.get("dataset", {})
    spec = m.get("model", {})
    dense = m.get("dense", {})
    out = ["## Environment", "",
           f"- model: `{spec.get('name', '?')}` width {spec.get('width', '?')}, {spec.get('num_classes', '?')} classes, "
           f"{spec.get('image_size', '?')}×{spec.get('image_size', '?')} input",
           f"- data: {ds.get('name', '?')} ({ds.get('train_images', '?')} train / {ds.get('test_images', '?')} test "
           f"images, fingerprint `{ds.get('fingerprint', '?')}`)",
           f"- dense baseline: `{dense.get('path') or 'dense.pt'}`, {_acc(dense.get('accuracy'))}"
           + (f" after {dense['meta_epochs']} epochs" if dense.get("meta_epochs") else ""),
           f"- device: {top.get('device') or m.get('device', '?')}",
           "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())]
    for r in runs:
        if r.bench and r.bench.get("machine"):
            mc = r.bench["machine"]
            out.append(f"- machine (from the benchmark): {mc.get('cpu', '?')}, {mc.get('cpu_count', '?')} CPUs"
                       + (f", GPU {mc['gpu']}" if mc.get("gpu") else ""))
            break
    started = [r.manifest.get("started") for r in runs if r.manifest.get("started")]
    finished = [r.manifest.get("finished") for r in runs if r.manifest.get("finished")]
    if started:
        out.append(f"- runs started {min(started)}" + (f", last finished {max(finished)}" if finished else ""))
    return out + [""]


def _commands_section(folder: Path, top: dict, runs: list[RunData]) -> list[str]:
    out = ["## Commands", ""]
    found = False
    if _argv(top.get("command")):
        out += ["```", _argv(top["command"]), "```", ""]
        found = True
    shown = {_argv(top.get("command"))}
    for r in runs:
        cmd = _argv(r.manifest.get("command"))
        if cmd and cmd not in shown:
            out += [f"{r.label}:", "", "```", cmd, "```", ""]
            shown.add(cmd)
            found = True
    if not found:
        out += ["The manifests do not record the command lines that made them.", ""]
    out += [f"This report: `{shlex.join(['compress', 'report', str(folder)])}`", ""]
    return out


def _argv(cmd) -> str | None:
    if isinstance(cmd, list) and all(isinstance(c, str) for c in cmd):
        return shlex.join(cmd)
    if isinstance(cmd, str):
        return cmd
    return None


def write_report(run_dir: Path, *, mask_layer: str | None = None) -> Path:
    """Gather a run or suite folder into `report.md` with PNGs in `figures/`; returns the report's path."""
    folder = Path(run_dir)
    top, runs = load_runs(folder)
    figs = make_figures(folder, top, runs, mask_layer)
    spec = runs[0].manifest.get("model", {})
    ds = runs[0].manifest.get("dataset", {})
    name = label(spec.get("name", "?"))  # a user's file source is named in full under "Your model"
    title = (f"# Pruning report: {name} (width {spec.get('width', 1):g}) on {ds.get('name', '?')}"
             if len(runs) > 1 else f"# Pruning report: {runs[0].label}, {name} "
                                   f"(width {spec.get('width', 1):g}) on {ds.get('name', '?')}")
    lines = [title, "",
             f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `compress report` from `{folder}` "
             f"({len(runs)} run{'s' if len(runs) != 1 else ''}).", ""]
    problems = list(top.get("_problems", [])) + [f"{r.label}: {p}" for r in runs for p in r.problems]
    if problems:
        lines += ["> **Incomplete inputs:** " + "; ".join(problems), ""]
    if ds.get("name", "").endswith("sample"):
        lines += ["> Trained and tested on the bundled CIFAR-10 sample: accuracies are not comparable with full "
                  "CIFAR-10 results.", ""]
    lines += _imported_section(runs)
    lines += _plan_section(runs)
    lines += _results_section(top, runs, figs)
    lines += _confidence_section(runs)
    lines += _rounds_section(runs)
    lines += _layers_section(runs, figs)
    lines += _masks_section(runs, figs)
    lines += _slim_section(runs)
    lines += _deploy_section(folder, top, runs)
    lines += _sweeps_section(folder, runs)
    lines += _environment_section(top, runs)
    lines += _commands_section(folder, top, runs)
    text = "\n".join(lines).rstrip() + "\n"
    return atomic_write(folder / "report.md", lambda tmp: tmp.write_text(text))


def _sweeps_section(folder: Path, runs: list[RunData]) -> list[str]:
    """Sweeps and sensitivity analyses saved inside the folder (e.g. with --out RUN/sweep)."""
    out = []
    for path in sorted(folder.rglob("sweep.json")):
        doc = read_json(path)
        if not doc or doc.get("format") != "compress-sweep/1":
            continue
        rel = _relative(path.parent, folder)
        rows = []
        ev = doc.get("evaluator", {})
        on = "validation" if ev.get("split") == "val" else "test"
        for c, t in (doc.get("tradeoffs") or {}).items():
            chosen = (_pct(t["sparsity"]) + (" (knee)" if t.get("by") == "knee" else "")) if t else "none"
            rows.append([c, chosen, with_ci(t["accuracy"], ev.get("images")) if t else "–",
                         f"{-t['drop']:+.2f}" if t else "–",
                         with_ci(t.get("test_accuracy"), ev.get("test_images")) if t else "–"])
        out += [f"### Sweep `{rel}`: one-shot {doc.get('kind')} pruning, {doc.get('grid', {}).get('points', '?')} points, "
                f"dense {_acc(doc.get('dense_accuracy'))} ({on})", "",
                f"Trade-off rule: {doc.get('rule', '')}; chosen on the {on} split.", "",
                _table(["criterion", "trade-off sparsity", f"{on} accuracy", "Δ vs dense", "test accuracy (reported)"],
                       rows), "",
                f"![sweep]({rel}/sweep.png)", "", f"![trade-off layers]({rel}/tradeoff_layers.png)", ""]
    for path in sorted(folder.rglob("sensitivity.json")):
        doc = read_json(path)
        if not doc or doc.get("format") != "compress-sensitivity/1":
            continue
        rel = _relative(path.parent, folder)
        p = doc.get("proposal", {})
        out += [f"### Sensitivity `{rel}` ({doc.get('kind')})", "",
                f"Proposed ratios reach {_pct(p.get('planned_sparsity'))}; predicted drop before retraining "
                f"{p.get('predicted_drop', '?')} points vs {p.get('uniform_predicted_drop', '?')} for uniform "
                f"ratios (`{rel}/proposed.yaml`).", "", f"![sensitivity]({rel}/sensitivity.png)", ""]
    return (["## Sweeps and sensitivity", ""] + out) if out else []

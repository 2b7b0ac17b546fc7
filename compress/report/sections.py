"""The report's sections on accuracy: results, confidence, rounds, layers and masks."""
from __future__ import annotations

from compress.analysis.comparisons import correctness, one_seed, sentence
from compress.console import counted
from compress.kinds import Kind
from compress.prune.schedule import teacher_summary
from compress.prune.sparsity import DEFINITIONS
from compress.report.figures import dense_accuracy
from compress.report.markdown import fmt_acc, fmt_pct, link, md_table, split_sizes
from compress.report.runs import RunData
from compress.stats import with_ci


def results_section(top: dict, runs: list[RunData], figs: dict) -> list[str]:
    dense_acc = dense_accuracy(top, runs)
    n_val, n_test = split_sizes(runs)
    dense_val = next((r.manifest.get("dense", {}).get("val_accuracy") for r in runs
                      if r.manifest.get("dense", {}).get("val_accuracy") is not None), None)
    rows = [["dense", "–", "0.00%", "–", with_ci(dense_val, n_val), with_ci(dense_acc, n_test), "–", "`dense.pt`"]]
    for r in runs:
        res = r.manifest.get("result") or {}
        if not r.complete:
            rows.append([r.label, r.kind, "–", "–", "–", f"unfinished (status {r.manifest.get('status', '?')})", "–", "–"])
            continue
        delta = res["accuracy"] - dense_acc if dense_acc is not None else None
        rows.append([r.label, r.kind, fmt_pct(res["sparsity"]), fmt_acc(res.get("acc_after_prune")),
                     with_ci(res.get("val_accuracy"), n_val), with_ci(res["accuracy"], n_test),
                     "–" if delta is None else f"{delta:+.2f}", f"`{link(r.rel, res['path'])}`"])
    split = (f"Validation: {n_val} training images held out (seeded, per class); every choice the toolchain "
             f"makes reads them. Test: {n_test} images, reported here and read by nothing else."
             if n_val else "**No validation split** (`--val-split 0`): choices were made on the test split, so "
                           "the test accuracies below are optimistic.")
    out = ["## Accuracy and sparsity", "", split + " Brackets: 95% Wilson intervals.", "",
           md_table(["model", "kind", "overall sparsity", "test accuracy right after pruning (round 1)",
                   "validation accuracy", "test accuracy after retraining", "Δ vs dense (points)", "file"], rows,
                  "llrrrrrl"), ""]
    kinds = sorted({r.kind for r in runs})
    out += ["Sparsity definitions: " + "; ".join(f"**{k}**: {DEFINITIONS.get(k, k)}" for k in kinds) + ".", ""]
    if "accuracy" in figs:
        out += [f"![accuracy vs sparsity](figures/{figs['accuracy'].name})", ""]
    return out


def confidence_section(runs: list[RunData]) -> list[str]:
    """Paired sentences on the test images: each model vs dense, then the assignment's pairs."""
    found = correctness({r.name: r.manifest for r in runs if r.complete})
    results = one_seed(found) if len(found) > 1 else []
    if not results:
        return []
    n = results[0]["n"]
    return (["## How sure: paired comparisons on the test images", "",
             f"Two models scored on the same {n} test images differ only where they disagree; McNemar's exact test "
             "on those images gives the p-value, and the interval is that of the paired difference. One seed: "
             "the training noise between seeds is not in these intervals (see `--seeds`). "
             f"{counted(len(results), 'comparison')} at the 5% level: about {len(results) / 20:.1f} 'better' verdicts are "
             "expected by chance alone (no correction for multiple comparisons is applied).", ""]
            + [f"- {sentence(r)}" for r in results] + [""] + _on_validation(runs))


def _on_validation(runs: list[RunData]) -> list[str]:
    """The same comparisons on the validation split: what to choose a recipe by."""
    results = one_seed(correctness({r.name: r.manifest for r in runs if r.complete}, "val"))
    if not results:
        return []
    return (["To choose between these recipes for another run, compare them on the validation split (the test "
             "split above is the report; choosing by it would make its numbers optimistic):", ""]
            + [f"- validation: {sentence(r)}" for r in results] + [""])


def rounds_section(runs: list[RunData]) -> list[str]:
    out = ["## Rounds: accuracy right after pruning vs after retraining", ""]
    for r in runs:
        rounds = r.manifest.get("rounds") or []
        if not rounds:
            continue
        job = r.job
        retrain = job.get("retrain", {})
        out += [f"**{r.label}** ({counted(job.get('rounds', 1), 'round')}, "
                f"{job.get('schedule', '')} schedule, rewind `{job.get('rewind', '')}`, criterion "
                f"`{job.get('criterion', 'magnitude')}`, {counted(retrain.get('epochs', '?'), 'retraining epoch')} in all, "
                f"peak lr {retrain.get('lr', '?')}{_distilled(r.manifest.get('distill'))})", ""]
        rows = [[k["round"], fmt_pct(k.get("target")), fmt_pct(k.get("sparsity")), fmt_acc(k.get("acc_after_prune")),
                 fmt_acc(k.get("acc_after_retrain")),
                 f"{k['acc_after_retrain'] - k['acc_after_prune']:+.2f}" if k.get("acc_after_prune") is not None else "–",
                 k.get("epochs", "–"), f"{k.get('seconds', 0):.0f}"] for k in rounds]
        out += [md_table(["round", "target", "sparsity", "after pruning", "after retraining", "recovered (points)",
                        "epochs", "seconds"], rows), ""]
    return out


def _distilled(d: dict | None) -> str:
    """The retraining's distillation, in a few words ('' without it)."""
    if not d:
        return ""
    return (f"; distilled from {d.get('teacher') or 'the dense model'} ({teacher_summary(d)}), "
            f"alpha {d['alpha']:g}, temperature {d['temperature']:g}")


def layers_section(runs: list[RunData], figs: dict) -> list[str]:
    out = ["## Per-layer sparsity", ""]
    for kind in (Kind.UNSTRUCTURED, Kind.FILTER, Kind.NM):
        members = [r for r in runs if r.kind == kind and r.sparsity]
        if not members:
            continue
        unit = "filters" if kind == Kind.FILTER else "weights"
        header = ["layer", "shape", f"{unit}"] + [r.label for r in members]
        rows = []
        for i, l in enumerate(members[0].sparsity["layers"]):
            row = [f"`{l['name']}`", "×".join(map(str, l["shape"])), f"{l['total']:,}"]
            for r in members:
                ls = r.sparsity["layers"]
                row.append(fmt_pct(ls[i]["sparsity"]) if i < len(ls) else "–")
            rows.append(row)
        rows.append(["**overall**", "", f"{members[0].sparsity.get('total', 0):,}"] +
                     [f"**{fmt_pct(r.sparsity.get('overall'))}**" for r in members])
        out += [f"### {kind} ({DEFINITIONS.get(kind, '')})", "", md_table(header, rows, "llr" + "r" * len(members)), ""]
        if f"layers_{kind}" in figs:
            out += [f"![per-layer {kind} sparsity](figures/{figs[f'layers_{kind}'].name})", ""]
    missing = [r.label for r in runs if not r.sparsity]
    if missing:
        out += [f"No `sparsity.json` for: {', '.join(missing)} (the run did not finish).", ""]
    return out


def masks_section(runs: list[RunData], figs: dict) -> list[str]:
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


def all_zero_filters(run: RunData) -> tuple[int, int] | None:
    state = (run.result or {}).get("state_dict")
    if not state:
        return None
    zero = total = 0
    for k, w in state.items():
        if k.endswith("weight") and w.ndim == 4:
            zero += int((w.flatten(1).abs().sum(1) == 0).sum())
            total += w.shape[0]
    return zero, total

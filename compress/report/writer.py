"""One Markdown report from a run folder (or a suite of four runs), with its figures.

Everything is read from files the stages wrote: manifest.json, the result checkpoint,
sparsity.json, slim/slim.json, onnx/export.json, bench/bench.json. A stage that did not run
is one line in the report, never a failure; the report is written atomically.
"""
from __future__ import annotations

import datetime
import shlex
from pathlib import Path

from compress.console import counted
from compress.io import atomic_write
from compress.models.sources import label
from compress.report.deploy import deploy_section, imported_section, plan_section
from compress.report.figures import make_figures
from compress.report.markdown import fmt_acc, fmt_pct, md_table
from compress.report.questions import questions_section
from compress.report.runs import RunData, failed_stages, load_runs, read_json, relative
from compress.report.sections import confidence_section, layers_section, masks_section, results_section, rounds_section
from compress.stats import with_ci


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
           f"- dense baseline: `{dense.get('path') or 'dense.pt'}`, {fmt_acc(dense.get('accuracy'))}"
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
             f"({counted(len(runs), 'run')}).", ""]
    problems = list(top.get("_problems", [])) + [f"{r.label}: {p}" for r in runs for p in r.problems]
    if problems:
        lines += ["> **Incomplete inputs:** " + "; ".join(problems), ""]
    failed = [f"{stage}: {error}" for stage, error in failed_stages(top).items()]
    failed += [f"{r.label}, {stage}: {error}" for r in runs for stage, error in r.failed.items()]
    if failed:
        lines += ["> **Failed stages** (tried and broke; the run's exit code was non-zero): " + "; ".join(failed), ""]
    if ds.get("name", "").endswith("sample"):
        lines += ["> Trained and tested on the bundled CIFAR-10 sample: accuracies are not comparable with full "
                  "CIFAR-10 results.", ""]
    lines += imported_section(runs)
    lines += plan_section(runs)
    lines += results_section(top, runs, figs)
    lines += confidence_section(runs)
    lines += rounds_section(runs)
    lines += layers_section(runs, figs)
    lines += masks_section(runs, figs)
    lines += questions_section(runs)
    lines += deploy_section(folder, top, runs)
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
        rel = relative(path.parent, folder)
        rows = []
        ev = doc.get("evaluator", {})
        on = "validation" if ev.get("split") == "val" else "test"
        for c, t in (doc.get("tradeoffs") or {}).items():
            chosen = (fmt_pct(t["sparsity"]) + (" (knee)" if t.get("by") == "knee" else "")) if t else "none"
            rows.append([c, chosen, with_ci(t["accuracy"], ev.get("images")) if t else "–",
                         f"{-t['drop']:+.2f}" if t else "–",
                         with_ci(t.get("test_accuracy"), ev.get("test_images")) if t else "–"])
        out += [f"### Sweep `{rel}`: one-shot {doc.get('kind')} pruning, {doc.get('grid', {}).get('points', '?')} points, "
                f"dense {fmt_acc(doc.get('dense_accuracy'))} ({on})", "",
                f"Trade-off rule: {doc.get('rule', '')}; chosen on the {on} split.", "",
                md_table(["criterion", "trade-off sparsity", f"{on} accuracy", "Δ vs dense", "test accuracy (reported)"],
                       rows), "",
                f"![sweep]({rel}/sweep.png)", "", f"![trade-off layers]({rel}/tradeoff_layers.png)", ""]
    for path in sorted(folder.rglob("sensitivity.json")):
        doc = read_json(path)
        if not doc or doc.get("format") != "compress-sensitivity/1":
            continue
        rel = relative(path.parent, folder)
        p = doc.get("proposal", {})
        out += [f"### Sensitivity `{rel}` ({doc.get('kind')})", "",
                f"Proposed ratios reach {fmt_pct(p.get('planned_sparsity'))}; predicted drop before retraining "
                f"{p.get('predicted_drop', '?')} points vs {p.get('uniform_predicted_drop', '?')} for uniform "
                f"ratios (`{rel}/proposed.yaml`).", "", f"![sensitivity]({rel}/sensitivity.png)", ""]
    return (["## Sweeps and sensitivity", ""] + out) if out else []

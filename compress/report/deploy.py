"""The report's sections on deployment: ONNX sizes, latency, INT8, imported models and latency plans."""
from __future__ import annotations

from pathlib import Path

from compress.analysis.planner import final_speedup
from compress.export.tables import human_size
from compress.report.markdown import fmt_acc, link, md_table
from compress.report.runs import RunData, failed_stages, read_json


def deploy_section(folder: Path, top: dict, runs: list[RunData]) -> list[str]:
    out = ["## Size and latency", ""]
    out += _export_lines(runs)
    out += _int8_section(runs)
    benches = [(r.rel, r.bench) for r in runs if r.bench]
    suite_bench = read_json(folder / "bench" / "bench.json") if len(runs) > 1 or folder != runs[0].path else None
    if suite_bench:
        benches.insert(0, ("", suite_bench))
    for rel, b in benches:
        out += _bench_lines(folder, rel, b)
    if not benches:
        error = failed_stages(top).get("bench") or next((r.failed["bench"] for r in runs if "bench" in r.failed), None)
        out += [f"Latency: **the bench stage failed**: {error}." if error else
                "Latency: the bench stage did not run (no `bench/bench.json`).", ""]
    return out


def _export_lines(runs: list[RunData]) -> list[str]:
    """The ONNX files of every run: size against the dense ONNX, zipped size, parity."""
    out = []
    exports = [(r, r.export) for r in runs if r.export]
    if exports:
        rows = []
        for r, e in exports:
            dense = e.get("dense_onnx_bytes")
            for m in e.get("models", []):
                size = m.get("bytes")
                rows.append([m.get("name", "?"), f"`{link(r.rel, 'onnx/' + Path(str(m.get('onnx', ''))).name)}`",
                             m.get("kind") or m.get("format", "–"), human_size(size) if size else "–",
                             f"{size / dense:.3f}×" if size and dense else "–",
                             human_size(m["deflated_bytes"]) if m.get("deflated_bytes") else "–",
                             _parity(m.get("parity")), m.get("note") or ""])
        out += ["### ONNX export", "",
                md_table(["model", "file", "kind", "size", "vs dense ONNX", "zipped", "parity with PyTorch", "note"], rows,
                       "lllrrrll"), ""]
        dense_bytes = next((e.get("dense_onnx_bytes") for _, e in exports if e.get("dense_onnx_bytes")), None)
        if dense_bytes:
            out += [f"Dense ONNX model: {human_size(dense_bytes)} (opset {exports[0][1].get('opset', '?')}).", ""]
    else:
        error = next((r.failed["export"] for r in runs if "export" in r.failed), None)
        out += [f"ONNX export: **the export stage failed**: {error}." if error else
                "ONNX export: the export stage did not run (no `onnx/export.json`).", ""]
    return out


def _bench_lines(folder: Path, rel: str, b: dict) -> list[str]:
    """One bench.json: the machine and settings, the models, latency per runtime and batch, what
    was not measured and why, and the figure."""
    out = []
    rows, skipped = [], {}
    for res in b.get("results", []):
        if res.get("status", "ok") != "ok":  # one line per runtime and reason, not a row per cell
            skipped.setdefault((res.get("runtime", "?"), res.get("status", "skipped"), res.get("reason") or "?"),
                               set()).add(res.get("model", "?"))
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
                  human_size(m["checkpoint_bytes"]) if m.get("checkpoint_bytes") else "–",
                  human_size(m["onnx_bytes"]) if m.get("onnx_bytes") else "–"] for m in models]
        out += [md_table(["model", "kind", "parameters", "MACs / image", "checkpoint", "ONNX"], mrows), ""]
    if rows:
        out += [md_table(["model", "runtime", "batch", "median ms", "p90 ms", "images/s", "speed-up vs dense"],
                       rows, "llrrrrr"), ""]
    for (runtime, status, reason), models_ in skipped.items():
        out.append(f"- {runtime}: **failed** ({reason})" if status == "failed" else f"- {runtime}: not measured ({reason})")
    if skipped:
        out.append("")
    ship = [f for f in b.get("fastest") or [] if f["model"] != (models[0].get("name") if models else None)] \
        or b.get("fastest") or []
    if ship:
        out += ["**Fastest way to ship on this machine** (per batch size, the fastest runtime × precision "
                "measured; speed-up over the dense model in fp32):", ""]
        for f in ship:
            file = {"int8": "its INT8 file (`onnx/*.int8.onnx` for ONNX Runtime; `compress quantize --runtime "
                            "openvino` for OpenVINO)", "bf16": "its fp32 ONNX or OpenVINO IR, run in bf16"}.get(
                f["precision"], "its fp32 ONNX (or OpenVINO IR)")
            out.append(f"- batch {f['batch_size']}: **{f['model']} on {f['runtime']}** ({f['precision']}), "
                       f"{f['median_ms']:.2f} ms" + (f", {f['speedup']:.2f}× {f['reference']}" if f.get("speedup") else "")
                       + f"; ship {file}")
        out.append("")
    png = f"{rel}/bench/bench.png" if rel else "bench/bench.png"
    if (folder / png).is_file():
        out += [f"![latency]({png})", ""]
    return out


def _int8_section(runs: list[RunData]) -> list[str]:
    """fp32 vs INT8 per exported model (the quantize stage's onnx/quantize.json)."""
    rows, failed, docs, searched = [], [], [], []
    for r in runs:
        q = read_json(r.path / "onnx" / "quantize.json")
        if not q:
            continue
        docs.append(q)
        failed += q.get("failed", [])
        for m in q.get("models", []):
            gate = m.get("gate") or {"split": "test", "drop": m["drop"]}
            rows.append([f"`{link(r.rel, 'onnx/' + Path(m['int8']).name)}`", f"{m['fp32_acc']:.2f}%", f"{m['int8_acc']:.2f}%",
                         f"{-m['drop'] + 0.0:+.2f}", f"{-gate['drop'] + 0.0:+.2f} ({gate['split']})",
                         f"{100 * m['agreement']:.2f}%", human_size(m["int8_bytes"]),
                         f"{m['int8_bytes'] / m['fp32_bytes']:.3f}×",
                         f"{m['speedup']:.2f}×" if m.get("speedup") else "–", m.get("shipped") or "–"])
            if len(m.get("attempts", [])) > 1:  # the accuracy-aware search ran: every attempt, in order
                searched += [[f"`{Path(m['int8']).name}`", a["attempt"], f"{-a['drop'] + 0.0:+.2f} ({gate['split']})",
                              f"{a['speedup']:.2f}×" if a.get("speedup") else "–",
                              "yes" if a["within_gate"] else "no"] for a in m["attempts"]]
    if not rows and not failed:
        return []
    m0 = (docs[0].get("models") or [{}])[0]
    out = ["### INT8 (ONNX Runtime static quantization)", "",
           f"QDQ, S8S8, {'per-channel' if m0.get('per_channel', True) else 'per-tensor'} weights, "
           f"{m0.get('method', 'minmax')} calibration on {m0.get('calibration_images', '?')} training images; both "
           f"models evaluated in ONNX Runtime on all {m0.get('test_images', '?')} test images.", ""]
    if rows:
        out += [md_table(["INT8 file", "fp32 top-1", "INT8 top-1", "INT8 − fp32", "INT8 − fp32 read by the --max-drop gate",
                        "same prediction", "size", "vs fp32 file", "speed-up vs fp32", "made by"], rows,
                         "lrrrrrrrrl"), ""]
    if searched:
        out += ["Accuracy-aware search (static quantization lost more than the gate allows; the fastest attempt "
                "within the gate is shipped; speed-up: ONNX Runtime CPU, batch 64, fp32 time / INT8 time):", "",
                md_table(["INT8 file", "attempt", "INT8 − fp32", "speed-up", "within gate"], searched, "llrrl"), ""]
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


def imported_section(runs: list[RunData]) -> list[str]:
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
           f"- imported model: {fmt_acc(m.get('dense', {}).get('accuracy'))} on {ds.get('test_images', '?')} test images "
           "(evaluated before pruning)",
           f"- input contract: {ds.get('image_size', '?')} px, pixels / 255, mean {ds.get('mean')}, std {ds.get('std')} "
           "(also in the ONNX files' metadata)"]
    if imported.get("trust_pickle"):
        out.append("- **loaded by unpickling a whole module (`--trust-pickle`)**: code from the file ran")
    if imported.get("accuracy_warning"):
        warning = imported["accuracy_warning"].replace("[bold red]", "**").replace("[/bold red]", "**")
        out += ["", f"> **Warning:** {warning}"]
    if imported.get("validation_warning"):
        out += ["", f"> **Note:** {imported['validation_warning']}"]
    return out + [""]


def plan_section(runs: list[RunData]) -> list[str]:
    """A run pruned for a measured speed-up: target, prediction and the measurements side by side."""
    out = []
    for run in runs:
        plan = run.manifest.get("plan")
        if not plan:
            continue
        final = final_speedup(plan, run.bench)
        files = ", ".join(f"`{link(run.rel, f)}`" for f in plan.get("files", []))
        out += [f"Layer ratios chosen for a speed-up measured on {plan['runtime']} at batch {plan['batch']} "
                f"(`--speedup`; the plan: {files}):", "",
                md_table(["target", "predicted (latency model)", "measured when planned", "measured in this run's benchmark"],
                       [[f"{plan['target_speedup']:.2f}×", f"{plan['predicted_speedup']:.2f}×",
                         f"{plan['measured_speedup']:.2f}×", f"{final[0]:.2f}×" if final else "not measured"]], "rrrr"), ""]
    return (["## Speed-up target", ""] + out) if out else []

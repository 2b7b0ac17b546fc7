"""bench.json, bench.csv and the tables printed on screen."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.table import Table

from compress.console import counted
from compress.io import atomic_write
from compress.timing.latency import RESULT_KEYS


def write_json(report: dict, path: Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))


def write_csv(report: dict, path: Path) -> Path:
    """One row per model × runtime × batch size; model size columns joined in for spreadsheets."""
    sizes = {m["name"]: m for m in report["models"]}
    extra = ("kind", "params", "macs", "checkpoint_bytes", "onnx_bytes")

    def write(tmp: Path):
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(RESULT_KEYS + extra)
            for r in report["results"]:
                m = sizes.get(r["model"], {})
                w.writerow([_cell(r.get(k)) for k in RESULT_KEYS] + [_cell(m.get(k)) for k in extra])

    return atomic_write(path, write)


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _mib(n: int | None) -> str:
    return "–" if n is None else f"{n / 2**20:.2f}"


def models_table(report: dict) -> Table:
    t = Table(title="models")
    t.add_column("model", overflow="fold")
    t.add_column("kind")
    t.add_column("params", justify="right")
    t.add_column("MACs", justify="right")
    t.add_column("checkpoint MiB", justify="right")
    t.add_column("ONNX MiB", justify="right")
    t.add_column("sparsity", justify="right")
    t.add_column("acc %", justify="right")
    dense = report["models"][0]
    for m in report["models"]:
        kind = m["kind"] + (f" ({m['prune_kind']})" if m.get("prune_kind") else "")
        sparsity = m.get("filter_sparsity", m.get("sparsity")) if m["kind"] == "slim" else m.get("sparsity")
        t.add_row(m["name"], kind, f"{m['params'] / 1e6:.2f}M", f"{m['macs'] / 1e6:.1f}M ({m['macs'] / dense['macs']:.2f}x)",
                  _mib(m["checkpoint_bytes"]), _mib(m["onnx_bytes"]),
                  "–" if sparsity is None else f"{100 * sparsity:.1f}%",
                  "–" if m.get("accuracy") is None else f"{m['accuracy']:.2f}")
    return t


def results_table(report: dict) -> Table:
    """Measured rows; skipped rows folded into one line per runtime and reason."""
    machine, settings = report["machine"], report["settings"]
    where = machine.get("gpu") if settings["device"].startswith("cuda") else machine.get("cpu")
    threads = settings["threads"]
    t = Table(title=f"latency on {where} ({counted(threads, 'CPU thread')})",
              caption=f"median of timed runs after warm-up; spread = p25–p75 (IQR) and min; speed-up = "
                      f"{report['models'][0]['name']} median / model median, same runtime and batch, measured "
                      f"interleaved. torch {machine.get('torch')}, onnxruntime {machine.get('onnxruntime', '–')}")
    gpu = any(r.get("peak_gpu_mb") is not None for r in report["results"])
    for col, just in (("runtime", "left"), ("batch", "right"), ("model", "left"), ("median ms", "right"),
                      ("p90 ms", "right"), ("IQR ms", "right"), ("min ms", "right"), ("images/s", "right"),
                      ("speed-up", "right"), ("runs (warm-up)", "right")) + ((("peak GPU MiB", "right"),) if gpu else ()):
        t.add_column(col, justify=just, overflow="fold")
    ok = [r for r in report["results"] if r["status"] == "ok"]
    last = None
    for r in ok:
        if last is not None and (r["runtime"], r["batch_size"]) != last:
            t.add_section()
        last = (r["runtime"], r["batch_size"])
        s = r["speedup_vs_dense"]
        speed = "–" if s is None else f"{s:.2f}x"
        style = "bold green" if s and s >= 1.2 else ("dim" if s is not None and r["model"] != report["models"][0]["name"] and s < 1.1 else "")
        row = [r["runtime"], str(r["batch_size"]), r["model"], _ms(r["median_ms"]), _ms(r["p90_ms"]), _ms(r["iqr_ms"]),
               _ms(r["min_ms"]), f"{r['images_per_s']:,.0f}", f"[{style}]{speed}[/]" if style else speed,
               f"{r['repeats']} ({r['warmup']})"]
        if gpu:
            row.append("–" if r["peak_gpu_mb"] is None else f"{r['peak_gpu_mb']:.0f}")
        t.add_row(*row)
    return t


def skipped_table(report: dict) -> Table | None:
    """One line per runtime and reason for the rows that were not measured, or None."""
    groups = _skipped_groups(report["results"])
    if not groups:
        return None
    t = Table(title="not measured")
    for col in ("runtime", "batch", "models", "status", "why"):
        t.add_column(col)
    for (runtime, status, reason), rows in groups.items():
        models = list(dict.fromkeys(r["model"] for r in rows))
        batches = sorted({r["batch_size"] for r in rows})
        colour = "red" if status == "failed" else "yellow"
        t.add_row(runtime, ",".join(map(str, batches)),
                  "all" if len(models) == len(report["models"]) else ", ".join(models),
                  f"[{colour}]{status}[/{colour}]", f"[{colour}]{reason}[/{colour}]")
    return t


def _skipped_groups(results: list[dict]) -> dict:
    groups: dict = {}
    for r in results:
        if r["status"] != "ok":
            groups.setdefault((r["runtime"], r["status"], r["reason"]), []).append(r)
    return groups


def bench_verdict(report: dict) -> str | None:
    """Why a benchmark must not pass as a success: nothing measured, or rows that failed; else None."""
    failed = [r for r in report["results"] if r["status"] == "failed"]
    if failed:
        kinds = sorted({f"{r['runtime']} ({r['reason']})" for r in failed})
        return f"{len(failed)} cell(s) failed: " + "; ".join(kinds[:3]) + ("; ..." if len(kinds) > 3 else "")
    if not any(r["status"] == "ok" for r in report["results"]):
        return "nothing was measured: every runtime was skipped here (reasons above)"
    return None


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


PRECISION = {"torch-bf16": "bf16", "cuda-graphs": "bf16", "ort-cpu-int8": "int8", "openvino-cpu-bf16": "bf16",
             "openvino-cpu-int8": "int8"}


def fastest(report: dict) -> list[dict]:
    """Per model and batch size, the fastest runtime × precision measured here, with its speed-up
    over the dense (first) model in fp32 on ONNX Runtime CPU (else torch) at that batch size."""
    ok = [r for r in report["results"] if r["status"] == "ok"]
    dense = report["models"][0]["name"]
    accuracy = {m["name"]: m.get("accuracy") for m in report["models"]}
    rows = []
    for model in dict.fromkeys(r["model"] for r in ok):
        for batch in sorted({r["batch_size"] for r in ok if r["model"] == model}):
            cell = [r for r in ok if r["model"] == model and r["batch_size"] == batch]
            best = min(cell, key=lambda r: r["median_ms"])
            ref = next((r for name in ("ort-cpu", "torch") for r in ok
                        if r["model"] == dense and r["runtime"] == name and r["batch_size"] == batch), None)
            rows.append({"model": model, "batch_size": batch, "runtime": best["runtime"],
                         "precision": PRECISION.get(best["runtime"], "fp32"), "median_ms": best["median_ms"],
                         "reference": f"{dense} fp32 on {ref['runtime']}" if ref else None,
                         "speedup": round(ref["median_ms"] / best["median_ms"], 2) if ref else None,
                         "accuracy": accuracy.get(model)})
    return rows


def fastest_lines(report: dict) -> list[str]:
    """One line per model and batch size: which runtime to ship on this machine, and why."""
    lines = []
    for f in fastest(report):
        speed = f", {f['speedup']:.2f}x {f['reference']}" if f["speedup"] else ""
        acc = f"; fp32 top-1 {f['accuracy']:.2f}%" if f["accuracy"] is not None else ""
        int8 = " (INT8 accuracy: the quantize stage's quantize.json)" if f["precision"] == "int8" else ""
        lines.append(f"fastest for {f['model']} at batch {f['batch_size']}: {f['runtime']} ({f['precision']}), "
                     f"{f['median_ms']:.2f} ms{speed}{acc}{int8}")
    return lines

"""The GPU kit's evidence: the GPU's facts, the targets it checks, and its summary, figure and CSV."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import torch
from rich.table import Table

from compress.io import atomic_write


# --------------------------------------------------------------------------- evidence
def gpu_facts() -> dict:
    """GPU name, driver, CUDA/cuDNN versions (nvidia-smi when present)."""
    facts = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(gpu=props.name, capability=f"{props.major}.{props.minor}", memory_gb=round(props.total_memory / 2**30, 1))
    if shutil.which("nvidia-smi"):
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
            facts["nvidia_smi"] = q.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return facts

TARGETS = {
    "train_images_per_s_b512": (">=", 20000, "VGG13 training images/s, batch 512, bf16 (H100/H200)"),
    "slim_bf16_b256_speedup": (">=", 2.0, "slim filter-40% vs dense, torch bf16, batch 256"),
    "slim_cuda_graphs_b1_speedup": (">=", 1.3, "slim filter-40% vs dense, CUDA graphs, batch 1"),
    "unstructured_bf16_b256_speedup": ("stated", None, "unstructured 80% vs dense, torch bf16, batch 256 (~1.0x expected)"),
    "sparse24_gemm_ratio": ("stated", None, "2:4 / dense time, 8192x8192 2:4 weight x 8192 rows, fp16"),
    "plan_bf16_b256_2x": ("within 10% of", 2.0, "compress plan --speedup 2 --runtime torch-bf16 --latency-batch 256: measured"),
}


SECTIONS = {  # the section each target's value comes from: a failed section fails its targets
    "train_images_per_s_b512": "training", "slim_bf16_b256_speedup": "latency",
    "slim_cuda_graphs_b1_speedup": "latency", "unstructured_bf16_b256_speedup": "latency",
    "sparse24_gemm_ratio": "sparse24", "plan_bf16_b256_2x": "planner",
}


def section_error(report: dict, name: str) -> str | None:
    """The error a section recorded instead of its results (None when it ran)."""
    section = report.get(name)
    return section.get("error") if isinstance(section, dict) else None


def latency_rows(report: dict) -> list[dict]:
    rows = report.get("latency")
    return rows if isinstance(rows, list) else []


def cell(rows: list[dict], model: str, runtime: str, batch: int) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["runtime"] == runtime and r["batch_size"] == batch), None)


def targets(report: dict) -> list[dict]:
    rows = latency_rows(report)
    big = report["plan"]["compile_batch"]  # 256 on a GPU; the tiny run's largest batch stands in
    training = report.get("training") or {}
    values = {
        "train_images_per_s_b512": ((training.get("batch_512") or {}).get("images_per_s"), training.get("device")),
        "slim_bf16_b256_speedup": _speedup(rows, "filter-slim", "torch-bf16", big),
        "slim_cuda_graphs_b1_speedup": _speedup(rows, "filter-slim", "cuda-graphs", 1),
        "unstructured_bf16_b256_speedup": _speedup(rows, "unstructured-80", "torch-bf16", big),
        "sparse24_gemm_ratio": _sparse_ratio(report.get("sparse24") or {}),
        "plan_bf16_b256_2x": _planned(report.get("planner") or {}),
    }
    out = []
    for key, (op, bound, what) in TARGETS.items():
        value, note = values[key]
        on_gpu = report["gpu"].get("cuda_available") and not report["tiny"]
        failed = section_error(report, SECTIONS[key])
        if failed:
            verdict, note = f"failed: {failed}", f"the {SECTIONS[key]} section failed"
        elif value is None:
            verdict = "skipped"
        elif not on_gpu:
            verdict = "not a GPU run"
        elif op == "stated":
            verdict = "stated"
        elif op.startswith("within"):
            verdict = "met" if abs(value / bound - 1) <= 0.10 else "not met"
        else:
            verdict = "met" if value >= bound else "not met"
        out.append({"target": key, "what": what, "value": value, "bound": f"{op} {bound}" if bound else "-",
                    "verdict": verdict, "note": note})
    return out


def _speedup(rows, model, runtime, batch):
    r = cell(rows, model, runtime, batch)
    if r is None:
        return None, f"no {runtime} batch {batch} row"
    if r["status"] != "ok":
        return None, r["reason"]
    return r.get("speedup_vs_dense"), f"{r['median_ms']:.3f} ms vs dense"


def _planned(section):
    if "measured" not in section:
        return None, section.get("error") or section.get("skipped") or "not run"
    return section["measured"], f"{section['runtime']}, predicted {section['predicted']:.2f}x, {section['attempts']} attempt(s)"


def _sparse_ratio(section):
    if section.get("skipped"):
        return None, section["skipped"]
    ref = section.get("reference") or {}
    if "gemm_ratio" not in ref:
        return None, ref.get("error", "not measured")
    return ref["gemm_ratio"], f"max rel diff {ref['max_rel_diff']:.1e}"


def summary_markdown(report: dict) -> str:
    """The evidence in Markdown; a section that failed (or has not run yet) is one line saying so."""
    g, m = report["gpu"], report["machine"]
    lines = ["# GPU evidence kit", "",
             f"- GPU: {g.get('gpu') or 'none'} ({g.get('nvidia_smi', 'nvidia-smi not found')}), capability "
             f"{g.get('capability', '-')}, torch {m.get('torch')} (CUDA {g.get('torch_cuda')}, cuDNN {g.get('cudnn')})",
             f"- CPU: {m.get('cpu')}, {m.get('cpu_count')} cores; mode: {'tiny (CPU smoke run)' if report['tiny'] else 'full'}",
             f"- command: `{report['command']}`; {report.get('seconds', 0):.0f} s"
             + ("" if report.get("finished") else " (**unfinished**: the files are rewritten after each section)"),
             f"- settings: cuDNN autotuning {'on' if report.get('cudnn_benchmark') else 'off'} for training, latency "
             "and planner alike; every model in NCHW (each runtime sets its own memory format); budget "
             f"{report.get('budget_s', '?')} s", "",
             "| target | value | bound | verdict | note |", "| --- | ---: | --- | --- | --- |"]
    for t in report.get("targets") or []:
        v = "-" if t["value"] is None else f"{t['value']:.3f}" if t["value"] < 100 else f"{t['value']:.0f}"
        lines.append(f"| {t['what']} | {v} | {t['bound']} | {t['verdict']} | {t['note']} |")
    failed = {name: section_error(report, name) for name in ("training", "prune", "latency", "sparse24", "planner")}
    lines += ["", "## Sections", ""]
    for name in ("training", "prune", "latency", "sparse24", "planner"):
        state = ("**failed**: " + failed[name] if failed[name] else
                 "skipped: " + report[name]["skipped"] if isinstance(report.get(name), dict) and report[name].get("skipped")
                 and name == "planner" else "done" if name in report else "not run")
        lines.append(f"- {name}: {state}" + (f" ({report['section_seconds'][name]} s)"
                                             if name in report.get("section_seconds", {}) else ""))
    tr = report.get("training") or {}
    lines += ["", "## Training", ""]
    if "batch_512" in tr:
        lines += [f"- {tr['dtype']} on {tr['device']}: batch 512 {tr['batch_512']['images_per_s']:.0f} images/s "
                  f"(steady epochs of {tr['images_per_epoch']} images), batch 64 {tr['batch_64']['images_per_s']:.0f} "
                  f"images/s", f"- toolchain loop / plain loop, batch 512: {tr['loop_ratio']['toolchain_over_plain']:.3f}x"]
    else:
        lines.append(f"- {tr.get('error', 'not run')}")
    pr = report.get("prune") or {}
    for kind in ("filter", "unstructured"):
        row = pr.get(kind) or {}
        if "error" in row or "acc_retrained" not in row:
            lines.append(f"- OMP {kind}: {row.get('error', 'not run')}")
            continue
        check = row.get("slim_check") or {}
        lines.append(f"- OMP {kind} (1 epoch): {row['acc_retrained']:.2f}% (dense {pr.get('dense_acc', float('nan')):.2f}%)"
                     + (f"; slim check on CPU fp32: max rel diff {check['max_rel_diff']:.1e}, accuracy "
                        f"{check['acc_masked']:.2f}% vs {check['acc_slim']:.2f}%" if "max_rel_diff" in check else
                        f"; slim check: {check['error']}" if "error" in check else ""))
    lines += ["", "## Latency (median ms; speed-up vs dense in the same run)", ""]
    rows = latency_rows(report)
    if section_error(report, "latency"):
        lines.append(f"- the latency section failed: {section_error(report, 'latency')}")
    else:
        lines += ["| runtime | batch | dense | filter-slim | unstructured-80 | peak GPU MiB (dense) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for rt, bs in sorted({(r["runtime"], r["batch_size"]) for r in rows}, key=lambda k: (k[0], k[1])):
        d = cell(rows, "dense", rt, bs)
        if d is None or d["status"] != "ok":
            lines.append(f"| {rt} | {bs} | {(d or {}).get('status', 'skipped')}: {(d or {}).get('reason', '?')} | | | |")
            continue
        cols = []
        for name in ("filter-slim", "unstructured-80"):
            c = cell(rows, name, rt, bs)
            cols.append("-" if c is None or c["status"] != "ok" else f"{c['median_ms']:.3f} ({c['speedup_vs_dense']:.2f}x)")
        lines.append(f"| {rt} | {bs} | {d['median_ms']:.3f} | {cols[0]} | {cols[1]} | {d.get('peak_gpu_mb') or '-'} |")
    sp = report.get("sparse24") or {}
    lines += ["", "## 2:4 semi-structured", ""]
    if sp.get("error"):
        lines.append(f"- the 2:4 section failed: {sp['error']}")
    elif sp.get("skipped"):
        lines.append(f"- speed: {sp['skipped']}; storage only: {sp['storage']['ratio']:.4f}x dense (fp16 values + metadata)")
    elif sp:
        ref = sp.get("reference", {})
        shape = "x".join(str(v) for v in ref.get("shape", [])) or "?"
        lines.append(f"- reference GEMM (M x N x K {shape}, weights 2:4 along K), fp16: 2:4 / dense = "
                     f"{ref.get('gemm_ratio', float('nan')):.3f} ({sp['layers']['backend']}; max rel diff vs dense "
                     f"{ref.get('max_rel_diff', float('nan')):.1e})")
        for row in sp["layers"]["rows"]:
            r = row.get("fp16") or {}
            if "gemm_ratio" in r:
                lines.append(f"- {row['layer']}: GEMM 2:4/dense {r['gemm_ratio']:.3f}"
                             + (f", conv path {r['conv_ratio']:.3f}" if "conv_ratio" in r else ""))
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    matplotlib.use("Agg")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 1]})
    ax = axes[0]
    rows = latency_rows(report)
    cells = sorted({(r["runtime"], r["batch_size"]) for r in rows})
    for i, name in enumerate(("filter-slim", "unstructured-80")):
        vals = []
        for rt, bs in cells:
            c = cell(rows, name, rt, bs)
            vals.append(c["speedup_vs_dense"] if c and c["status"] == "ok" and c.get("speedup_vs_dense") else 0)
        ax.bar([k + 0.4 * i for k in range(len(cells))], vals, width=0.4, label=name)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks([k + 0.2 for k in range(len(cells))], [f"{rt}\nb{bs}" for rt, bs in cells], fontsize=7)
    ax.set_ylabel("speed-up vs dense (same run)")
    ax.set_title("latency (empty bar: skipped, see summary.md)")
    ax.legend()
    if not cells:
        ax.text(0.5, 0.5, f"latency: {section_error(report, 'latency') or 'not run'}", ha="center", va="center",
                wrap=True, transform=ax.transAxes, fontsize=9)
    ax = axes[1]
    tr = report.get("training") or {}
    ax.bar(["batch 512", "batch 64"], [(tr.get("batch_512") or {}).get("images_per_s", 0),
                                       (tr.get("batch_64") or {}).get("images_per_s", 0)])
    ax.axhline(TARGETS["train_images_per_s_b512"][1], color="red", lw=0.8, ls="--", label="target (GPU)")
    ax.set_ylabel("training images/s")
    ax.set_title(f"VGG13 training, {tr['dtype']}" if "dtype" in tr else f"training: {tr.get('error', 'not run')}"[:60],
                 fontsize=9)
    ax.legend(fontsize=7)
    gpu = report["gpu"].get("gpu") or f"CPU: {report['machine'].get('cpu')}"
    fig.suptitle(f"GPU evidence kit on {gpu}{' (tiny)' if report['tiny'] else ''}")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def latency_csv(rows: list[dict]) -> str:
    cols = ("model", "runtime", "batch_size", "median_ms", "p90_ms", "iqr_ms", "images_per_s", "speedup_vs_dense",
            "peak_gpu_mb", "repeats", "status", "reason")
    lines = [",".join(cols)]
    for r in rows:
        lines.append(",".join(json.dumps(r.get(c)) if isinstance(r.get(c), str) else "" if r.get(c) is None
                              else str(r.get(c)) for c in cols))
    return "\n".join(lines) + "\n"


def render_targets(report: dict):
    t = Table(title=f"GPU evidence kit: {report['gpu'].get('gpu') or 'no GPU (CPU run)'}")
    for c in ("target", "value", "bound", "verdict", "note"):
        t.add_column(c, overflow="fold")
    for row in report["targets"]:
        v = "-" if row["value"] is None else f"{row['value']:.3f}" if row["value"] < 100 else f"{row['value']:.0f}"
        t.add_row(row["what"], v, row["bound"], row["verdict"], str(row["note"])[:90])
    return t

"""bench.png: latency vs batch size per runtime (top), speed-up over dense per cell (bottom)."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator

from compress.io import atomic_write
from compress.plots import DENSE_COLOR, MODEL_STYLES


def device_label(report: dict) -> str:
    machine, settings = report["machine"], report["settings"]
    if str(settings["device"]).startswith("cuda") and machine.get("gpu"):
        return f"{machine['gpu']} (+ {machine.get('cpu')}, {_threads(settings['threads'])})"
    return f"{machine.get('cpu')}, {_threads(settings['threads'])}"


def _threads(n: int) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def model_colors(models: list[str]) -> dict:
    """Dense in dark grey; OMP/IMP × unstructured/filter in the colours every report figure uses
    (recognised from names like `omp_filter` or `Imp_unstructured_0.80_acc_73.45`); others tab10."""
    colors, spare = {}, 0
    for i, m in enumerate(models):
        found = re.search(r"(omp|imp)_(unstructured|filter|nm)", m, re.IGNORECASE)
        if i == 0:
            colors[m] = DENSE_COLOR
        elif found and f"{found[1].lower()}_{found[2].lower()}" in MODEL_STYLES:
            colors[m] = MODEL_STYLES[f"{found[1].lower()}_{found[2].lower()}"].color
        else:
            colors[m] = plt.cm.tab10(spare % 10)
            spare += 1
    return colors


def plot_bench(report: dict, path: Path, dpi: int = 150) -> Path:
    matplotlib.use("Agg")

    ok = [r for r in report["results"] if r["status"] == "ok"]
    models = [m["name"] for m in report["models"]]
    ref = models[0]
    runtimes = list(dict.fromkeys(r["runtime"] for r in ok))
    colors = model_colors(models)
    macs = {m["name"]: m["macs"] for m in report["models"]}

    ncols = max(1, len(runtimes))
    fig = plt.figure(figsize=(max(8.0, 3.4 * ncols), 8.2), layout="constrained")
    grid = fig.add_gridspec(2, ncols, height_ratios=[1, 1])
    fig.suptitle(f"Inference latency and speed-up over {ref}\n{device_label(report)}", fontsize=12)

    handles: dict = {}
    _latency_panels(fig, grid, ok, models, ref, runtimes, colors, handles)
    _speedup_bars(fig, grid, ok, models, ref, runtimes, colors, macs, handles)
    fig.legend([handles[m] for m in models if m in handles], [m for m in models if m in handles],
               loc="outside lower center", ncol=min(6, len(handles)) or 1, fontsize=9, frameon=False)

    def write(tmp: Path):
        fig.savefig(tmp, dpi=dpi, format="png")

    try:
        return atomic_write(path, write)
    finally:
        plt.close(fig)


def _latency_panels(fig, grid, ok: list[dict], models: list[str], ref: str, runtimes: list[str], colors: dict,
                    handles: dict) -> None:
    """Latency vs batch size, one panel per runtime (log-log; band from min to p90)."""
    first = None
    for i, runtime in enumerate(runtimes):
        ax = fig.add_subplot(grid[0, i], sharey=first)
        first = first or ax
        for m in models:
            rows = sorted((r for r in ok if r["runtime"] == runtime and r["model"] == m), key=lambda r: r["batch_size"])
            if not rows:
                continue
            bs = [r["batch_size"] for r in rows]
            line, = ax.plot(bs, [r["median_ms"] for r in rows], marker="s" if m == ref else "o", ms=4,
                            lw=2.2 if m == ref else 1.6, ls="--" if m == ref else "-", color=colors[m],
                            zorder=3 if m == ref else 2)  # dense on top: a masked model's line hides under it
            ax.fill_between(bs, [r["min_ms"] for r in rows], [r["p90_ms"] for r in rows], color=colors[m], alpha=0.15,
                            lw=0)
            handles.setdefault(m, line)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        batches = sorted({r["batch_size"] for r in ok if r["runtime"] == runtime})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_title(runtime, fontsize=10)
        ax.set_xlabel("batch size")
        if i == 0:
            ax.set_ylabel("latency per batch (ms)\nline: median, band: min to p90", fontsize=9)
        else:
            ax.tick_params(labelleft=False)
        ax.grid(True, which="major", alpha=0.3)
    if not runtimes:
        ax = fig.add_subplot(grid[0, :])
        ax.text(0.5, 0.5, "nothing was measured (see bench.json for the reasons)", ha="center", va="center")
        ax.set_axis_off()


def _speedup_bars(fig, grid, ok: list[dict], models: list[str], ref: str, runtimes: list[str], colors: dict,
                  macs: dict, handles: dict) -> None:
    """Speed-up bars: one group per (runtime, batch), one bar per pruned model; INT8 cells compare
    with dense fp32 (what a deployment replaces), so dense INT8 gets a bar there too."""
    def speed(r):
        vs_fp32 = r.get("speedup_vs_dense_fp32")
        return vs_fp32 if vs_fp32 else (r["speedup_vs_dense"] if r["model"] != ref else None)

    ax = fig.add_subplot(grid[1, :])
    others = [m for m in models if any(r["model"] == m and speed(r) for r in ok)]
    cells = [(rt, b) for rt in runtimes for b in sorted({r["batch_size"] for r in ok if r["runtime"] == rt})]
    width = min(0.35, 0.8 / max(1, len(others)))
    # value labels side by side need about 0.45 inch per bar; narrower bars get them turned upright
    slot_inches = ax.get_position().width * fig.get_figwidth() * width / max(1, len(cells))
    upright = slot_inches < 0.45
    for j, m in enumerate(others):
        by_cell = {(r["runtime"], r["batch_size"]): speed(r) for r in ok if r["model"] == m}
        xs = [k + (j - (len(others) - 1) / 2) * width for k in range(len(cells))]
        vals = [by_cell.get(c) or 0.0 for c in cells]
        label = f"{m}: {macs[ref] / macs[m]:.2f}x" if macs.get(m) and m != ref else f"{m} INT8: 1.00x"
        bars = ax.bar(xs, vals, width * 0.92, color=colors[m], label=label)
        ax.bar_label(bars, labels=[f"{v:.2f}" if v else "" for v in vals], fontsize=7, padding=2,
                     rotation=90 if upright else 0)
        handles.setdefault(m, bars)
    ax.axhline(1.0, color="#333333", lw=1, ls="--")
    ax.set_xticks(range(len(cells)), [f"{rt}\nbatch {b}" for rt, b in cells], fontsize=8)
    int8 = any(r.get("speedup_vs_dense_fp32") for r in ok)
    ax.set_ylabel(f"speed-up over {ref} (×)" + (f"\nINT8 cells: over {ref} fp32 (ort-cpu)" if int8 else ""))
    ax.set_ylim(0, max([1.2] + [speed(r) * 1.22 for r in ok if speed(r)]))
    ax.grid(True, axis="y", alpha=0.3)
    if others:
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False,
                  title=f"fewer MACs than {ref}\n(the ideal speed-up);\ndashed: as fast as {ref}", title_fontsize=8,
                  alignment="left")
    else:
        ax.text(0.5, 0.5, "no speed-ups to show (one model, or nothing measured)", ha="center", va="center",
                transform=ax.transAxes)

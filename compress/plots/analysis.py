"""Figures of the analyses: the sweep's curves, per-layer sparsity, the sensitivity heat map and
repeated seeds (style and plumbing shared with `compress.plots`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import TwoSlopeNorm

from compress.console import counted
from compress.kinds import Kind
from compress.plots.base import (
    DENSE_COLOR,
    SPARSITY_NOTE,
    count_label,
    criterion_style,
    layer_labels,
    new_figure,
    save,
    wrap,
)
from compress.stats import interval


# --------------------------------------------------------------------------- sweep
def sweep_figure(curves: dict[str, list[dict]], dense_acc: float, path: Path, *, kind: str, tolerance: float,
                 tradeoffs: dict[str, dict | None], title: str = "", treatment: str = "",
                 standard_error: float | None = None, images: int | None = None, split: str = "val") -> Path:
    """Accuracy vs sparsity of one-shot pruning on the split the choice reads, one curve per
    criterion with 95% Wilson intervals as error bars, trade-offs starred.

    `curves`: {criterion: [{"sparsity", "accuracy", "acc_oneshot"?}]}; `tradeoffs`: {criterion:
    {"sparsity", "accuracy"} or None}. With a `treatment` per point (BN re-estimation,
    fine-tuning), the untreated one-shot curve ("acc_oneshot") is drawn dashed.
    """
    split_name = "validation" if split == "val" else "test"
    fig = new_figure(8.0, 5.0)
    ax = fig.add_subplot()
    ax.axhline(dense_acc, color=DENSE_COLOR, ls="--", lw=1.2, label=f"dense ({dense_acc:.2f}% on {split_name})")
    se = f" (one standard error on {images} images: {standard_error:.1f})" if standard_error is not None and images else ""
    ax.axhspan(dense_acc - tolerance, dense_acc, color="#999999", alpha=0.3, lw=0,
               label=f"within {counted(tolerance, 'point', 'g')} of dense{se}")
    xs_all = []
    for name, pts in curves.items():
        st = criterion_style(name)
        xs = [100 * p["sparsity"] for p in pts]
        xs_all += xs
        ms = 3 if len(pts) > 40 else 5
        if treatment:
            ax.plot(xs, [p["acc_oneshot"] for p in pts], color=st.color, lw=1, ls="--", alpha=0.7)
        t = tradeoffs.get(name)
        label = st.label + (f": trade-off{' (knee)' if t.get('by') == 'knee' else ''} {100 * t['sparsity']:.1f}% "
                            f"sparsity, {t['accuracy']:.2f}% accuracy" if t else ": no trade-off point")
        ys = [p["accuracy"] for p in pts]
        if images:
            bounds = [interval(y, images) for y in ys]
            ax.errorbar(xs, ys, yerr=[[y - b[0] for y, b in zip(ys, bounds)], [b[1] - y for y, b in zip(ys, bounds)]],
                        fmt="none", ecolor=st.color, elinewidth=0.7, alpha=0.45, capsize=0)
        ax.plot(xs, ys, color=st.color, lw=1.4, marker=st.marker, ms=ms, label=label)
        if t:
            ax.axvline(100 * t["sparsity"], color=st.color, lw=0.8, ls=":")
            ax.plot(100 * t["sparsity"], t["accuracy"], marker="*", ms=16, color=st.color, mec="black", mew=0.8,
                    ls="none", zorder=5)
    ax.set_xlabel(f"overall sparsity (%) — {SPARSITY_NOTE.get(kind, kind)}")
    ax.set_ylabel(f"{split_name} accuracy (%)" + (", bars: 95% Wilson interval" if images else ""))
    lo, hi = min(xs_all), max(xs_all)
    pad = max(0.5, 0.02 * (hi - lo))
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(0, min(100, dense_acc + 8))
    ax.grid(alpha=0.3)
    ax.set_title(title or f"One-shot {kind} pruning sweep", fontsize=11)
    if treatment:
        ax.plot([], [], color="#555555", lw=1.4, label=f"solid: after {treatment}")
        ax.plot([], [], color="#555555", lw=1, ls="--", alpha=0.7, label="dashed: one-shot, as pruned")
    ax.plot([], [], marker="*", ms=12, color="#777777", mec="black", ls="none",
            label=f"trade-off: last sparsity before accuracy first falls\nmore than "
                  f"{counted(tolerance, 'point', 'g')} below dense (else the curve's knee)")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", fontsize=8, frameon=False, ncol=2 if len(labels) > 3 else 3)
    return save(fig, path)


# --------------------------------------------------------------------------- per-layer sparsity
def layer_sparsity_figure(series: dict[str, dict[str, float]], layers: list[dict], path: Path, *, title: str,
                          ylabel: str = "sparsity (%)", colors: dict[str, str] | None = None,
                          blocks: dict[str, str] | None = None, block_series: dict[str, dict[str, float]] | None = None,
                          block_rows: list[dict] | None = None, note: str = "") -> Path:
    """Grouped bars: one group per layer, one bar per series (model or criterion).

    `series`: {label: {layer name: sparsity 0-1}}; `layers`: [{"name", "shape", "total",
    "weights"?}] in model order; `blocks`: {layer name: block label} shades and names the
    blocks. With `block_series` ({label: {block: sparsity}}) and `block_rows` ([{"block",
    "total"}]) a second panel shows the per-block sparsity.
    """
    names = [l["name"] for l in layers]
    n = max(1, len(series))
    wide = min(10.0, max(7.0, 1.0 + 0.5 * len(names) * max(1, n / 2)))
    with_blocks = bool(block_series and block_rows)
    block_w = 0.55 * len(block_rows or []) + 0.8
    fig = new_figure(wide + (block_w if with_blocks else 0), 5.0)
    if with_blocks:
        gs = fig.add_gridspec(1, 2, width_ratios=[wide, block_w])
        ax, axb = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
    else:
        ax, axb = fig.add_subplot(), None
    _layer_bars(ax, series, layers, colors, blocks)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if axb is not None:
        _block_bars(axb, block_series, block_rows, colors)
        axb.set_title("per block", fontsize=10)
    if n > 1 or list(series)[0]:
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=8, frameon=False,
                   ncol=min(n, 4))
    if note:  # under the layer axis (a figure-level footnote would collide with the outside legend)
        ax.set_xlabel(ax.get_xlabel() + "\n" + "\n".join(wrap(line, int(14 * wide)) for line in note.splitlines()),
                      fontsize=8.5)
    return save(fig, path)


def _layer_bars(ax, series, layers, colors, blocks) -> None:
    names = [l["name"] for l in layers]
    labels = layer_labels(names, [l["shape"] for l in layers])
    ticks = [f"{lab}\n{count_label(int(l.get('weights', l['total'])))}" for lab, l in zip(labels, layers)]
    n = max(1, len(series))
    width = 0.8 / n
    for i, (label, values) in enumerate(series.items()):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(names))]
        ys = [100 * values.get(name, 0.0) for name in names]
        ax.bar(xs, ys, width=width, label=label, color=(colors or {}).get(label), edgecolor="black", linewidth=0.3)
    ax.set_xticks(range(len(names)), ticks, fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("layer (number of weights)")
    ax.grid(axis="y", alpha=0.3)
    if blocks:
        _block_bands(ax, [blocks.get(nm, "") for nm in names])


def _block_bars(ax, series, rows, colors) -> None:
    names = [b["block"] for b in rows]
    n = max(1, len(series))
    width = 0.8 / n
    for i, (label, values) in enumerate(series.items()):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(names))]
        bars = ax.bar(xs, [100 * values.get(b, 0.0) for b in names], width=width, label=label,
                      color=(colors or {}).get(label), edgecolor="black", linewidth=0.3)
        if n == 1:
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(range(len(names)), [b["block"].replace(" (", "\n(") for b in rows], fontsize=7)
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("block (output resolution)")
    ax.grid(axis="y", alpha=0.3)


def _block_bands(ax, blocks: list[str]) -> None:
    """Alternate shading per block, with the block's name at the top of the axes."""
    start = 0
    shade = False
    for j in range(1, len(blocks) + 1):
        if j == len(blocks) or blocks[j] != blocks[start]:
            if shade:
                ax.axvspan(start - 0.5, j - 0.5, color="#000000", alpha=0.06, lw=0, zorder=0)
            label = blocks[start].replace(" (", "\n(") if j - start == 1 else blocks[start]
            ax.text((start + j - 1) / 2, 106, label, ha="center", va="center", fontsize=6.5, color="#444444")
            shade = not shade
            start = j


def empty_figure(path: Path, message: str) -> Path:
    """A small figure that says why there is nothing to plot (so links never break)."""
    fig = new_figure(6.0, 1.6)
    fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, wrap=True)
    return save(fig, path)


# --------------------------------------------------------------------------- sensitivity
def sensitivity_figure(layers: list[str], ratios: list[float], drops: list[list[float]], path: Path, *,
                       proposed: dict[str, float], target: float, kind: str, dense_acc: float,
                       sizes: list[int], split: str = "val", images: int | None = None) -> Path:
    """Left: heat map of the accuracy drop (points) when each layer alone is pruned at each
    ratio, on the split the proposal reads. Right: the proposed per-layer ratios against the uniform one."""
    d = np.array(drops, dtype=float)
    fig = new_figure(11.0, max(4.0, 1.4 + 0.36 * len(layers)))
    gs = fig.add_gridspec(1, 2, width_ratios=[max(3, len(ratios)), 3.2])
    ax = fig.add_subplot(gs[0])
    # one scale for gains and losses, so a 1-point gain (noise) looks as faint as a 1-point loss
    vmax = max(1.0, float(np.nanmax(np.abs(d))))
    im = ax.imshow(d, cmap="RdBu_r", norm=TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax), aspect="auto")
    for i in range(d.shape[0]):
        for j in range(d.shape[1]):
            v = d[i, j]
            strong = abs(v) > 0.6 * vmax
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="white" if strong else "black")
    ax.set_xticks(range(len(ratios)), [f"{100 * r:g}%" for r in ratios])
    ax.set_yticks(range(len(layers)), [f"{l} ({count_label(s)})" for l, s in zip(layers, sizes)], fontsize=8)
    unit = "filters" if kind == Kind.FILTER else "weights"
    ax.set_xlabel(f"share of the layer's {unit} pruned (that layer alone)")
    ax.set_ylabel(f"layer ({unit})")
    se = ""
    if images:
        lo, hi = interval(dense_acc, images)
        se = f"\nWilson 95% CI of one accuracy here: ±{(hi - lo) / 2:.1f} points"
    ax.set_title(f"{'Validation' if split == 'val' else 'Test'} accuracy drop (points below dense "
                 f"{dense_acc:.2f}%, {images or '?'} images){se}", fontsize=10)
    fig.colorbar(im, ax=ax, label="accuracy drop (points)", shrink=0.9)
    ax2 = fig.add_subplot(gs[1], sharey=ax)
    bars = ax2.barh(range(len(layers)), [100 * proposed[l] for l in layers], color="#0072B2", height=0.7)
    ax2.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax2.axvline(100 * target, color=DENSE_COLOR, ls="--", lw=1.2)
    ax2.text(100 * target, -0.55, f"uniform {100 * target:g}%", ha="center", va="bottom", fontsize=8)
    ax2.set_xlim(0, 105)
    ax2.set_xlabel(f"proposed ratio (% of the layer's {unit})")
    ax2.tick_params(labelleft=False)
    ax2.grid(axis="x", alpha=0.3)
    ax2.set_title(f"Proposed ratios for {100 * target:g}% overall", fontsize=10, pad=14)
    return save(fig, path)


# --------------------------------------------------------------------------- repeated seeds
def seeds_figure(summary: dict, path: Path) -> Path:
    """Each model's accuracy per seed (dots), mean ± sd (bar), validation beside test."""
    models = list(summary["models"].items())
    fig = new_figure(max(6.5, 1.4 * len(models) + 2), 4.8)
    ax = fig.add_subplot()
    for i, (name, m) in enumerate(models):
        for split, dx, fill in (("val", -0.15, "white"), ("test", 0.15, None)):
            values = [v for v in m[split].values() if v is not None]
            if not values:
                continue
            color = DENSE_COLOR if name == "dense" else "#1B3A5B"
            ax.plot([i + dx] * len(values), values, ls="none", marker="o", ms=5, mfc=fill or color, mec=color,
                    alpha=0.8)
            ax.errorbar(i + dx + 0.07, m[f"{split}_mean"], yerr=m[f"{split}_sd"], fmt="_", ms=12, color=color,
                        capsize=4, lw=1.4)
    ax.set_xticks(range(len(models)), [n.replace("_", "\n") for n, _ in models], fontsize=9)
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3, axis="y")
    ds = summary["dataset"]
    ax.set_title(f"{summary['model'].get('name', '?')} on {ds.get('name', '?')}: {len(summary['seeds'])} seeds "
                 f"({ds.get('val_images') or 0} validation / {ds.get('test_images')} test images)", fontsize=10)
    ax.plot([], [], ls="none", marker="o", mfc="white", mec="#555555", label="validation, one dot per seed")
    ax.plot([], [], ls="none", marker="o", color="#555555", label="test, one dot per seed")
    ax.errorbar([], [], yerr=[], fmt="_", color="#555555", capsize=4, label="mean ± standard deviation")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return save(fig, path)

"""Figures: accuracy vs sparsity, weight masks, sweeps, per-layer sparsity, sensitivity.

Every function takes plain data (numbers, lists, tensors), draws one PNG at 150 DPI with
matplotlib's object API (no pyplot, so a notebook's backend is left alone), writes it
atomically and returns its path. Colours and markers are fixed per model type and per
criterion, so the same model looks the same in every figure.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

DPI = 150


@dataclass(frozen=True)
class Style:
    label: str
    color: str
    marker: str


# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
MODEL_STYLES = {
    "omp_unstructured": Style("OMP unstructured", "#0072B2", "o"),
    "imp_unstructured": Style("IMP unstructured", "#009E73", "s"),
    "omp_filter": Style("OMP filter", "#D55E00", "^"),
    "imp_filter": Style("IMP filter", "#CC79A7", "D"),
    "omp_nm": Style("OMP N:M", "#56B4E9", "v"),
    "imp_nm": Style("IMP N:M", "#E69F00", "P"),
}
CRITERION_STYLES = {
    "magnitude": Style("magnitude", "#0072B2", "o"),
    "taylor": Style("Taylor", "#D55E00", "s"),
    "synflow": Style("SynFlow", "#009E73", "^"),
}
DENSE_COLOR = "#333333"
SPARSITY_NOTE = {
    "unstructured": "unstructured sparsity = zero weights / all conv+linear weights",
    "filter": "filter sparsity = pruned filters / all conv filters",
    "nm": "N:M sparsity = zero weights / all conv+linear weights",
}


def model_style(kind: str, method: str) -> Style:
    key = f"{method.lower()}_{kind.lower()}"
    return MODEL_STYLES.get(key, Style(f"{method.upper()} {kind}", "#777777", "X"))


def criterion_style(name: str) -> Style:
    return CRITERION_STYLES.get(name, Style(name, "#777777", "X"))


# --------------------------------------------------------------------------- plumbing
def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig


def _save(fig, path: Path) -> Path:
    from .checkpoint import atomic_write

    return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def layer_labels(names: list[str], shapes: list[list[int]]) -> list[str]:
    """Short, ordered labels: conv1..convN for 4-D weights, fc1..fcM for 2-D ones."""
    conv = fc = 0
    labels = []
    for shape in shapes:
        if len(shape) == 4:
            conv += 1
            labels.append(f"conv{conv}")
        else:
            fc += 1
            labels.append(f"fc{fc}")
    return labels


def _count(n: int) -> str:
    return f"{n / 1e6:.2g}M" if n >= 1e6 else f"{n / 1e3:.3g}K" if n >= 1e3 else str(n)


# --------------------------------------------------------------------------- accuracy vs sparsity
def accuracy_vs_sparsity(models: list[dict], dense_acc: float, path: Path, *, title: str = "",
                         note: str = "", images: int | None = None) -> Path:
    """The pruned models at their overall sparsity (x, %) and test accuracy (y, %).

    `models`: [{"kind", "method", "sparsity" (0-1), "accuracy", "acc_after_prune",
    "rounds": [{"sparsity", "acc_after_prune", "acc_after_retrain"}]}]. Filled markers are
    the final models; hollow ones the accuracy right after pruning (before retraining); IMP
    rounds are joined by a thin line in the order they ran. With `images`, error bars are the
    final models' 95% Wilson intervals and a band the dense model's.
    """
    from .stats import interval

    fig = _figure(9.5, 5.0)
    ax = fig.add_subplot()
    ax.axhline(dense_acc, color=DENSE_COLOR, ls="--", lw=1.2, label=f"dense ({dense_acc:.2f}%)")
    lows = [dense_acc]
    for m in models:
        st = model_style(m["kind"], m["method"])
        rounds = m.get("rounds") or []
        if len(rounds) > 1:
            xs = [0.0] + [100 * r["sparsity"] for r in rounds]
            ys = [dense_acc] + [r["acc_after_retrain"] for r in rounds]
            ax.plot(xs, ys, color=st.color, lw=1, alpha=0.6, marker=st.marker, ms=4)
        for r in rounds:
            ax.plot([100 * r["sparsity"]] * 2, [r["acc_after_prune"], r["acc_after_retrain"]], color=st.color,
                    lw=0.8, ls=":", alpha=0.8)
            ax.plot(100 * r["sparsity"], r["acc_after_prune"], ls="none", marker=st.marker, ms=6, mfc="white",
                    mec=st.color, mew=1.2)
            lows.append(r["acc_after_prune"])
        # OMP and IMP of one kind end at the same sparsity: the OMP marker is drawn smaller and on
        # top, so that two results a point apart stay two visible markers
        omp = m["method"] == "omp"
        if images:  # the final model's 95% Wilson interval
            lo, hi = interval(m["accuracy"], images)
            ax.errorbar(100 * m["sparsity"] + (0.6 if omp else -0.6), m["accuracy"],
                        yerr=[[m["accuracy"] - lo], [hi - m["accuracy"]]], fmt="none", ecolor=st.color, capsize=3, lw=1)
        ax.plot(100 * m["sparsity"], m["accuracy"], ls="none", marker=st.marker, ms=7 if omp else 11,
                zorder=4 if omp else 3, color=st.color, mec="black", mew=0.6,
                label=f"{st.label}: {100 * m['sparsity']:.1f}%, {m['accuracy']:.2f}%")
        lows.append(m["accuracy"])
    ax.plot([], [], ls="none", marker="o", mfc="white", mec="#555555", label="right after pruning\n(before retraining)")
    if any(len(m.get("rounds") or []) > 1 for m in models):
        ax.plot([], [], color="#555555", lw=1, alpha=0.6, marker="o", ms=4, label="IMP rounds after retraining")
    if images:
        lo, hi = interval(dense_acc, images)
        ax.axhspan(lo, hi, color=DENSE_COLOR, alpha=0.08, lw=0, label="dense 95% interval")
        ax.errorbar([], [], yerr=[], fmt="none", ecolor="#555555", capsize=3,
                    label=f"95% Wilson interval\n({images} test images)")
        lows.append(lo)
    ax.set_xlabel("overall sparsity (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlim(-2, 100)
    ax.set_ylim(max(0, min(lows) - 5), min(100, max(lows) + 4))
    ax.grid(alpha=0.3)
    ax.set_title(title or "Accuracy vs overall sparsity of the pruned models")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=8, frameon=False)
    kinds = sorted({m["kind"] for m in models})
    text = "; ".join(SPARSITY_NOTE.get(k, k) for k in kinds)
    if len(kinds) > 1:
        text = "Two definitions on one axis: " + text
    _footnote(fig, "\n".join(_wrap(t, 120) for t in (text, note) if t))
    return _save(fig, path)


def _footnote(fig, text: str) -> None:
    """Small text under everything; constrained layout makes room for it (it is the figure's x label)."""
    fig.supxlabel(text, fontsize=7.5, color="#333333")


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) if text else text


# --------------------------------------------------------------------------- masks
def default_mask_layer(shapes: dict[str, list[int]], max_cells: int = 400_000) -> str:
    """A mid-network conv whose 2-D mask fits the figure: the middle conv layer, or the
    nearest earlier one with at most `max_cells` weights (about one screen pixel each)."""
    convs = [n for n, s in shapes.items() if len(s) == 4]
    if not convs:
        raise ValueError("the model has no conv layer")
    mid = (len(convs) - 1) // 2
    fits = [i for i, n in enumerate(convs) if _numel(shapes[n]) <= max_cells]
    if not fits:
        return min(convs, key=lambda n: _numel(shapes[n]))
    return convs[min(fits, key=lambda i: (abs(i - mid), -i))]


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def mask_figure(keep: torch.Tensor, path: Path, *, model: str, layer: str, label: str = "") -> Path:
    """One conv layer's mask as a 2-D image: a row per filter, in_channels x kh x kw columns.

    `keep` is the layer's bool mask (True = non-zero weight). Kept weights are dark, zero
    weights light; a side strip shows each filter's kept fraction, so whole-filter pruning
    and per-filter unevenness are visible even where single pixels are too small to see.
    """
    from matplotlib.colors import ListedColormap

    keep = keep.detach().bool().cpu()
    if keep.ndim != 4:
        raise ValueError(f"mask_figure needs a 4-D conv weight mask, got shape {tuple(keep.shape)}")
    rows, cin, kh, kw = keep.shape
    grid = keep.reshape(rows, -1).float().numpy()
    sparsity = 1 - grid.mean()
    empty = int((grid.sum(1) == 0).sum())
    cols = grid.shape[1]
    width = min(12.0, max(6.0, 3.0 + cols / 180))
    height = min(9.0, max(3.6, 1.6 + rows / 70))
    fig = _figure(width, height)
    gs = fig.add_gridspec(1, 2, width_ratios=[30, 1.6])
    ax = fig.add_subplot(gs[0])
    side = fig.add_subplot(gs[1], sharey=ax)
    cmap = ListedColormap(["#F2E8CF", "#1B3A5B"])  # zero, non-zero
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest",
              extent=(-0.5, cols - 0.5, rows - 0.5, -0.5))
    ax.set_xlabel(f"input channel × kernel position ({cin} × {kh}×{kw} = {cols} columns)")
    ax.set_ylabel(f"output filter ({rows} rows)")
    side.barh(range(rows), grid.mean(1), height=1.0, color="#1B3A5B")
    side.set_xlim(0, 1)
    side.set_xticks([0, 1])
    side.set_xlabel("kept\nfraction", fontsize=8)
    side.tick_params(labelleft=False, labelsize=8)
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color="#1B3A5B", label="non-zero weight"), Patch(color="#F2E8CF", label="zero (pruned)")],
               loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"{label + ': ' if label else ''}{layer}, weight {rows}×{cin}×{kh}×{kw}\n"
                 f"{model} · sparsity {100 * sparsity:.2f}% of weights · {empty}/{rows} filters all zero", fontsize=10)
    return _save(fig, path)


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
    from .stats import interval

    split_name = "validation" if split == "val" else "test"
    fig = _figure(8.0, 5.0)
    ax = fig.add_subplot()
    ax.axhline(dense_acc, color=DENSE_COLOR, ls="--", lw=1.2, label=f"dense ({dense_acc:.2f}% on {split_name})")
    se = f" (one standard error on {images} images: {standard_error:.1f})" if standard_error is not None and images else ""
    ax.axhspan(dense_acc - tolerance, dense_acc, color="#999999", alpha=0.3, lw=0,
               label=f"within {tolerance:g} point{'s' if tolerance != 1 else ''} of dense{se}")
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
            label=f"trade-off: last sparsity before accuracy first falls\nmore than {tolerance:g} "
                  f"point{'s' if tolerance != 1 else ''} below dense (else the curve's knee)")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", fontsize=8, frameon=False, ncol=2 if len(labels) > 3 else 3)
    return _save(fig, path)


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
    fig = _figure(wide + (block_w if with_blocks else 0), 5.0)
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
        ax.set_xlabel(ax.get_xlabel() + "\n" + "\n".join(_wrap(line, int(14 * wide)) for line in note.splitlines()),
                      fontsize=8.5)
    return _save(fig, path)


def _layer_bars(ax, series, layers, colors, blocks) -> None:
    names = [l["name"] for l in layers]
    labels = layer_labels(names, [l["shape"] for l in layers])
    ticks = [f"{lab}\n{_count(int(l.get('weights', l['total'])))}" for lab, l in zip(labels, layers)]
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
    fig = _figure(6.0, 1.6)
    fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, wrap=True)
    return _save(fig, path)


# --------------------------------------------------------------------------- sensitivity
def sensitivity_figure(layers: list[str], ratios: list[float], drops: list[list[float]], path: Path, *,
                       proposed: dict[str, float], target: float, kind: str, dense_acc: float,
                       sizes: list[int], split: str = "val", images: int | None = None) -> Path:
    """Left: heat map of the accuracy drop (points) when each layer alone is pruned at each
    ratio, on the split the proposal reads. Right: the proposed per-layer ratios against the uniform one."""
    import numpy as np

    from .stats import interval
    from matplotlib.colors import TwoSlopeNorm

    d = np.array(drops, dtype=float)
    fig = _figure(11.0, max(4.0, 1.4 + 0.36 * len(layers)))
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
    ax.set_yticks(range(len(layers)), [f"{l} ({_count(s)})" for l, s in zip(layers, sizes)], fontsize=8)
    unit = "filters" if kind == "filter" else "weights"
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
    return _save(fig, path)


# --------------------------------------------------------------------------- repeated seeds
def seeds_figure(summary: dict, path: Path) -> Path:
    """Each model's accuracy per seed (dots), mean ± sd (bar), validation beside test."""
    models = list(summary["models"].items())
    fig = _figure(max(6.5, 1.4 * len(models) + 2), 4.8)
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
    return _save(fig, path)

"""Figures: accuracy vs sparsity, weight masks, sweeps, per-layer sparsity, sensitivity.

Every function takes plain data (numbers, lists, tensors), draws one PNG at 150 DPI with
matplotlib's object API (no pyplot, so a notebook's backend is left alone), writes it
atomically and returns its path. Colours and markers are fixed per model type and per
criterion, so the same model looks the same in every figure.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from compress.io import atomic_write
from compress.stats import interval

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
def new_figure(width: float, height: float):
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig


def save(fig, path: Path) -> Path:
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


def count_label(n: int) -> str:
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
    fig = new_figure(9.5, 5.0)
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
    _footnote(fig, "\n".join(wrap(t, 120) for t in (text, note) if t))
    return save(fig, path)


def _footnote(fig, text: str) -> None:
    """Small text under everything; constrained layout makes room for it (it is the figure's x label)."""
    fig.supxlabel(text, fontsize=7.5, color="#333333")


def wrap(text: str, width: int) -> str:
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
    fig = new_figure(width, height)
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

    fig.legend(handles=[Patch(color="#1B3A5B", label="non-zero weight"), Patch(color="#F2E8CF", label="zero (pruned)")],
               loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"{label + ': ' if label else ''}{layer}, weight {rows}×{cin}×{kh}×{kw}\n"
                 f"{model} · sparsity {100 * sparsity:.2f}% of weights · {empty}/{rows} filters all zero", fontsize=10)
    return save(fig, path)



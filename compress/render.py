"""Rich tables for results: what the CLI prints after each command."""
from __future__ import annotations

from pathlib import Path

from rich.table import Table


def training_summary(ckpt: dict, path: Path) -> Table:
    """Dense training: per-epoch figures, then where the checkpoint is."""
    meta = ckpt["meta"]
    t = Table(title=f"dense {ckpt['model']['name']} on {meta['dataset']['name']} "
                    f"({meta['dataset']['train_images']} train / {meta['dataset']['test_images']} test)")
    for col in ("epoch", "train loss", "train acc %", "test acc %", "img/s", "s"):
        t.add_column(col, justify="right")
    for h in meta["history"]:
        t.add_row(str(h["epoch"]), f"{h['train_loss']:.3f}", f"{h['train_acc']:.1f}",
                  f"{h['test_acc']:.2f}" if "test_acc" in h else "", f"{h['images_per_s']:.0f}", f"{h['seconds']:.1f}")
    t.caption = (f"final test accuracy {meta['accuracy']:.2f}%  ·  {meta.get('train_seconds', 0):.0f} s of training"
                 f"  ·  saved to {path}")
    return t


def ratio_table(model, kind: str, ratios: dict[str, float], source: str) -> Table:
    """The layer ratios a command is about to use: layer, shape, ratio, units pruned."""
    from .ratios import planned_sparsity, prunable, pruned_count, units

    params = prunable(model, kind)
    t = Table(title=f"{kind} ratios ({source})")
    for col in ("layer", "shape", "ratio", "pruned", "of"):
        t.add_column(col, justify="left" if col in ("layer", "shape") else "right")
    for n, w in params.items():
        r = ratios.get(n)
        u = units(w, kind)
        t.add_row(n, "×".join(map(str, w.shape)), "-" if r is None else f"{r:.4f}",
                  "0" if r is None else f"{pruned_count(r, u):,}", f"{u:,}")
    unit = "filters" if kind == "filter" else "weights"
    t.caption = f"overall {kind} sparsity: {100 * planned_sparsity(model, kind, ratios):.2f}% of {unit}"
    return t


def prune_summary(manifest: dict) -> Table:
    """Dense vs pruned: accuracy and sparsity after every round, and where the result is."""
    job = manifest["job"]
    kind = "unstructured" if job["kind"] == "nm" else job["kind"]
    t = Table(title=f"{job['method'].upper()} {job['kind']} pruning of {manifest['model']['name']} "
                    f"to {job['target']:.2f} ({manifest['dataset']['name']})")
    for col in ("model", "target", f"{kind} sparsity", "acc after prune %", "acc after retrain %", "epochs", "s"):
        t.add_column(col, justify="left" if col == "model" else "right")
    dense = manifest["dense"]["accuracy"]
    t.add_row("dense", "0", "0.00%", "", f"{dense:.2f}", "", "")
    for r in manifest["rounds"]:
        t.add_row(f"round {r['round']}", f"{r['target']:.3f}", f"{100 * r['sparsity']:.2f}%",
                  f"{r['acc_after_prune']:.2f}", f"{r['acc_after_retrain']:.2f}", str(r["epochs"]), f"{r['seconds']:.0f}")
    res = manifest.get("result")
    if res:
        delta = res["accuracy"] - dense
        t.add_section()
        t.add_row(res["path"], f"{job['target']:.2f}", f"{100 * res['sparsity']:.2f}%", "", f"{res['accuracy']:.2f}",
                  "", "", style="bold")
        t.caption = f"{delta:+.2f} points vs dense  ·  run folder {manifest.get('run_dir', '')}".rstrip()
    return t


def slim_summary(stats: dict, path) -> Table:
    """Dense -> masked -> slim: params, MACs, sparsity, and the equality check."""
    t = Table(title="channel removal (Torch-Pruning DependencyGraph)")
    for col in ("", "dense", "masked", "slim", "slim / dense"):
        t.add_column(col, justify="left" if not col else "right")
    p, m = stats["params"], stats["macs"]
    t.add_row("parameters", f"{p['dense']:,}", f"{p['masked']:,}", f"{p['slim']:,}", f"{p['slim'] / p['dense']:.3f}×")
    t.add_row("MACs / image", f"{m['dense']:,}", f"{m['masked']:,}", f"{m['slim']:,}", f"{m['slim'] / m['dense']:.3f}×")
    fs, ws = stats["filter_sparsity"], stats["weight_sparsity"]
    t.add_row("filter sparsity", "0.00%", f"{100 * fs['masked']:.2f}%", f"{100 * fs['slim']:.2f}%", "")
    t.add_row("weight sparsity", "0.00%", f"{100 * ws['masked']:.2f}%", f"{100 * ws['slim']:.2f}%", "")
    check = stats.get("check")
    if check:
        t.add_row("test accuracy", "", f"{check['acc_masked']:.2f}%", f"{check['acc_slim']:.2f}%", "")
    t.add_section()
    wd, wsl = stats["widths"]["dense"], stats["widths"]["slim"]
    for n in wd:
        t.add_row(f"  {n} filters", str(wd[n]), "", str(wsl[n]), f"{wsl[n] / wd[n]:.3f}")
    cap = [f"{stats['filters_removed']} filters removed ({100 * stats['filter_fraction_removed']:.2f}%)"]
    if stats.get("removed_by_rounding"):
        cap.append(f"{stats['removed_by_rounding']} of them live filters removed by --round-to {stats['round_to']}")
    if check:
        cap.append(f"max relative logit difference {check['max_rel_diff']:.1e} on {check['images']} test images")
    cap.append(f"saved to {path}")
    t.caption = "  ·  ".join(cap)
    return t

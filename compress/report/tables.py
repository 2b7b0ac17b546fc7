"""Rich tables for results: what the CLI prints after each command."""
from __future__ import annotations

from pathlib import Path

from rich.table import Table

from compress.export.tables import human_size
from compress.kinds import Kind
from compress.prune.ratios import planned_sparsity, prunable, pruned_count, units
from compress.stats import with_ci


def training_summary(ckpt: dict, path: Path) -> Table:
    """Dense training: per-epoch figures, then where the checkpoint is."""
    meta = ckpt["meta"]
    ds = meta["dataset"]
    t = Table(title=f"dense {ckpt['model']['name']} on {ds['name']} "
                    f"({ds['train_images']} train / {ds.get('val_images', 0)} validation / {ds['test_images']} test)")
    for col in ("epoch", "train loss", "train acc %", "val acc %", "test acc %", "img/s", "s"):
        t.add_column(col, justify="right")
    for h in meta["history"]:
        t.add_row(str(h["epoch"]), f"{h['train_loss']:.3f}", f"{h['train_acc']:.1f}",
                  *(f"{h[k]:.2f}" if k in h else "" for k in ("val_acc", "test_acc")),
                  f"{h['images_per_s']:.0f}", f"{h['seconds']:.1f}")
    val = (f"validation {with_ci(meta['val_accuracy'], ds.get('val_images'))}  ·  "
           if meta.get("val_accuracy") is not None else "no validation split  ·  ")
    t.caption = (f"{val}test {with_ci(meta['accuracy'], ds['test_images'])} (95% Wilson intervals)  ·  "
                 f"{meta.get('train_seconds', 0):.0f} s of training  ·  saved to {path}")
    return t


def ratio_table(model, kind: str, ratios: dict[str, float], source: str) -> Table:
    """The layer ratios a command is about to use: layer, shape, ratio, units pruned."""
    params = prunable(model, kind)
    t = Table(title=f"{kind} ratios ({source})")
    for col in ("layer", "shape", "ratio", "pruned", "of"):
        t.add_column(col, justify="left" if col in ("layer", "shape") else "right")
    for n, w in params.items():
        r = ratios.get(n)
        u = units(w, kind)
        t.add_row(n, "×".join(map(str, w.shape)), "-" if r is None else f"{r:.4f}",
                  "0" if r is None else f"{pruned_count(r, u):,}", f"{u:,}")
    unit = "filters" if kind == Kind.FILTER else "weights"
    t.caption = f"overall {kind} sparsity: {100 * planned_sparsity(model, kind, ratios):.2f}% of {unit}"
    return t


def prune_summary(manifest: dict) -> Table:
    """Dense vs pruned: accuracy and sparsity after every round, and where the result is."""
    job = manifest["job"]
    kind = Kind(job["kind"]).definition
    t = Table(title=f"{job['method'].upper()} {job['kind']} pruning of {manifest['model']['name']} "
                    f"to {job['target']:.2f} ({manifest['dataset']['name']})")

    ds = manifest["dataset"]
    n_val, n_test = ds.get("val_images") or None, ds.get("test_images")
    for col in ("model", "target", f"{kind} sparsity", "test after prune %", "val after retrain %",
                "test after retrain %", "epochs", "s"):
        t.add_column(col, justify="left" if col == "model" else "right")
    dense = manifest["dense"]["accuracy"]

    def val(x):
        return "" if x is None else f"{x:.2f}"

    t.add_row("dense", "0", "0.00%", "", val(manifest["dense"].get("val_accuracy")), f"{dense:.2f}", "", "")
    for r in manifest["rounds"]:
        t.add_row(f"round {r['round']}", f"{r['target']:.3f}", f"{100 * r['sparsity']:.2f}%",
                  f"{r['acc_after_prune']:.2f}", val(r.get("val_after_retrain")), f"{r['acc_after_retrain']:.2f}",
                  str(r["epochs"]), f"{r['seconds']:.0f}")
    res = manifest.get("result")
    if res:
        delta = res["accuracy"] - dense
        t.add_section()
        t.add_row(res["path"], f"{job['target']:.2f}", f"{100 * res['sparsity']:.2f}%", "",
                  with_ci(res.get("val_accuracy"), n_val) if res.get("val_accuracy") is not None else "",
                  with_ci(res["accuracy"], n_test), "", "", style="bold")
        t.caption = (f"{delta:+.2f} points vs dense on {n_test} test images (95% Wilson intervals; "
                     f"{'choices on ' + str(n_val) + ' validation images' if n_val else 'NO validation split'})  ·  "
                     f"run folder {manifest.get('run_dir', '')}").rstrip()
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


def suite_summary(manifest: dict, folder) -> Table:
    """The four models of `compress all` against dense, and where everything is."""
    t = Table(title=f"{manifest['model']['name']} on {manifest['dataset']['name']}: dense vs pruned")

    ds = manifest["dataset"]
    n_val, n_test = ds.get("val_images") or None, ds.get("test_images")
    for col in ("model", "sparsity", "test after prune %", "validation (95% CI)", "test (95% CI)", "vs dense", "file"):
        t.add_column(col, justify="left" if col in ("model", "file") else "right")
    dense = manifest["dense"]["accuracy"]
    t.add_row("dense", "0.00%", "", with_ci(manifest["dense"].get("val_accuracy"), n_val), with_ci(dense, n_test), "",
              "dense.pt")
    for name, r in manifest["results"].items():
        t.add_row(name, f"{100 * r['sparsity']:.2f}%", f"{r.get('acc_after_prune', float('nan')):.2f}",
                  with_ci(r.get("val_accuracy"), n_val), with_ci(r["accuracy"], n_test),
                  f"{r['accuracy'] - dense:+.2f}", r["path"])
    arts = manifest.get("artifacts", {})
    failed = manifest.get("failed") or {}
    t.caption = (f"suite folder {folder}  ·  benchmark {arts.get('bench') or 'not run'}  ·  "
                 f"report {arts.get('report') or 'not written'}  ·  {manifest.get('seconds', 0) / 60:.1f} min"
                 + (f"\n[red]FAILED stages: {', '.join(failed)}[/red]" if failed else ""))
    return t


def artifacts_table(manifest: dict) -> Table:
    """The last screen of a prune command: every artifact and stage, with its path."""
    run_dir = Path(manifest.get("run_dir", "."))
    t = Table(title="artifacts", show_header=False)
    t.add_column("what")
    t.add_column("where")
    t.add_row("run folder", str(run_dir))
    t.add_row("manifest", str(run_dir / "manifest.json"))
    t.add_row("dense model", str(run_dir / "dense.pt"))
    if manifest.get("result"):
        t.add_row("pruned model (masked)", str(run_dir / manifest["result"]["path"]))
    t.add_row("sparsity report", str(run_dir / "sparsity.json"))
    arts = manifest.get("artifacts", {})
    labels = {"slim": ("slim", "slim model"), "onnx": ("export", "ONNX export"), "int8": ("quantize", "INT8 ONNX"),
              "bench": ("bench", "benchmark"), "report": ("report", "report")}
    for key, (stage, label) in labels.items():
        status = manifest.get("stages", {}).get(stage)
        if status and status["status"] == "failed":
            t.add_row(label, f"[red]failed: {status['error']}[/red]")
        elif arts.get(key):
            t.add_row(label, str(run_dir / arts[key]))
        else:
            t.add_row(label, "[dim]skipped[/dim]")
    return t


def quantize_table(reports: list[dict]) -> Table:
    """fp32 vs INT8 per model: size, top-1 on the whole test split, agreement."""
    t = Table(title="INT8 ONNX (ONNX Runtime static QDQ, S8S8, per-channel weights)")
    for col in ("model", "fp32 top-1 %", "INT8 top-1 %", "drop", "agree", "INT8 size", "× fp32 size"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in reports:
        t.add_row(Path(r["int8"]).name, f"{r['fp32_acc']:.2f}", f"{r['int8_acc']:.2f}", f"{r['drop'] + 0.0:.2f}",
                  f"{100 * r['agreement']:.2f}%", human_size(r["int8_bytes"]), f"{r['int8_bytes'] / r['fp32_bytes']:.3f}")
    if reports:
        t.caption = (f"{reports[0]['test_images']} test images; calibrated on {reports[0]['calibration_images']} "
                     "training images; zeros of pruned weights stay exactly zero in INT8 (symmetric weight scales); "
                     "the compact/sparse files apply to fp32 only")
    return t

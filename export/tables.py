"""Tables of what export and quantize wrote, for the CLI and the measurement scripts alike."""
from __future__ import annotations

from pathlib import Path

from rich.table import Table


def export_table(report: dict) -> Table:
    """The ONNX files of one export, their sizes against the dense ONNX and their parity."""
    spec = report["model"]
    dense = report["dense_onnx_bytes"]
    t = Table(title=f"ONNX export of {spec['name']} (width {spec['width']:g}), opset {report['opset']}")
    for col in ("file", "format", "size", "× dense ONNX", "× zipped", "rel. diff ≤ tol", "argmax agree", "saves"):
        t.add_column(col, justify="left" if col in ("file", "format", "saves") else "right", overflow="fold",
                     min_width=max(len(Path(m["onnx"]).name) for m in report["models"]) if col == "file" else None)
    for m in report["models"]:
        par = m["parity"]
        t.add_row(Path(m["onnx"]).name, m["format"], human_size(m["bytes"]), f"{m['bytes'] / dense:.3f}",
                  f"{m['deflated_bytes'] / dense:.3f}", f"{par['max_rel_diff']:.1e} ≤ {par['tolerance']:.0e}",
                  f"{100 * par['argmax_agreement']:.1f}%", m["saves"])
    caption = [f"× dense ONNX: against {human_size(dense)}, the plain fp32 ONNX of the unpruned architecture",
               "× zipped: the file deflated, for comparison",
               f"rel. diff: max |ONNX Runtime − PyTorch| / max |logit| on {report['models'][0]['parity']['images']} "
               f"test images ({report['models'][0]['parity']['provider']})"]
    if "weight_sparsity" in report:  # one export's report (a folder's export.json holds several models)
        caption.append(f"weight sparsity {100 * report['weight_sparsity']:.1f}%")
    if "export_json" in report:
        caption.append(f"index: {report['export_json']}")
    t.caption = " · ".join(caption)
    return t


def human_size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def quantize_table(r: dict) -> Table:
    """fp32 vs INT8 ONNX: sizes and accuracy on the whole test split."""
    t = Table(title=f"INT8 quantization ({r['format']}, {r['method']}, "
                    f"{'per-channel' if r['per_channel'] else 'per-tensor'}, {r['calibration_images']} training images)")
    for col in ("model", "file", "size", "top-1 %", "vs fp32"):
        t.add_column(col, justify="left" if col in ("model", "file") else "right", overflow="fold")
    t.add_row("fp32", r["fp32"], human_size(r["fp32_bytes"]), f"{r['fp32_acc']:.2f}", "")
    t.add_row("int8", r["int8"], human_size(r["int8_bytes"]), f"{r['int8_acc']:.2f}",
              f"{-r['drop'] + 0.0:+.2f} points, {r['int8_bytes'] / r['fp32_bytes']:.3f}x size")
    t.caption = (f"whole test split ({r['test_images']} images, {r.get('runtime', 'ONNX Runtime CPU')}): predictions agree on "
                 f"{100 * r['agreement']:.2f}%, largest logit difference {r['max_logit_diff']:.4f}"
                 + (f"; fp32 kept: {', '.join(r['excluded'])}" if r["excluded"] else "")
                 + (f"; after {r['qat_epochs']} epochs of QAT" if r.get("qat_epochs") else "")
                 + (f"; {r['speedup']:.2f}x fp32's speed ({r['speedup_note']})" if r.get("speedup") else "")
                 + (f"; validation (the --max-drop gate, {r['val_images']} images): fp32 {r['val_fp32_acc']:.2f}%, "
                    f"INT8 {r['val_int8_acc']:.2f}%, drop {r['val_drop']:+.2f}" if "val_drop" in r else ""))
    return t


def attempts_table(r: dict) -> Table:
    """The accuracy-aware search: every INT8 file tried, its drop on the gate's split and speed-up."""
    split = "validation" if r["gate"]["split"] == "val" else "test"
    t = Table(title=f"INT8 attempts (gate: {r['max_drop']} points of {split} top-1), cheapest first")
    for col in ("attempt", f"{split} drop", "speed-up vs fp32", "within gate", "shipped"):
        t.add_column(col, justify="left" if col == "attempt" else "right", overflow="fold")
    for a in r["attempts"]:
        t.add_row(a["attempt"], f"{a['drop']:+.2f}", f"{a['speedup']:.2f}x" if a["speedup"] else "-",
                  "yes" if a["within_gate"] else "no", "◀" if a["attempt"] == r["shipped"] else "")
    t.caption = f"speed-up: {r['speedup_note']}; the fastest attempt within the gate is shipped"
    return t

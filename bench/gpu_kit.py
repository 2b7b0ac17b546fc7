"""GPU evidence kit: every GPU claim of the product measured by one prepared command.

    python -m bench.gpu_kit --out docs/gpu          # on one H100/H200: about 5 minutes
    python -m bench.gpu_kit --tiny --out /tmp/kit   # tiny widths on CPU, seconds (the test suite runs it)

1. training: dense VGG13 on the bundled sample (bf16 autocast + channels_last on CUDA), images/s
   at batch 512 and at the recipe's batch in steady-state epochs, the toolchain's loop vs a
   plain loop; then OMP filter 40% and OMP unstructured 80% (1 retraining epoch each), slim,
   ONNX export with parity;
2. latency: dense vs filter-slim vs unstructured, interleaved, CUDA events: torch eager fp32,
   bf16 + channels_last, CUDA graphs, torch.compile (batch 256 only, to bound compile time),
   ONNX Runtime CUDA where its provider really runs; speed-up vs dense, peak GPU memory;
3. 2:4: `to_sparse_semi_structured` on VGG13's layers and on a 4096x4096 linear at batch 1024;
4. planner: `compress plan --speedup 2` on torch bf16 at batch 256 (the GPU's latency table);
5. evidence: kit.json, kit.png, summary.md, latency.csv in one folder; the summary table last.

On CPU every GPU-only row is present and marked skipped with its reason, so `--tiny` produces
the same files and table shape as a GPU run. See bench/GPU_KIT.md for what to copy along.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from compress.checkpoint import atomic_write
from compress.console import err, out
from compress.data import Dataset, load_dataset
from compress.env import machine
from compress.masks import apply_masks, filter_masks, unstructured_masks
from compress.models import ModelSpec
from compress.presets import config_dir
from compress.ratios import read_ratio_file
from compress.slim import slim
from compress.train import TrainConfig, evaluate, train
from export.onnx_export import export_onnx
from export.parity import compare, reference_logits

from . import train_throughput as tt
from . import semi_structured as s24
from .latency import Settings, measure
from .models import BenchModel
from .runtimes import Context, get_runtimes

FILES = ("kit.json", "kit.png", "summary.md", "latency.csv")
TARGETS = {
    "train_images_per_s_b512": (">=", 20000, "VGG13 training images/s, batch 512, bf16 (H100/H200)"),
    "slim_bf16_b256_speedup": (">=", 2.0, "slim filter-40% vs dense, torch bf16, batch 256"),
    "slim_cuda_graphs_b1_speedup": (">=", 1.3, "slim filter-40% vs dense, CUDA graphs, batch 1"),
    "unstructured_bf16_b256_speedup": ("stated", None, "unstructured 80% vs dense, torch bf16, batch 256 (~1.0x expected)"),
    "sparse24_4096_b1024_ratio": ("stated", None, "2:4 / dense time, 4096x4096 linear at batch 1024, fp16"),
    "plan_bf16_b256_2x": ("within 10% of", 2.0, "compress plan --speedup 2 --runtime torch-bf16 --at-batch 256: measured"),
}


def plan(tiny: bool, cuda: bool) -> dict:
    """Sizes and budgets: the full kit fits 8 minutes on one H100/H200; tiny fits seconds on CPU."""
    if tiny:
        return dict(width=0.125, repeat=1, epochs=2, recipe_epochs=2, loop_runs=1, batch_sizes=(1, 8),
                    compile_batch=8, budget_s=0.05, warmup_s=0.02, train_images=512, sparse_batch=8, big=256,
                    big_batch=64)
    return dict(width=1.0, repeat=4 if cuda else 1, epochs=4, recipe_epochs=2, loop_runs=3,
                batch_sizes=(1, 64, 256, 1024), compile_batch=256, budget_s=0.5, warmup_s=0.2, train_images=None,
                sparse_batch=256, big=4096, big_batch=1024)


# --------------------------------------------------------------------------- 1. training
def steady_rate(history: list[dict]) -> float:
    """Median images/s of the epochs after the first (which pays for cuDNN autotuning and warm-up)."""
    rates = [h["images_per_s"] for h in history]
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def training_section(spec: ModelSpec, data: Dataset, device: torch.device, p: dict) -> tuple[dict, torch.nn.Module]:
    big = tt.repeat_to(data, data.train_x.shape[0] * p["repeat"], data.test_x.shape[0])
    big.test_x, big.test_y = data.test_x, data.test_y
    torch.manual_seed(0)
    model = spec.build()
    r512 = train(model, big, TrainConfig(epochs=p["epochs"], batch_size=512, lr=0.1, warmup_epochs=0.5, eval_every=0),
                 device=device, show=False)
    recipe = spec.build()
    r64 = train(recipe, data, TrainConfig(epochs=p["recipe_epochs"], batch_size=64, eval_every=0), device=device,
                show=False)
    loops = {"toolchain": tt.ToolchainLoop(spec, big, 512, device, masks=False),
             "plain": tt.PlainLoop(spec, big, 512, device)}
    rates = tt.measure(loops, p["loop_runs"], tt.repeat_to(data, 1024))
    ratio = statistics.median(rates["toolchain"]) / statistics.median(rates["plain"])
    section = {"device": str(device), "dtype": "bf16 autocast + channels_last" if device.type == "cuda" else "fp32",
               "images_per_epoch": int(big.train_x.shape[0]),
               "batch_512": {"images_per_s": steady_rate(r512.history), "epochs": p["epochs"],
                             "per_epoch": [h["images_per_s"] for h in r512.history], "test_acc": r512.test_acc},
               "batch_64": {"images_per_s": steady_rate(r64.history), "epochs": p["recipe_epochs"]},
               "loop_ratio": {"toolchain_over_plain": ratio, "runs": rates}}
    return section, model


def prune_section(spec: ModelSpec, dense: torch.nn.Module, data: Dataset, device: torch.device,
                  work: Path) -> tuple[dict, list[BenchModel]]:
    """OMP filter 40% and unstructured 80% from the shipped ratio files, 1 epoch each, slim, ONNX parity."""
    import copy

    example = spec.example_input().to(device)
    cfg = TrainConfig(epochs=1, batch_size=512, lr=0.1, warmup_epochs=0.2, eval_every=0)
    section, models = {"dense_acc": evaluate(dense, data, device)[0]}, []
    dense = dense.to(device)
    models.append(BenchModel("dense", "dense", copy.deepcopy(dense).cpu().eval(), spec))
    for kind, ratio_file in (("filter", "vgg13_filter_0.40.yaml"), ("unstructured", "vgg13_unstructured_0.80.yaml")):
        model = copy.deepcopy(dense)
        ratios = read_ratio_file(config_dir() / ratio_file, model, kind)
        masks = filter_masks(model, ratios, example) if kind == "filter" else unstructured_masks(model, ratios)
        apply_masks(model, masks)
        t0 = time.perf_counter()
        res = train(model, data, cfg, device=device, masks=masks, show=False)
        row = {"ratio_file": ratio_file, "acc_retrained": res.test_acc, "retrain_s": time.perf_counter() - t0}
        deployable = model.eval()
        if kind == "filter":
            s = slim(model, spec, data)
            deployable = s.model
            row.update(params=s.stats["params"], macs=s.stats["macs"], slim_check=s.stats["check"])
        onnx_path = export_onnx(deployable.cpu(), spec, work / f"{kind}.onnx")
        x, ref = reference_logits(deployable.cpu(), data, 64)
        row["onnx_parity"] = compare(onnx_path, x, ref)
        row["onnx_bytes"] = onnx_path.stat().st_size
        name = "filter-slim" if kind == "filter" else "unstructured-80"
        models.append(BenchModel(name, "slim" if kind == "filter" else "pruned", deployable.cpu().eval(), spec,
                                 meta={"prune_kind": kind}))
        section[kind] = row
    return section, models


def planner_section(spec: ModelSpec, dense: torch.nn.Module, data: Dataset, device: torch.device, p: dict) -> dict:
    """`compress plan --speedup 2` on the GPU's own runtime (torch bf16, batch 256); on CPU the
    tiny run plans for torch fp32 so the code path is exercised."""
    from compress.planner import PlanRequest, make_plan

    cuda = device.type == "cuda"
    tiny = p["width"] < 1
    request = PlanRequest(speedup=2.0, runtime="torch-bf16" if cuda else "torch", batch=p["compile_batch"],
                          round_to=4 if tiny else 16, device=str(device), use_cache=False,
                          cost="score" if tiny else "loss", budget_s=0.02 if tiny else 1.0, attempts=2 if tiny else 4)
    made = make_plan(dense, spec, data, request, show=False)
    return {"runtime": request.runtime, "batch": request.batch, "target": made.target_speedup,
            "predicted": made.predicted_speedup, "measured": made.measured_speedup, "met": made.met,
            "attempts": len(made.attempts), "fit_rms_ms": made.table["fit_rms_ms"], "ratios": made.ratios}


# --------------------------------------------------------------------------- 2. latency
def latency_section(models: list[BenchModel], device: torch.device, p: dict, work: Path) -> list[dict]:
    rows = []
    base = dict(device=str(device), budget_s=p["budget_s"], min_repeats=5, max_repeats=300, warmup_s=p["warmup_s"],
                blocks=5)
    plain = ["torch", "torch-bf16", "cuda-graphs", "ort-cuda"]
    ctx = Context(device=device, threads=torch.get_num_threads(), workdir=work, explicit=frozenset())
    rows += measure(models, get_runtimes(plain), Settings(batch_sizes=p["batch_sizes"], runtimes=tuple(plain), **base),
                    ctx, show=False)
    # torch.compile at one batch size: Inductor compiles every model x batch size (tens of seconds each)
    explicit = frozenset({"torch-compile"} if device.type == "cuda" else set())
    ctx = Context(device=device, threads=torch.get_num_threads(), workdir=work, explicit=explicit)
    rows += measure(models, get_runtimes(["torch-compile"]),
                    Settings(batch_sizes=(p["compile_batch"],), runtimes=("torch-compile",), **base), ctx, show=False)
    return rows


# --------------------------------------------------------------------------- 3. 2:4
def sparse24_section(dense: torch.nn.Module, spec: ModelSpec, p: dict) -> dict:
    reason = s24.gpu_status()
    section = {"storage": s24.storage_report(dense.cpu())}
    if reason:
        section.update(skipped=reason, layers=None, reference=None)
        return section
    section["layers"] = s24.speed_report(dense.cpu(), p["sparse_batch"], spec.image_size, ["fp16"], runs=20)
    big = torch.nn.Linear(p["big"], p["big"], bias=False)
    torch.manual_seed(0)
    x = torch.randn(p["big_batch"], p["big"])
    try:
        section["reference"] = {"shape": [p["big_batch"], p["big"], p["big"]], **s24.time_layer(big, x, torch.float16, 20)}
    except (RuntimeError, NotImplementedError) as e:
        section["reference"] = {"error": str(e).splitlines()[0][:200]}
    return section


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


def cell(rows: list[dict], model: str, runtime: str, batch: int) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["runtime"] == runtime and r["batch_size"] == batch), None)


def targets(report: dict) -> list[dict]:
    rows = report["latency"]
    big = report["plan"]["compile_batch"]  # 256 on a GPU; the tiny run's largest batch stands in
    values = {
        "train_images_per_s_b512": (report["training"]["batch_512"]["images_per_s"], report["training"]["device"]),
        "slim_bf16_b256_speedup": _speedup(rows, "filter-slim", "torch-bf16", big),
        "slim_cuda_graphs_b1_speedup": _speedup(rows, "filter-slim", "cuda-graphs", 1),
        "unstructured_bf16_b256_speedup": _speedup(rows, "unstructured-80", "torch-bf16", big),
        "sparse24_4096_b1024_ratio": _sparse_ratio(report["sparse24"]),
        "plan_bf16_b256_2x": _planned(report.get("planner", {})),
    }
    out = []
    for key, (op, bound, what) in TARGETS.items():
        value, note = values[key]
        on_gpu = report["gpu"].get("cuda_available") and not report["tiny"]
        if value is None:
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
        return None, section.get("error", "not run")
    return section["measured"], f"{section['runtime']}, predicted {section['predicted']:.2f}x, {section['attempts']} attempt(s)"


def _sparse_ratio(section):
    if section.get("skipped"):
        return None, section["skipped"]
    ref = section.get("reference") or {}
    if "gemm_ratio" not in ref:
        return None, ref.get("error", "not measured")
    return ref["gemm_ratio"], f"max rel diff {ref['max_rel_diff']:.1e}"


def summary_markdown(report: dict) -> str:
    g, m = report["gpu"], report["machine"]
    lines = ["# GPU evidence kit", "",
             f"- GPU: {g.get('gpu') or 'none'} ({g.get('nvidia_smi', 'nvidia-smi not found')}), capability "
             f"{g.get('capability', '-')}, torch {m.get('torch')} (CUDA {g.get('torch_cuda')}, cuDNN {g.get('cudnn')})",
             f"- CPU: {m.get('cpu')}, {m.get('cpu_count')} cores; mode: {'tiny (CPU smoke run)' if report['tiny'] else 'full'}",
             f"- command: `{report['command']}`; {report['seconds']:.0f} s", "",
             "| target | value | bound | verdict | note |", "| --- | ---: | --- | --- | --- |"]
    for t in report["targets"]:
        v = "-" if t["value"] is None else f"{t['value']:.3f}" if t["value"] < 100 else f"{t['value']:.0f}"
        lines.append(f"| {t['what']} | {v} | {t['bound']} | {t['verdict']} | {t['note']} |")
    tr = report["training"]
    lines += ["", "## Training", "",
              f"- {tr['dtype']} on {tr['device']}: batch 512 {tr['batch_512']['images_per_s']:.0f} images/s "
              f"(steady epochs of {tr['images_per_epoch']} images), batch 64 {tr['batch_64']['images_per_s']:.0f} images/s",
              f"- toolchain loop / plain loop, batch 512: {tr['loop_ratio']['toolchain_over_plain']:.3f}x",
              f"- OMP filter 40% (1 epoch): {report['prune']['filter']['acc_retrained']:.2f}%, slim check "
              f"{report['prune']['filter']['slim_check']['max_rel_diff']:.1e}; OMP unstructured 80%: "
              f"{report['prune']['unstructured']['acc_retrained']:.2f}% (dense {report['prune']['dense_acc']:.2f}%)",
              "", "## Latency (median ms; speed-up vs dense in the same run)", "",
              "| runtime | batch | dense | filter-slim | unstructured-80 | peak GPU MB (dense) |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for rt, bs in sorted({(r["runtime"], r["batch_size"]) for r in report["latency"]}, key=lambda k: (k[0], k[1])):
        d = cell(report["latency"], "dense", rt, bs)
        if d is None or d["status"] != "ok":
            lines.append(f"| {rt} | {bs} | skipped: {(d or {}).get('reason', '?')} | | | |")
            continue
        cols = []
        for name in ("filter-slim", "unstructured-80"):
            c = cell(report["latency"], name, rt, bs)
            cols.append("-" if c is None or c["status"] != "ok" else f"{c['median_ms']:.3f} ({c['speedup_vs_dense']:.2f}x)")
        lines.append(f"| {rt} | {bs} | {d['median_ms']:.3f} | {cols[0]} | {cols[1]} | {d.get('peak_gpu_mb') or '-'} |")
    sp = report["sparse24"]
    lines += ["", "## 2:4 semi-structured", ""]
    if sp.get("skipped"):
        lines.append(f"- speed: {sp['skipped']}; storage only: {sp['storage']['ratio']:.4f}x dense (fp16 values + metadata)")
    else:
        ref = sp.get("reference", {})
        lines.append(f"- 4096x4096 linear, batch 1024, fp16: 2:4 / dense = {ref.get('gemm_ratio', float('nan')):.3f} "
                     f"({sp['layers']['backend']})")
        for row in sp["layers"]["rows"]:
            r = row.get("fp16") or {}
            if "gemm_ratio" in r:
                lines.append(f"- {row['layer']}: GEMM 2:4/dense {r['gemm_ratio']:.3f}"
                             + (f", conv path {r['conv_ratio']:.3f}" if "conv_ratio" in r else ""))
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 1]})
    ax = axes[0]
    cells = sorted({(r["runtime"], r["batch_size"]) for r in report["latency"]})
    for i, name in enumerate(("filter-slim", "unstructured-80")):
        vals = []
        for rt, bs in cells:
            c = cell(report["latency"], name, rt, bs)
            vals.append(c["speedup_vs_dense"] if c and c["status"] == "ok" and c.get("speedup_vs_dense") else 0)
        ax.bar([k + 0.4 * i for k in range(len(cells))], vals, width=0.4, label=name)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks([k + 0.2 for k in range(len(cells))], [f"{rt}\nb{bs}" for rt, bs in cells], fontsize=7)
    ax.set_ylabel("speed-up vs dense (same run)")
    ax.set_title("latency (empty bar: skipped, see summary.md)")
    ax.legend()
    ax = axes[1]
    tr = report["training"]
    ax.bar(["batch 512", "batch 64"], [tr["batch_512"]["images_per_s"], tr["batch_64"]["images_per_s"]])
    ax.axhline(TARGETS["train_images_per_s_b512"][1], color="red", lw=0.8, ls="--", label="target (GPU)")
    ax.set_ylabel("training images/s")
    ax.set_title(f"VGG13 training, {tr['dtype']}", fontsize=9)
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
    from rich.table import Table

    t = Table(title=f"GPU evidence kit: {report['gpu'].get('gpu') or 'no GPU (CPU run)'}")
    for c in ("target", "value", "bound", "verdict", "note"):
        t.add_column(c, overflow="fold")
    for row in report["targets"]:
        v = "-" if row["value"] is None else f"{row['value']:.3f}" if row["value"] < 100 else f"{row['value']:.0f}"
        t.add_row(row["what"], v, row["bound"], row["verdict"], str(row["note"])[:90])
    return t


def _guarded(fn) -> dict:
    """A section that must not cost the rest of the evidence: its failure is recorded, not raised."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - recorded in kit.json and the summary
        return {"error": f"{type(e).__name__}: {str(e)[:300]}"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_kit", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the evidence files (created; at most 4 files)")
    ap.add_argument("--tiny", action="store_true", help="tiny widths and budgets (CPU smoke run for the tests)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    from compress.env import resolve_device

    t0 = time.perf_counter()
    device = resolve_device(args.device)
    p = plan(args.tiny, device.type == "cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("sample", quiet=True)
    if p["train_images"]:
        data = tt.repeat_to(data, p["train_images"], 256)
    data = data.to(device)
    spec = ModelSpec("vgg13", width=p["width"])
    report = {"format": "compress-gpu-kit/1", "tiny": args.tiny, "command": " ".join(["python -m bench.gpu_kit", *(argv or [])]),
              "machine": machine(), "gpu": gpu_facts(), "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}}
    timings = report["section_seconds"] = {}

    def step(name: str, fn):
        err.print(f"[bold]{name}[/bold] …")
        t = time.perf_counter()
        value = fn()
        timings[name] = round(time.perf_counter() - t, 1)
        return value

    with tempfile.TemporaryDirectory(prefix="gpu-kit-") as work:
        report["training"], dense = step("training", lambda: training_section(spec, data, device, p))
        report["prune"], models = step("prune", lambda: prune_section(spec, dense, data, device, Path(work)))
        report["latency"] = step("latency", lambda: latency_section(models, device, p, Path(work)))
        report["sparse24"] = step("sparse24", lambda: sparse24_section(models[0].module, spec, p))
        report["planner"] = step("planner", lambda: _guarded(lambda: planner_section(spec, models[0].module, data, device, p)))
    report["seconds"] = time.perf_counter() - t0
    report["targets"] = targets(report)
    atomic_write(args.out / "kit.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2, default=str)))
    atomic_write(args.out / "latency.csv", lambda tmp: tmp.write_text(latency_csv(report["latency"])))
    atomic_write(args.out / "summary.md", lambda tmp: tmp.write_text(summary_markdown(report)))
    plot(report, args.out / "kit.png")
    out.print(f"evidence in {args.out}: {', '.join(FILES)} ({report['seconds']:.0f} s)")
    out.print(render_targets(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""GPU evidence kit: every GPU claim of the product measured by one prepared command.

    PYTHONPATH=. python3 -m compress.bench.gpu_kit --out docs/gpu    # on one H100/H200: about 6 minutes
    PYTHONPATH=. python3 -m compress.bench.gpu_kit --tiny --out /tmp/kit   # tiny widths on CPU, seconds (the suite runs it)

It runs from a plain checkout (no install), and it is built to survive its first GPU:
every section is guarded (a failure is recorded in kit.json and the summary, and the kit
goes on), the four evidence files are rewritten after every section (a timeout leaves what
was measured), and `--budget-s` skips torch.compile and the planner, with the reason, when too
little time is left for them.

1. training: dense VGG13 on the bundled sample (bf16 autocast + channels_last on CUDA), images/s
   at batch 512 and at the recipe's batch in steady-state epochs, the toolchain's loop vs a
   plain loop; then OMP filter 40% and OMP unstructured 80% (1 retraining epoch each), slim
   (checked on a CPU fp32 copy), ONNX export with parity;
2. latency: dense vs filter-slim vs unstructured, every model handed over in NCHW, interleaved,
   CUDA events: torch eager fp32, bf16 + channels_last, CUDA graphs, torch.compile (batch 256
   only, to bound compile time), ONNX Runtime CUDA where its provider really runs (on the lent
   machine it does not: plain onnxruntime, skipped with the reason); speed-up vs dense, peak
   GPU memory;
3. 2:4: `to_sparse_semi_structured` on VGG13's layers with 2:4 masks applied, and on an
   8192 x 8192 2:4 weight times 8192 rows (a GEMM of milliseconds: the kernel is timed);
4. planner: `compress plan --speedup 2` on torch bf16 at batch 256 (the GPU's latency table);
5. evidence: kit.json, kit.png, summary.md, latency.csv in one folder; the summary table last.

One cuDNN setting (autotuning on, on CUDA) holds for training, latency and the planner. On CPU
every GPU-only row is present and marked skipped with its reason, so `--tiny` produces the same
files and table shape as a GPU run. See bench/GPU_KIT.md for what to carry and the exact call.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from compress.analysis.planner import PlanRequest, make_plan
from compress.bench import semi_structured as s24
from compress.bench import train_throughput as tt
from compress.bench.gpu_kit_report import (
    gpu_facts,
    latency_csv,
    latency_rows,
    plot,
    render_targets,
    summary_markdown,
    targets,
)
from compress.console import err, out
from compress.data import Dataset, load_dataset
from compress.env import machine, resolve_device
from compress.errors import CompressError
from compress.export.onnx_export import export_onnx
from compress.export.parity import compare, reference_logits
from compress.io import atomic_write
from compress.kinds import Kind
from compress.models import ModelSpec
from compress.presets import config_dir
from compress.prune.masks import apply_masks, filter_masks, nm_layers, nm_masks, unstructured_masks
from compress.prune.ratios import read_ratio_file
from compress.prune.slim import slim, verify
from compress.timing.latency import Settings, measure
from compress.timing.models import BenchModel
from compress.timing.registry import get_runtimes
from compress.timing.runtimes import Context
from compress.train import TrainConfig, evaluate, train

FILES = ("kit.json", "kit.png", "summary.md", "latency.csv")


def plan(tiny: bool, cuda: bool) -> dict:
    """Sizes and budgets: the full kit fits 8 minutes on one H100/H200; tiny fits seconds on CPU."""
    if tiny:
        return dict(width=0.125, repeat=1, epochs=2, recipe_epochs=2, loop_runs=1, batch_sizes=(1, 8),
                    compile_batch=8, budget_s=0.05, warmup_s=0.02, train_images=512, sparse_batch=8, big=256,
                    big_batch=64)
    # the 2:4 reference GEMM (8192 x 8192 weights, 8192 rows: ~1 TFLOP) takes milliseconds, so the
    # kernel is timed, not Python's dispatch (microseconds)
    return dict(width=1.0, repeat=4 if cuda else 1, epochs=4, recipe_epochs=2, loop_runs=3,
                batch_sizes=(1, 64, 256, 1024), compile_batch=256, budget_s=0.5, warmup_s=0.2, train_images=None,
                sparse_batch=256, big=8192, big_batch=8192)


# seconds that the optional sections need: skipped (with the reason recorded) when less is left
NEEDS_S = {"torch-compile": {"full": 120, "tiny": 2}, "planner": {"full": 150, "tiny": 2}}
DEFAULT_BUDGET_S = 420  # the kit's own work in 7 of the device call's 9 minutes (start-up and install besides)


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
    """OMP filter 40% and unstructured 80% from the shipped ratio files, 1 epoch each, slim, ONNX
    parity. Each kind is guarded on its own: one that fails is recorded and the other goes on."""
    section, models = {"dense_acc": evaluate(dense, data, device)[0]}, [bench_model("dense", "dense", dense, spec)]
    for kind in ("filter", "unstructured"):
        try:
            row, model = prune_one(kind, spec, dense, data, device, work)
        except Exception as e:  # noqa: BLE001 - recorded in kit.json and the summary
            section[kind] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            continue
        section[kind] = row
        name = "filter-slim" if kind == Kind.FILTER else "unstructured-80"
        models.append(bench_model(name, "slim" if kind == Kind.FILTER else "pruned", model, spec, {"prune_kind": kind}))
    return section, models


def bench_model(name: str, kind: str, model: torch.nn.Module, spec: ModelSpec, meta: dict | None = None) -> BenchModel:
    """A CPU fp32 NCHW copy: every model of a latency row starts in one memory format, and each
    runtime converts it the way it runs (channels_last for bf16 on CUDA)."""
    module = copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format).eval()
    return BenchModel(name, kind, module, spec, meta=meta or {})


def prune_one(kind: str, spec: ModelSpec, dense: torch.nn.Module, data: Dataset, device: torch.device,
              work: Path) -> tuple[dict, torch.nn.Module]:
    ratio_file = {"filter": "vgg13_filter_0.40.yaml", "unstructured": "vgg13_unstructured_0.80.yaml"}[kind]
    example = spec.example_input().to(device)
    cfg = TrainConfig(epochs=1, batch_size=512, lr=0.1, warmup_epochs=0.2, eval_every=0)
    model = copy.deepcopy(dense).to(device)
    ratios = read_ratio_file(config_dir() / ratio_file, model, kind)
    masks = filter_masks(model, ratios, example) if kind == Kind.FILTER else unstructured_masks(model, ratios)
    apply_masks(model, masks)
    t0 = time.perf_counter()
    res = train(model, data, cfg, device=device, masks=masks, show=False)
    row = {"ratio_file": ratio_file, "acc_retrained": res.test_acc, "retrain_s": time.perf_counter() - t0}
    # slim and its check on a CPU fp32 NCHW copy (the tested path): the CUDA model trained in
    # channels_last under TF32 and evaluates in bf16, so its logits are not comparable at 1e-4
    deployable = copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format).eval()
    if kind == Kind.FILTER:
        masked = deployable
        s = slim(masked, spec)
        deployable = s.model
        row.update(params=s.stats["params"], macs=s.stats["macs"])
        try:
            row["slim_check"] = verify(masked, deployable, data)
        except CompressError as e:  # recorded, not raised: the rest of the evidence still matters
            row["slim_check"] = {"error": e.message}
    onnx_path = export_onnx(deployable, spec, work / f"{kind}.onnx")
    x, ref = reference_logits(deployable, data, 64)
    row["onnx_parity"] = compare(onnx_path, x, ref)
    row["onnx_bytes"] = onnx_path.stat().st_size
    return row, deployable


def planner_section(spec: ModelSpec, dense: torch.nn.Module, data: Dataset, device: torch.device, p: dict) -> dict:
    """`compress plan --speedup 2` on the GPU's own runtime (torch bf16, batch 256); on CPU the
    tiny run plans for torch fp32 so the code path is exercised."""
    cuda = device.type == "cuda"
    dense = copy.deepcopy(dense).float().to(memory_format=torch.contiguous_format)
    tiny = p["width"] < 1
    request = PlanRequest(speedup=2.0, runtime="torch-bf16" if cuda else "torch", batch=p["compile_batch"],
                          round_to=16, device=str(device), use_cache=False,
                          cost="score" if tiny else "loss", budget_s=0.02 if tiny else 1.0, attempts=2 if tiny else 4)
    made = make_plan(dense, spec, data, request, show=False)
    return {"runtime": request.runtime, "batch": request.batch, "target": made.target_speedup,
            "predicted": made.predicted_speedup, "measured": made.measured_speedup, "met": made.met,
            "attempts": len(made.attempts), "fit_rms_ms": made.table["fit_rms_ms"], "ratios": made.ratios}


# --------------------------------------------------------------------------- 2. latency
def latency_section(models: list[BenchModel], device: torch.device, p: dict, work: Path,
                    compile_skip: str | None = None) -> list[dict]:
    rows = []
    base = dict(device=str(device), budget_s=p["budget_s"], min_repeats=5, max_repeats=300, warmup_s=p["warmup_s"],
                blocks=5)
    plain = ["torch", "torch-bf16", "cuda-graphs", "ort-cuda"]
    ctx = Context(device=device, threads=torch.get_num_threads(), workdir=work, explicit=frozenset())
    rows += measure(models, get_runtimes(plain), Settings(batch_sizes=p["batch_sizes"], runtimes=tuple(plain), **base),
                    ctx, show=False)
    # torch.compile at one batch size: Inductor compiles every model x batch size (tens of seconds each)
    if compile_skip:
        rows += [{"model": m.name, "runtime": "torch-compile", "batch_size": p["compile_batch"], "status": "skipped",
                  "reason": compile_skip} for m in models]
        return rows
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
    # the timed weights really are 2:4 (the kept 2 of every 4 inputs by magnitude), as `compress nm`
    # leaves them: a dense matrix handed to the sparse format would be silently truncated
    section["layers"] = s24.speed_report(two_four(dense.cpu()), p["sparse_batch"], spec.image_size, ["fp16"], runs=20)
    torch.manual_seed(0)
    big = two_four(torch.nn.Sequential(torch.nn.Linear(p["big"], p["big"], bias=False)))[0]
    x = torch.randn(p["big_batch"], p["big"])
    try:
        section["reference"] = {"shape": [p["big_batch"], p["big"], p["big"]], **s24.time_layer(big, x, torch.float16, 20)}
    except (RuntimeError, NotImplementedError) as e:
        section["reference"] = {"error": str(e).splitlines()[0][:200]}
    return section


def two_four(model: torch.nn.Module) -> torch.nn.Module:
    """A copy with 2:4 magnitude masks applied to every layer the format takes."""
    model = copy.deepcopy(model).float().eval()
    apply_masks(model, nm_masks(model, nm_layers(model, s24.M), s24.N, s24.M))
    return model


class Kit:
    """The run: sections in order, each guarded (a failure is recorded, never raised), the four
    evidence files rewritten after every section, and a time budget that skips the optional
    sections (torch.compile, the planner), with the reason, when too little of it is left."""

    def __init__(self, out: Path, report: dict, budget_s: float, mode: str):
        self.out, self.report, self.mode = out, report, mode
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + budget_s
        report["section_seconds"] = {}

    def left_s(self) -> float:
        return self.deadline - time.perf_counter()

    def too_late(self, what: str) -> str | None:
        """The reason `what` is skipped, or None when the budget still has room for it."""
        need, left = NEEDS_S[what][self.mode], self.left_s()
        if left >= need:
            return None
        return f"skipped: time budget ({max(0.0, left):.0f} s of --budget-s left, {what} needs about {need} s)"

    def section(self, name: str, fn, fallback=None):
        """Run one section; on failure record {"error": ...} under `name` and return `fallback`."""
        err.print(f"[bold]{name}[/bold] …")
        t = time.perf_counter()
        try:
            value = fn()
            stored, result = value if isinstance(value, tuple) else (value, value)
        except Exception as e:  # noqa: BLE001 - recorded in kit.json and the summary, the kit goes on
            stored, result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}, fallback
            err.print(f"[bold red]{name} failed[/bold red]: {stored['error']}", soft_wrap=True)
        self.report[name] = stored
        self.report["section_seconds"][name] = round(time.perf_counter() - t, 1)
        self.write()
        return result

    def write(self) -> None:
        """The four evidence files as they stand now: a later failure, or the command's timeout,
        leaves everything measured so far."""
        self.report["seconds"] = time.perf_counter() - self.t0
        self.report["targets"] = targets(self.report)
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write(self.out / "kit.json", lambda tmp: tmp.write_text(json.dumps(self.report, indent=2, default=str)))
        atomic_write(self.out / "latency.csv", lambda tmp: tmp.write_text(latency_csv(latency_rows(self.report))))
        atomic_write(self.out / "summary.md", lambda tmp: tmp.write_text(summary_markdown(self.report)))
        plot(self.report, self.out / "kit.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m compress.bench.gpu_kit", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the evidence files (created; at most 4 files)")
    ap.add_argument("--tiny", action="store_true", help="tiny widths and budgets (CPU smoke run for the tests)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                    help=f"seconds for the whole kit (default {DEFAULT_BUDGET_S}); torch.compile and the planner are "
                         "skipped, with the reason recorded, when too little is left for them")
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    p = plan(args.tiny, cuda)
    # one cuDNN setting for everything the kit times: training, latency and the planner alike
    torch.backends.cudnn.benchmark = cuda
    data = load_dataset("sample", quiet=True)
    if p["train_images"]:
        data = tt.repeat_to(data, p["train_images"], 256)
    data = data.to(device)
    spec = ModelSpec("vgg13", width=p["width"])
    report = {"format": "compress-gpu-kit/2", "tiny": args.tiny, "finished": False,
              "command": " ".join(["python -m compress.bench.gpu_kit", *(argv or [])]), "budget_s": args.budget_s,
              "cudnn_benchmark": torch.backends.cudnn.benchmark, "machine": machine(), "gpu": gpu_facts(),
              "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}}
    kit = Kit(args.out, report, args.budget_s, "tiny" if args.tiny else "full")
    kit.write()

    with tempfile.TemporaryDirectory(prefix="gpu-kit-") as work:
        untrained = spec.build()  # what the later sections measure if training fails (said in the summary)
        dense = kit.section("training", lambda: training_section(spec, data, device, p), fallback=untrained)
        models = kit.section("prune", lambda: prune_section(spec, dense, data, device, Path(work)),
                             fallback=[bench_model("dense", "dense", dense, spec)])
        kit.section("latency", lambda: latency_section(models, device, p, Path(work), kit.too_late("torch-compile")))
        kit.section("sparse24", lambda: sparse24_section(models[0].module, spec, p))
        skip = kit.too_late("planner")
        kit.section("planner", lambda: {"skipped": skip} if skip else
                    planner_section(spec, models[0].module, data, device, p))
    report["finished"] = True
    kit.write()
    out.print(f"evidence in {args.out}: {', '.join(FILES)} ({report['seconds']:.0f} s)")
    out.print(render_targets(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

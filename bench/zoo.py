"""Every classifier torchvision (or timm) lists, through the whole deployment path, or a refusal.

    python -m compress.bench.zoo                                  # all of torchvision: docs/zoo.md + docs/zoo.json
    python -m compress.bench.zoo --models resnet18,vit_b_16 --out /tmp/zoo
    python -m compress.bench.zoo --source timm                    # the timm list below: docs/zoo_timm.md + .json

Per model (random init: this is about mechanics, not accuracy): build at `--image-size` (a model
that takes a fixed size is built for it where its builder has the argument, ViT's `image_size`,
MaxViT's `input_size`, else run at its own size) -> `compress layers` (what filter pruning may
touch) -> OMP filter 30% masks (uniform layer ratios) and one masked training step -> slim
(masked == slim on real images) -> ONNX export + parity with PyTorch -> INT8 (ONNX Runtime
static QDQ; agreement with fp32) -> latency dense vs slim on ONNX Runtime CPU at batch 1.

Each model ends as `ok` (with its MACs and parameter ratios and the measured speed-up),
`refused` (the one-line reason the CLI would print: a CompressError), `failed` (anything else:
a bug of ours to fix, with the exception's first line) or `not run` (needs more memory than
`--max-gb`). Rows are written as they finish, so an interrupted run keeps what it measured.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torchvision

from compress.console import counted, err, out
from compress.data import Dataset, load_dataset
from compress.data.imagefolder import resized_dataset
from compress.env import machine, versions
from compress.errors import CompressError
from compress.export.onnx_export import export_onnx
from compress.export.parity import compare, reference_logits
from compress.export.quantize import CalibrationReader, calibration_images, evaluate_pair, quantize_file
from compress.io import atomic_write
from compress.models import ModelSpec
from compress.models.structure import fixed_filters
from compress.prune.channels import count_macs_params
from compress.prune.masks import apply_masks, filter_masks
from compress.prune.ratios import allocate
from compress.prune.slim import slim
from compress.timing.latency import Settings, measure
from compress.timing.models import BenchModel
from compress.timing.registry import get_runtimes
from compress.timing.runtimes import Context
from compress.train import TrainConfig, train

RATIO = 0.3
# timm's most used image classifiers (timm's own README results and the Hugging Face hub's
# download counts, one or two per family so that each family's structure is met once):
# residual, depthwise/inverted residual, squeeze-excitation, re-parameterised, grouped,
# attention and hybrid designs.
TIMM_MODELS = ("resnet50", "resnet18", "resnet34", "resnext50_32x4d", "seresnet50", "wide_resnet50_2",
               "efficientnet_b0", "efficientnet_b3", "tf_efficientnetv2_s", "mobilenetv3_large_100",
               "mobilenetv2_100", "mobilenetv4_conv_small", "ghostnet_100", "mnasnet_100", "regnetx_002",
               "regnety_008", "repvgg_a2", "densenet121", "dla34", "cspdarknet53", "convnext_tiny", "convnext_nano",
               "convnextv2_atto", "vit_small_patch16_224", "vit_tiny_patch16_224", "deit_small_patch16_224",
               "swin_tiny_patch4_window7_224", "efficientformer_l1", "levit_128", "mobilevit_s")
FIXED_SIZE_ARGS = {"vit_": "image_size", "maxvit": "input_size"}  # torchvision builders that take the size
# the smallest size these run at, when --image-size is below it (MaxViT: 7x7 partitions at every
# one of its 5 stride-2 stages, so 7 * 32 = 224)
NATIVE = {"inception_v3": 299, "maxvit_t": 224}


def family(source: str, name: str) -> str:
    """The module that defines the builder (torchvision.models.efficientnet -> efficientnet)."""
    try:
        if source == "torchvision":
            return torchvision.models.get_model_builder(name).__module__.rsplit(".", 1)[-1]
        import timm
        return timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]
    except Exception:  # noqa: BLE001 - an unknown name is reported by the build step
        return re.sub(r"(_?\d.*|_[a-z]$)", "", name) or name


def model_list(source: str, names: str | None) -> list[str]:
    if names:
        return [n.strip() for n in names.split(",") if n.strip()]
    if source == "torchvision":
        return torchvision.models.list_models(module=torchvision.models)
    return list(TIMM_MODELS)


def build_spec(source: str, name: str, size: int) -> ModelSpec:
    """The spec at `size`, or at the size the model needs (said in the row)."""
    args = {}
    prefix = next((p for p in FIXED_SIZE_ARGS if name.startswith(p)), None)
    size = max(size, NATIVE.get(name, 0))
    if source == "torchvision" and name.startswith("vit_"):
        patch = int(name.rsplit("_", 1)[-1])
        size = -(-size // patch) * patch  # a whole number of patches: vit_h_14 at 64 -> 70 px
    if source == "torchvision" and prefix:
        key = FIXED_SIZE_ARGS[prefix]
        args[key] = size if key == "image_size" else [size, size]
    if source == "timm" and _timm_fixed_size(name):
        args["img_size"] = size  # ViT, DeiT, Swin, LeViT, EfficientFormer: built for the size
    if source == "torchvision" and name in ("resnet18", "mobilenet_v2"):
        args["cifar_stem"] = False  # torchvision's own builder, not the registry's CIFAR variant
    return ModelSpec(f"{source}:{name}", 10, 1.0, size, args=args)


TRAIN_BATCH = 32


def _timm_fixed_size(name: str) -> bool:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    return bool(cfg is not None and getattr(cfg, "fixed_input_size", False))


def _timm_native_size(name: str) -> int | None:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.input_size[-1] if cfg is not None and getattr(cfg, "input_size", None) else None


def memory_gb(model: torch.nn.Module, example: torch.Tensor) -> float:
    """What one model costs through this path: about 8 copies of the weights (the model, its
    gradients, momentum, the slim and masked copies, the ONNX and INT8 files in memory) plus the
    activations a training batch keeps for backward (every leaf module's output once, measured at
    batch 1: MaxViT-T at 224 px, estimated 10.5 GB, ran within a 20 GB address-space limit)."""
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.numel() if torch.is_tensor(o) else 0))
             for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    finally:
        for h in hooks:
            h.remove()
    weights = 8 * sum(p.numel() for p in model.parameters())
    return (weights + TRAIN_BATCH * sum(sizes)) * 4 / 2**30


def data_at(size: int, base: Dataset) -> Dataset:
    """The sample's first 256 training / 128 test images at `size` px."""
    small = Dataset(name="sample-zoo", source=base.source, classes=base.classes, train_x=base.train_x[:256],
                    train_y=base.train_y[:256], test_x=base.test_x[:128], test_y=base.test_y[:128],
                    fingerprint="zoo")
    return small if size == small.image_size else resized_dataset(small, size)


def run_one(source: str, name: str, size: int, base: Dataset, work: Path, max_gb: float, latency: bool = True) -> dict:
    row = {"model": name, "family": family(source, name), "status": "ok", "reason": None, "image_size": size}
    t0 = time.perf_counter()
    torch.manual_seed(0)  # each row's random init and training order its own, whatever ran before it
    try:
        spec = build_spec(source, name, size)
        try:
            model = spec.build()
        except CompressError:  # a timm model whose img_size does not reach every layer (EfficientFormer)
            native = _timm_native_size(name) if source == "timm" else None
            if native is None or native <= spec.image_size:
                raise
            spec = build_spec(source, name, native)
            model = spec.build()
        row["image_size"] = spec.image_size
        need = memory_gb(model, spec.example_input())
        if need > max_gb:
            row.update(status="not run", reason=f"needs about {need:.0f} GB (over --max-gb {max_gb:g})")
            return row
        data = data_at(spec.image_size, base)
        example = spec.example_input()
        fixed = fixed_filters(model)
        convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        row["convs"], row["fixed_convs"] = convs, len(fixed)
        dense_macs, dense_params = count_macs_params(model, spec)
        ratios = allocate(model, "filter", RATIO)
        masks = filter_masks(model, ratios, example)
        apply_masks(model, masks)
        train(model, data, TrainConfig(epochs=1, batch_size=TRAIN_BATCH, lr=0.01, warmup_epochs=0, eval_every=0), masks=masks,
              show=False)
        model.eval()
        dense = spec.build().eval()
        s = slim(model, spec, data)
        row.update(macs_ratio=dense_macs / s.stats["macs"]["slim"], params_ratio=dense_params / s.stats["params"]["slim"],
                   slim_max_rel_diff=s.stats["check"]["max_rel_diff"])
        onnx_path = export_onnx(s.model, spec, work / f"{name}.onnx")
        x, ref = reference_logits(s.model, data, 32)
        row["onnx_max_rel_diff"] = compare(onnx_path, x, ref)["max_rel_diff"]
        cx, cy = calibration_images(data, 64)
        contract = {"mean": data.mean, "std": data.std}
        int8 = work / f"{name}.int8.onnx"
        quantize_file(onnx_path, int8, CalibrationReader(cx, cy, contract))
        row["int8_agreement"] = evaluate_pair(onnx_path, int8, data, contract)["agreement"]
        if latency:
            row["speedup_ort_b1"] = latency_ratio(dense, s.model, spec, work, slim_onnx=onnx_path)
    except CompressError as e:
        row.update(status="refused", reason=str(e))
    except Exception as e:  # noqa: BLE001 - a bug of ours to fix: recorded with where it happened
        where = traceback.extract_tb(e.__traceback__)[-1]
        first = (str(e).strip().splitlines() or [""])[0][:200]
        row.update(status="failed", reason=f"{type(e).__name__}: {first} ({Path(where.filename).name}:{where.lineno})")
    finally:
        row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def latency_ratio(dense: torch.nn.Module, slim_model: torch.nn.Module, spec: ModelSpec, work: Path,
                  slim_onnx: Path | None = None) -> float:
    """Dense / slim median time on ONNX Runtime CPU at batch 1, interleaved in one run (the slim
    model's ONNX file, checked above, is the one timed)."""
    models = [BenchModel("dense", "dense", dense, spec), BenchModel("slim", "slim", slim_model, spec)]
    settings = Settings(batch_sizes=(1,), runtimes=("ort-cpu",), budget_s=0.3, min_repeats=5, warmup_s=0.1, device="cpu")
    ctx = Context(device=torch.device("cpu"), threads=torch.get_num_threads(), workdir=work, spin=False)
    if slim_onnx is not None:
        ctx._onnx["slim"] = slim_onnx
    rows = measure(models, get_runtimes(["ort-cpu"]), settings, ctx, show=False)
    slim_row = next(r for r in rows if r["model"] == "slim")
    if slim_row["status"] != "ok":
        raise CompressError(f"the slim model's latency was not measured ({slim_row['reason']})")
    return slim_row["speedup_vs_dense"]


def out_stem(source: str) -> str:
    return "zoo" if source == "torchvision" else f"zoo_{source}"


def earlier_doc(args) -> dict:
    """The zoo file being resumed (empty without --resume or a file), in today's format: each row
    names the run that measured it (`run`: the id of one of `runs`, each with its command,
    machine and versions). A file of the first format, which kept one list of commands and one
    machine for all its rows, becomes one run standing for all of them."""
    path = args.out / f"{out_stem(args.source)}.json"
    if not (args.resume and path.is_file()):
        return {}
    doc = json.loads(path.read_text())
    if doc.get("source") != args.source or doc.get("image_size") != args.image_size:
        raise CompressError(f"{path} holds a run of {doc.get('source')} at {doc.get('image_size')} px",
                            "resume with the same --source and --image-size, or choose another --out")
    if "runs" not in doc:
        commands = doc.get("commands") or ([doc["command"]] if "command" in doc else [])
        doc["runs"] = [{"id": 1, "started": doc.get("started"), "command": " then ".join(commands),
                        "machine": doc.get("machine", {}), "versions": doc.get("versions", {})}]
        doc["rows"] = [{**r, "run": 1} for r in doc.get("rows", [])]
    return doc


def earlier_rows(doc: dict, redo: set[str]) -> list[dict]:
    """The rows of the run being resumed, less those named in --redo and those that failed (a
    failure is a bug of ours, perhaps fixed since). The family is named by today's code (not a
    measurement), so kept rows and new ones agree."""
    return [{**r, "family": family(doc["source"], r["model"])} for r in doc.get("rows", [])
            if r.get("status") != "failed" and r["model"] not in redo]


def write(rows: list[dict], args, runs: list[dict], done: bool) -> None:
    """zoo.json and zoo.md; `runs` keeps only the runs some row still comes from."""
    measured = {r["run"] for r in rows}
    doc = {"format": "compress-zoo/2", "source": args.source, "image_size": args.image_size, "ratio": RATIO,
           "finished": done, "runs": [r for r in runs if r["id"] in measured], "rows": rows}
    stem = out_stem(args.source)
    atomic_write(args.out / f"{stem}.json", lambda tmp: tmp.write_text(json.dumps(doc, indent=1)))
    atomic_write(args.out / f"{stem}.md", lambda tmp: tmp.write_text(markdown(doc)))


def machine_line(m: dict, v: dict) -> str:
    return (f"{m.get('cpu', '?')}, {m.get('cpu_count', '?')} CPUs (int8: {', '.join(m.get('cpu_int8') or ['none'])}; "
            f"bf16: {'yes' if m.get('cpu_bf16') else 'no'}); versions: " + ", ".join(f"{k} {x}" for k, x in v.items()))


def markdown(doc: dict) -> str:
    rows = sorted(doc["rows"], key=lambda r: r["model"])
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "refused", "failed", "not run")}
    runs = doc["runs"]
    machines = {machine_line(r["machine"], r["versions"]) for r in runs}
    shared = len(machines) == 1  # one machine line, else one per run
    header = [f"- machine: {next(iter(machines))}"] if shared else []
    header.append(f"- measured by {counted(len(runs), 'run')} "
                  f"({'complete' if doc['finished'] else 'unfinished'}); {out_stem(doc['source'])}.json names each row's run:")
    for r in runs:
        n = sum(row["run"] == r["id"] for row in rows)
        header.append(f"  - `{r['command']}` (started {r['started']}; {counted(n, 'row')})"
                      + ("" if shared else f"; machine: {machine_line(r['machine'], r['versions'])}"))
    lines = [f"# Model zoo: {doc['source']}", "",
             f"Every {doc['source']} classifier through build -> layers -> OMP filter {doc['ratio']:.0%} (conv "
             "filters, MLP hidden widths, attention heads; uniform layer ratios) -> one masked training epoch of 256 "
             "images -> slim -> ONNX + parity -> INT8 -> ONNX Runtime CPU latency (batch 1, dense / slim, "
             "interleaved). Random init: this checks the mechanics, not accuracy. `refused` is the one-line error the "
             "CLI prints; `not run` a model this machine's memory cannot take.", "",
             *header,
             f"- {len(rows)} models: " + ", ".join(f"{v} {k}" for k, v in counts.items()), "",
             "| model | family | status | px | MACs × | params × | slim = masked | ONNX parity | INT8 agreement | "
             "speed-up (ORT CPU, b1) | reason |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        def num(key, fmt):
            v = r.get(key)
            return format(v, fmt) if isinstance(v, (int, float)) else "–"
        lines.append(f"| {r['model']} | {r['family']} | {r['status']} | {r.get('image_size', '–')} | "
                     f"{num('macs_ratio', '.2f')} | {num('params_ratio', '.2f')} | {num('slim_max_rel_diff', '.0e')} | "
                     f"{num('onnx_max_rel_diff', '.0e')} | {num('int8_agreement', '.2%')} | {num('speedup_ort_b1', '.2f')} | "
                     f"{(r.get('reason') or '').replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m compress.bench.zoo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", choices=("torchvision", "timm"), default="torchvision")
    ap.add_argument("--models", default=None, help="comma-separated names (default: every model of the source)")
    ap.add_argument("--image-size", type=int, default=64, help="input size in px (default 64; fixed-size models "
                                                                "are built for it where their builder allows)")
    ap.add_argument("--max-gb", type=float, default=12.0, help="skip a model needing more memory (default 12)")
    ap.add_argument("--no-latency", action="store_true", help="skip the latency step (the tests' quick subset)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows of an earlier run in --out (same source and image size) and run the rest")
    ap.add_argument("--redo", default=None, help="with --resume: comma-separated models to run again")
    ap.add_argument("--out", type=Path, default=Path("docs"),
                    help="folder for zoo.md/zoo.json (timm: zoo_timm.md/.json; default docs)")
    args = ap.parse_args(argv)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    base = load_dataset("sample", quiet=True)
    try:
        doc = earlier_doc(args)
    except CompressError as e:
        err.print(f"[bold red]error:[/bold red] {e}", soft_wrap=True)
        return 2
    rows = earlier_rows(doc, set(args.redo.split(",")) if args.redo else set())
    done = {r["model"] for r in rows}
    command = " ".join(["python -m compress.bench.zoo", *(argv if argv is not None else sys.argv[1:])])
    run_id = 1 + max((r["id"] for r in doc.get("runs", [])), default=0)
    runs = [*doc.get("runs", []), {"id": run_id, "started": started, "command": command, "machine": machine(),
                                   "versions": versions()}]
    names = [n for n in model_list(args.source, args.models) if n not in done]
    with tempfile.TemporaryDirectory(prefix="zoo-") as work:
        for i, name in enumerate(names):
            err.print(f"[{i + 1}/{len(names)}] {name} …", end=" ")
            row = run_one(args.source, name, args.image_size, base, Path(work), args.max_gb, not args.no_latency)
            err.print(f"{row['status']} ({row['seconds']} s){': ' + row['reason'][:120] if row['reason'] else ''}",
                      soft_wrap=True)
            rows.append({**row, "run": run_id})
            write(rows, args, runs, done=False)
            for f in Path(work).iterdir():
                f.unlink()
            gc.collect()
    write(rows, args, runs, done=True)
    out.print(f"{sum(r['status'] == 'ok' for r in rows)}/{len(rows)} ok; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

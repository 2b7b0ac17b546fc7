"""What 2:4 semi-structured sparsity buys: storage always, speed on GPUs with sparse tensor cores.

    python -m compress.bench.semi_structured                      # VGG13, storage only on a CPU machine
    python -m compress.bench.semi_structured --checkpoint RUN/Omp_nm_0.50_acc_90.12.pt --batch 256 --out RUN/bench

Storage: for each conv/linear layer, the bytes of the 2:4 format (the kept half of the values
plus 2 bits of position metadata per kept value, i.e. 1 bit per dense element) against the
dense weight, in fp16. On a GPU the bytes are read from the tensors that
`torch.sparse.to_sparse_semi_structured` actually builds.

Speed (CUDA, compute capability >= 8.0 only): a layer's GEMM with the 2:4 weight against the
same GEMM with the dense weight, both through `F.linear`, in fp16 and bf16, interleaved in one
run, as a ratio (sparse time / dense time; below 1 is faster). A linear layer is a GEMM as is.
A convolution becomes one as an implicit channels-last GEMM: the weight as (out, kh*kw*in)
with the input channels innermost (where `compress nm` put the 2:4 groups), times the image
patches in the same order. Two ratios are given for a conv: GEMM vs GEMM (what the sparse
kernel buys), and im2col + sparse GEMM vs cuDNN's dense conv (what a user gets today without
a fused sparse conv kernel). Layers the format cannot take (input channels not a multiple of
4, depthwise) stay dense and are listed as such.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from rich.table import Table
from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

from compress.checkpoint import load_checkpoint
from compress.console import out
from compress.env import machine
from compress.errors import CompressError
from compress.io import atomic_write
from compress.models import ModelSpec
from compress.prune.masks import apply_masks, nm_layers, nm_masks
from compress.prune.rebuild import model_from_checkpoint

SKIP_REASON = "skipped: needs a CUDA GPU with sparse tensor cores (compute capability >= 8.0)"
N, M = 2, 4
META_BITS_PER_ELEMENT = 1  # 2-bit index per kept value, 2 kept per 4: 4 bits per 4 dense elements
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------- which layers
def layers_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def why_dense(module: nn.Module) -> str | None:
    """None when the 2:4 format applies to the layer's GEMM, else the reason it stays dense."""
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return f"grouped conv (groups={module.groups})"
        if module.in_channels % M:
            return f"in={module.in_channels}, not a multiple of {M}"
    elif module.in_features % M:
        return f"in={module.in_features}, not a multiple of {M}"
    return None


def gemm_weight(module: nn.Module) -> torch.Tensor:
    """The weight as the GEMM operand (out, K): for a conv, K ordered (kh, kw, in), channels innermost."""
    w = module.weight.detach()
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1).contiguous() if w.ndim == 4 else w.contiguous()


# --------------------------------------------------------------------------- storage
def storage_row(name: str, module: nn.Module, bytes_per_value: int = 2) -> dict:
    """Dense bytes vs 2:4 bytes (values + metadata) of one layer's weight, from the format."""
    numel = module.weight.numel()
    dense = numel * bytes_per_value
    reason = why_dense(module)
    row = {"layer": name, "shape": list(module.weight.shape), "dense_bytes": dense, "reason": reason}
    if reason:
        row.update(values_bytes=dense, metadata_bytes=0, sparse_bytes=dense, ratio=1.0)
    else:
        values = numel * N // M * bytes_per_value
        meta = numel * META_BITS_PER_ELEMENT // 8
        row.update(values_bytes=values, metadata_bytes=meta, sparse_bytes=values + meta, ratio=(values + meta) / dense)
    return row


def storage_report(model: nn.Module, bytes_per_value: int = 2) -> dict:
    rows = [storage_row(n, m, bytes_per_value) for n, m in layers_of(model)]
    dense = sum(r["dense_bytes"] for r in rows)
    sparse = sum(r["sparse_bytes"] for r in rows)
    return {"rows": rows, "dense_bytes": dense, "sparse_bytes": sparse, "ratio": sparse / dense,
            "bytes_per_value": bytes_per_value, "source": "format definition (values N/M, 1 metadata bit per element)"}


def measured_bytes(sparse_weight) -> int:
    """Bytes the semi-structured tensor really holds (CUTLASS: packed + meta; cuSPARSELt: packed)."""
    return sum(t.numel() * t.element_size() for t in (sparse_weight.packed, sparse_weight.meta) if t is not None)


# --------------------------------------------------------------------------- GPU timing
def gpu_status() -> str | None:
    """None when sparse tensor cores are usable here, else the reason they are not."""
    if not torch.cuda.is_available():
        return SKIP_REASON + "; no CUDA device here"
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return SKIP_REASON + f"; {torch.cuda.get_device_name()} is {major}.{minor}"
    return None


def pick_backend() -> str:
    cusparselt = getattr(torch.backends, "cusparselt", None)
    if cusparselt is not None and cusparselt.is_available():
        SparseSemiStructuredTensor._FORCE_CUTLASS = False
        return "cuSPARSELt"
    SparseSemiStructuredTensor._FORCE_CUTLASS = True
    return "CUTLASS"


ALIGN = 64  # rows and K padded to this (CUTLASS needs multiples of 32 x 64 in fp16, cuSPARSELt 16 x 16)


def pad_rows(w: torch.Tensor, multiple: int = ALIGN) -> torch.Tensor:
    """Zero rows up to a multiple the kernels accept (a zero group of 4 is a valid 2:4 group)."""
    extra = (-w.shape[0]) % multiple
    return torch.cat([w, w.new_zeros(extra, w.shape[1])]) if extra else w


def pad_cols(t: torch.Tensor, multiple: int = ALIGN) -> torch.Tensor:
    """Zero columns (GEMM K) up to a multiple: zero weights times zero inputs add nothing."""
    extra = (-t.shape[1]) % multiple
    return F.pad(t, (0, extra)) if extra else t


def im2col(x: torch.Tensor, conv: nn.Conv2d) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(patches (N*L, kh*kw*in) with channels innermost, (N, H_out, W_out))."""
    n, c = x.shape[:2]
    cols = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (N, C*k*k, L), C outermost
    kk = conv.kernel_size[0] * conv.kernel_size[1]
    h = (x.shape[2] + 2 * conv.padding[0] - conv.dilation[0] * (conv.kernel_size[0] - 1) - 1) // conv.stride[0] + 1
    w = (x.shape[3] + 2 * conv.padding[1] - conv.dilation[1] * (conv.kernel_size[1] - 1) - 1) // conv.stride[1] + 1
    patches = cols.view(n, c, kk, -1).permute(0, 3, 2, 1).reshape(n * h * w, kk * c)
    return patches, (n, h, w)


def interleaved(fns: dict, runs: int, inner: int = 10, warmup: int = 5) -> dict:
    """Median ms per call of each function, timed in alternation with CUDA events (`inner`
    calls between two events, so launch gaps do not dominate small layers)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    times = {k: [] for k in fns}
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(runs):
        for k, fn in fns.items():
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            times[k].append(start.elapsed_time(end) / inner)
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "runs": runs}
            for k, v in times.items()}


@torch.no_grad()
def time_layer(module: nn.Module, x: torch.Tensor, dtype: torch.dtype, runs: int) -> dict:
    """Dense vs 2:4 GEMM (and, for convs, cuDNN conv vs im2col + 2:4 GEMM) for one layer."""
    module = copy.deepcopy(module).to(device="cuda", dtype=dtype)
    x = x.to(device="cuda", dtype=dtype)
    w_dense = pad_cols(pad_rows(gemm_weight(module)))
    out_rows = module.weight.shape[0]
    w_sparse = to_sparse_semi_structured(w_dense)
    if isinstance(module, nn.Conv2d):
        x_cl = x.contiguous(memory_format=torch.channels_last)
        operand = pad_cols(im2col(x, module)[0])
        fns = {
            "dense_gemm": lambda: F.linear(operand, w_dense),
            "sparse_gemm": lambda: F.linear(operand, w_sparse),
            "dense_conv": lambda: F.conv2d(x_cl, module.weight, None, module.stride, module.padding,
                                           module.dilation),
            "sparse_conv": lambda: F.linear(pad_cols(im2col(x, module)[0]), w_sparse),
        }
    else:
        operand = pad_cols(x)
        fns = {"dense_gemm": lambda: F.linear(operand, w_dense), "sparse_gemm": lambda: F.linear(operand, w_sparse)}
    ref, got = F.linear(operand, w_dense)[:, :out_rows].float(), F.linear(operand, w_sparse)[:, :out_rows].float()
    rel = ((ref - got).abs().max() / ref.abs().max().clamp_min(1e-6)).item()
    t = interleaved(fns, runs)
    row = {"gemm_m_n_k": [operand.shape[0], w_dense.shape[0], w_dense.shape[1]], "times": t,
           "max_rel_diff": rel, "sparse_bytes": measured_bytes(w_sparse),
           "dense_bytes": w_dense.numel() * w_dense.element_size(),
           "gemm_ratio": t["sparse_gemm"]["median_ms"] / t["dense_gemm"]["median_ms"]}
    if "dense_conv" in t:
        row["conv_ratio"] = t["sparse_conv"]["median_ms"] / t["dense_conv"]["median_ms"]
    return row


def layer_inputs(model: nn.Module, batch: int, image_size: int, in_channels: int = 3) -> dict[str, tuple]:
    """Each conv/linear layer's input shape at this batch size (one forward pass with hooks)."""
    shapes, hooks = {}, []
    for name, m in layers_of(model):
        hooks.append(m.register_forward_hook(lambda mod, inp, out, name=name: shapes.__setitem__(name, tuple(inp[0].shape))))
    with torch.no_grad():
        model.eval()(torch.zeros(batch, in_channels, image_size, image_size))
    for h in hooks:
        h.remove()
    return shapes


def speed_report(model: nn.Module, batch: int, image_size: int, dtypes: list[str], runs: int,
                 in_channels: int = 3) -> dict:
    backend = pick_backend()
    cudnn_before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # the dense conv baseline gets cuDNN's fastest algorithm
    try:
        shapes = layer_inputs(model, batch, image_size, in_channels)
        rows = []
        for name, m in layers_of(model):
            reason = why_dense(m)
            row = {"layer": name, "kind": type(m).__name__, "input": list(shapes[name]), "reason": reason}
            if reason is None:
                torch.manual_seed(0)
                x = torch.randn(shapes[name])
                for d in dtypes:
                    try:
                        row[d] = time_layer(m, x, DTYPES[d], runs)
                    except (RuntimeError, NotImplementedError) as e:  # a shape or dtype this build refuses
                        row[d] = {"error": str(e).splitlines()[0][:200]}
            rows.append(row)
    finally:
        torch.backends.cudnn.benchmark = cudnn_before  # the caller's setting, as it was
    return {"backend": backend, "device": torch.cuda.get_device_name(), "capability":
            list(torch.cuda.get_device_capability()), "batch": batch, "rows": rows}


# --------------------------------------------------------------------------- the model
def load_model(args) -> tuple[nn.Module, dict]:
    """The checkpoint's model (its 2:4 weights), or a fresh one pruned to 2:4 by magnitude."""
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint, kinds=("pruned", "dense"))
        spec = ModelSpec.from_dict(ckpt["model"])
        model = model_from_checkpoint(ckpt)
        source = str(args.checkpoint)
    else:
        spec = ModelSpec(args.model, width=args.width, image_size=args.image_size)
        model = spec.build().eval()
        source = f"fresh {args.model} (width {args.width}), 2:4 magnitude masks (timings do not depend on values)"
    masks = nm_masks(model, nm_layers(model, M), N, M)
    apply_masks(model, masks)  # idempotent for a 2:4 checkpoint; makes a dense one 2:4
    return model, {"spec": spec.to_dict(), "source": source}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compress.bench.semi_structured", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg13")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--checkpoint", type=Path, default=None, help="an N:M-pruned model (compress nm); default: fresh")
    p.add_argument("--batch", type=int, default=128, help="images per forward pass (default 128)")
    p.add_argument("--dtypes", default="fp16,bf16", help="comma list of fp16, bf16")
    p.add_argument("--runs", type=int, default=30, help="timed repetitions per variant (default 30)")
    p.add_argument("--out", type=Path, default=None, help="folder for semi_structured.json")
    args = p.parse_args(argv)

    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        p.error(f"unknown dtype {unknown[0]!r}; choose from {', '.join(DTYPES)}")
    try:
        model, about = load_model(args)
    except CompressError as e:
        out.print(f"error: {e}")
        return 2
    spec = about["spec"]
    report = {"format": "compress-semi-structured/1", "model": about, "machine": machine(),
              "pattern": f"{N}:{M}", "storage": storage_report(model)}
    reason = gpu_status()
    if reason:
        report["speed"] = {"skipped": reason}
    else:
        report["speed"] = speed_report(model, args.batch, spec["image_size"], dtypes, args.runs, spec["in_channels"])
    render(report, out)
    if args.out:
        path = args.out / "semi_structured.json"
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
        out.print(f"saved {path}")
    return 0


def render(report: dict, out) -> None:
    st = report["storage"]
    t = Table(title=f"2:4 storage vs dense, fp16 weights ({report['model']['spec']['name']})",
              caption="2:4 = kept values (half) + metadata (2 bits per kept value); a ratio below 1 is smaller")
    for c in ("layer", "shape", "dense KiB", "values KiB", "metadata KiB", "2:4 / dense", "note"):
        t.add_column(c, justify="left" if c in ("layer", "shape", "note") else "right")
    for r in st["rows"]:
        t.add_row(r["layer"], "×".join(map(str, r["shape"])), f"{r['dense_bytes'] / 1024:.1f}",
                  f"{r['values_bytes'] / 1024:.1f}", f"{r['metadata_bytes'] / 1024:.1f}", f"{r['ratio']:.4f}",
                  f"stays dense: {r['reason']}" if r["reason"] else "")
    t.add_section()
    t.add_row("all layers", "", f"{st['dense_bytes'] / 1024:.1f}", "", "", f"{st['ratio']:.4f}", "", style="bold")
    out.print(t)
    speed = report["speed"]
    if "skipped" in speed:
        out.print(f"speed: {speed['skipped']}; storage only (computed from the format).")
        return
    t = Table(title=f"2:4 speed on {speed['device']} ({speed['backend']}, batch {speed['batch']})",
              caption="ratios are 2:4 time / dense time, medians of interleaved runs; below 1 is faster")
    t.add_column("layer")
    t.add_column("GEMM M×N×K")
    for d in (k for k in DTYPES if any(k in r for r in speed["rows"])):
        t.add_column(f"{d} GEMM ratio", justify="right")
        t.add_column(f"{d} conv ratio", justify="right")
    for r in speed["rows"]:
        if r["reason"]:
            continue
        cells, mnk = [], ""
        for d in DTYPES:
            if d not in r:
                continue
            if "error" in r[d]:
                cells += [r[d]["error"][:30], ""]
                continue
            mnk = "×".join(map(str, r[d]["gemm_m_n_k"]))
            cells += [f"{r[d]['gemm_ratio']:.3f}", f"{r[d]['conv_ratio']:.3f}" if "conv_ratio" in r[d] else "—"]
        t.add_row(r["layer"], mnk, *cells)
    out.print(t)


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput of the toolchain's loop against a plain PyTorch loop, measured side by side.

    python -m compress.bench.train_throughput --model vgg13 --batch-size 128 --steps 20 [--device cpu] [--masks]

The toolchain's loop is `compress.train.train` itself, run for one epoch over a training set
of exactly `steps` batches (the bundled sample, repeated), and timed the way it times itself
(wall clock over the epoch's steps, device synchronised at the end; its evaluation after the
epoch is not counted). The plain loop is the textbook step (forward, cross-entropy, backward,
SGD step) over the same model, batch size and data, with random batches normalised on the
device and no augmentation: the cheapest honest baseline. Both train in the precision the toolchain
picks (`compress.train.uses_bf16`: bf16 autocast and channels_last on CUDA and on CPUs with bf16
units). With `--masks`, the toolchain's masked-retraining step (MaskEnforcer, 80% unstructured
masks) runs too and is compared with the unmasked one.

Runs are interleaved (plain, toolchain, masked; then the order rotates), after one untimed
warm-up run of each; the ratios are of medians over runs, with the per-run ratios' range.
Targets: toolchain >= 0.95x plain (CPU); masked >= 0.95x unmasked; on an H100/H200, VGG13 at
batch 512 >= 20,000 training images/s.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from compress.console import counted, err, out
from compress.data import Dataset, load_dataset
from compress.env import machine, resolve_device
from compress.errors import CompressError
from compress.models import ModelSpec
from compress.prune.masks import unstructured_masks
from compress.prune.ratios import allocate
from compress.train import TrainConfig, autocast, train, uses_bf16

TARGET_RATIO = 0.95


def repeat_to(data: Dataset, n_train: int, n_test: int = 64) -> Dataset:
    """`data` with exactly `n_train` training images (repeated as needed) and a tiny test split."""
    reps = -(-n_train // data.train_x.shape[0])
    return Dataset(name=f"{data.name}-x{reps}", source=data.source, classes=data.classes,
                   train_x=data.train_x.repeat(reps, 1, 1, 1)[:n_train], train_y=data.train_y.repeat(reps)[:n_train],
                   test_x=data.test_x[:n_test], test_y=data.test_y[:n_test], fingerprint="throughput")


class ToolchainLoop:
    """`compress.train.train` for one epoch of `steps` batches; images/s as it measures them."""

    def __init__(self, spec: ModelSpec, data: Dataset, batch_size: int, device: torch.device, masks: bool):
        torch.manual_seed(0)
        self.model = spec.build()
        self.masks = unstructured_masks(self.model, allocate(self.model, "unstructured", 0.8)) if masks else None
        self.data, self.device = data, device
        self.cfg = TrainConfig(epochs=1, batch_size=batch_size, eval_every=0, warmup_epochs=0.5)

    def run(self, data: Dataset | None = None) -> float:
        data = data or self.data
        result = train(self.model, data, self.cfg, device=self.device, masks=self.masks, show=False)
        steps = data.train_x.shape[0] // self.cfg.batch_size
        return steps * self.cfg.batch_size / result.seconds


class PlainLoop:
    """The textbook training step over the same data, model and batch size."""

    def __init__(self, spec: ModelSpec, data: Dataset, batch_size: int, device: torch.device):
        torch.manual_seed(0)
        self.cuda = device.type == "cuda"
        self.bf16 = uses_bf16(device)  # the precision the toolchain's loop trains in here
        self.model = spec.build().to(device)
        if self.bf16:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        self.data, self.batch_size, self.device = data, batch_size, device
        self.mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(data.std, device=device).view(1, -1, 1, 1) * 255

    def run(self, data: Dataset | None = None) -> float:
        data = data or self.data
        x, y, bs = data.train_x, data.train_y, self.batch_size
        steps = x.shape[0] // bs
        self.model.train()
        t0 = time.perf_counter()
        order = torch.randperm(x.shape[0]).to(self.device)
        for i in range(steps):
            idx = order[i * bs:(i + 1) * bs]
            xb = (x[idx].float() - self.mean) / self.std
            if self.bf16:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.bf16):
                loss = F.cross_entropy(self.model(xb), y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        if self.cuda:
            torch.cuda.synchronize()
        return steps * bs / (time.perf_counter() - t0)


def measure(loops: dict, runs: int, warmup_data: Dataset) -> dict[str, list[float]]:
    """Images/s per loop and run: one untimed warm-up each, then interleaved, rotating runs."""
    names = list(loops)
    for name in names:
        loops[name].run(warmup_data)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            rates[name].append(loops[name].run())
            err.print(f"  run {r + 1}/{runs} {name:<10} {rates[name][-1]:8.1f} images/s")
    return rates


def ratio_line(label: str, num: list[float], den: list[float]) -> tuple[str, float]:
    ratio = statistics.median(num) / statistics.median(den)
    per_run = [a / b for a, b in zip(num, den)]
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    return (f"{label}: {ratio:.3f}x (per-run {min(per_run):.3f}–{max(per_run):.3f}x; "
            f"target >= {TARGET_RATIO}x: {verdict})"), ratio


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compress.bench.train_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg13")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier (default 1.0)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="training steps per timed run (default 20)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per loop, interleaved (default 3)")
    p.add_argument("--warmup-steps", type=int, default=2, help="steps of the untimed warm-up run (default 2)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's setting)")
    p.add_argument("--masks", action="store_true", help="also time masked retraining (80%% unstructured masks)")
    args = p.parse_args(argv)
    try:
        for name in ("batch_size", "steps", "runs"):
            if getattr(args, name) <= 0:
                raise CompressError(f"--{name.replace('_', '-')} must be positive (got {getattr(args, name)})")
        if args.warmup_steps < 1:
            raise CompressError("--warmup-steps must be at least 1")
        if args.threads:
            torch.set_num_threads(args.threads)
        device = resolve_device(args.device)
        sample = load_dataset("sample", quiet=True)
        data = repeat_to(sample, args.steps * args.batch_size).to(device)
        warm = repeat_to(sample, args.warmup_steps * args.batch_size).to(device)
        spec = ModelSpec(args.model, sample.num_classes, args.width, sample.image_size)
        spec.build()  # unknown model names fail here
    except CompressError as e:
        err.print(f"[bold red]error:[/bold red] {e}")
        return 2

    info = machine()
    threads = torch.get_num_threads()
    where = info["gpu"] if device.type == "cuda" else f"{info['cpu']} ({counted(threads, 'thread')})"
    out.print(f"[bold]training throughput[/bold]: {args.model} width {args.width}, batch {args.batch_size}, "
              f"{args.steps} steps per run, {args.runs} interleaved runs per loop after a {args.warmup_steps}-step "
              f"warm-up run; device {device} = {where}; "
              f"{'bf16 autocast + channels_last' if device.type == 'cuda' else 'fp32'}")
    out.print("versions: " + ", ".join(f"{k} {info[k]}" for k in ("python", "torch", "torchvision") if k in info))
    loops = {"plain": PlainLoop(spec, data, args.batch_size, device),
             "toolchain": ToolchainLoop(spec, data, args.batch_size, device, masks=False)}
    if args.masks:
        loops["masked"] = ToolchainLoop(spec, data, args.batch_size, device, masks=True)
    rates = measure(loops, args.runs, warm)

    for name, r in rates.items():
        out.print(f"{name:<10} median {statistics.median(r):9.1f} images/s  (min {min(r):.1f}, max {max(r):.1f}, "
                  f"{len(r)} runs)")
    line, _ = ratio_line("toolchain / plain", rates["toolchain"], rates["plain"])
    out.print(line)
    if args.masks:
        line, _ = ratio_line("masked / unmasked (toolchain)", rates["masked"], rates["toolchain"])
        out.print(line)
    if device.type == "cuda" and args.model == "vgg13" and args.width == 1.0 and args.batch_size == 512:
        best = statistics.median(rates["toolchain"])
        out.print(f"H100/H200 target: >= 20,000 images/s at batch 512 bf16: {best:,.0f} "
                  f"({'meets' if best >= 20000 else 'BELOW'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

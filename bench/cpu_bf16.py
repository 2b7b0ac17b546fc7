"""Is bf16 faster than fp32 for PyTorch on this CPU? Training steps and inference, side by side.

    python -m compress.bench.cpu_bf16 [--model vgg13] [--batch-size 64] [--steps 10] [--rounds 3]

bf16 here is `torch.autocast("cpu", dtype=torch.bfloat16)` with the model and inputs in
channels_last, the CPU counterpart of what the training loop does on CUDA. Only CPUs with bf16
units (AVX-512-BF16, AMX) run it natively; elsewhere oneDNN emulates it and it is slower, which
this script then shows. One training step is forward, cross-entropy, backward and an SGD step on
random images; inference is a forward pass in inference mode. Each round times fp32 then bf16
(then the order flips), after one untimed warm-up of each; ratios are of medians over rounds.
Accuracy is not measured here: a default change also needs a paired validation comparison.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from compress.console import out
from compress.env import cpu_flags, machine
from compress.models import ModelSpec


def _cpu_flags() -> list[str]:
    flags = cpu_flags()
    return [f for f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni") if f in flags]


def timed(fn, steps: int) -> float:
    """Seconds per call over `steps` calls."""
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compress.bench.cpu_bf16", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg13")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    spec = ModelSpec(args.model)
    x = torch.randn(args.batch_size, 3, spec.image_size, spec.image_size)
    y = torch.randint(0, spec.num_classes, (args.batch_size,))
    models = {"fp32": spec.build(), "bf16": spec.build().to(memory_format=torch.channels_last)}
    inputs = {"fp32": x, "bf16": x.contiguous(memory_format=torch.channels_last)}
    optims = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}

    def train_step(kind: str):
        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "bf16"):
                loss = F.cross_entropy(models[kind](inputs[kind]), y)
            optims[kind].zero_grad(set_to_none=True)
            loss.backward()
            optims[kind].step()
        return step

    def infer(kind: str):
        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "bf16"):
                models[kind](inputs[kind])
        return run

    results = {}
    for what, make, steps in (("training step", train_step, args.steps), ("inference", infer, 2 * args.steps)):
        for kind in ("fp32", "bf16"):
            models[kind].train(what == "training step")
            make(kind)()  # warm-up (oneDNN picks and caches its kernels)
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for r in range(args.rounds):
            for kind in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
                times[kind].append(timed(make(kind), steps))
        fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
        results[what] = (fp32, bf16)
        out.print(f"{what}: fp32 {args.batch_size / fp32:,.0f} images/s, bf16 autocast + channels_last "
                  f"{args.batch_size / bf16:,.0f} images/s: bf16 is {fp32 / bf16:.2f}x fp32")
    m = machine()
    out.print(f"{args.model}, batch {args.batch_size}, {m['torch_threads']} threads, {m['cpu']} "
              f"({', '.join(_cpu_flags()) or 'no bf16/VNNI flags'}), torch {m['torch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Latency of a list of models (dense baseline first) × runtimes × batch sizes.

For each runtime and batch size ("a cell") every model is warmed up, then timed in
round-robin blocks: block 1 runs model A's calls, then B's, then C's; block 2 starts with B;
and so on. Machine drift (another process, clock boost, thermal state) then hits all models
alike, and each model's speed-up over dense is a ratio of medians measured side by side.
Python's garbage collector is off while timing (as `timeit` does).
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from compress.console import progress
from compress.timing.clocks import CudaClock, WallClock, summarize
from compress.timing.models import BenchModel
from compress.timing.runtimes import Context, Failed, Runtime, Skipped

RESULT_KEYS = ("model", "runtime", "batch_size", "status", "reason", "median_ms", "p90_ms", "min_ms", "max_ms",
               "iqr_ms", "images_per_s", "speedup_vs_dense", "speedup_vs_dense_fp32", "speedup_vs_fp32", "peak_gpu_mb",
               "repeats", "warmup", "clock")


@dataclass
class Settings:
    """How long and how often to measure. `None` warm-up/repeats: chosen per cell by time."""

    batch_sizes: tuple[int, ...] = (1, 32, 256)
    runtimes: tuple[str, ...] | None = None  # None: every runtime (those that cannot run give skipped rows)
    device: str = "auto"  # where the torch runtimes run: auto | cpu | cuda[:N]
    warmup: int | None = None  # calls per model before timing; None: >= min_warmup calls and >= warmup_s
    repeats: int | None = None  # timed calls per model and cell; None: budget_s of calls, within the bounds
    threads: int | None = None  # CPU threads for torch and ONNX Runtime; None: torch's current setting
    budget_s: float = 1.0  # timed seconds per model and cell (adaptive repeats)
    min_repeats: int = 5  # even when one call takes longer than the budget (batch 256 on a small CPU)
    max_repeats: int = 500
    min_warmup: int = 2
    warmup_s: float = 0.2  # seconds of warm-up after the first (cold) call
    blocks: int = 5  # round-robin blocks per cell: each model's calls are split over them
    # ONNX Runtime's worker threads spin after a call; with many sessions interleaved, the one
    # that just ran steals the cores of the next (VGG13, batch 64, 2 threads: IQR 10 ms -> 2 ms off)
    ort_spinning: bool = True

    @classmethod
    def quick(cls, **changes) -> "Settings":
        """A short run for the end of a pruning pipeline: batch 1 and 64, fewer and shorter runs."""
        base = dict(batch_sizes=(1, 64), budget_s=0.4, min_repeats=5, max_repeats=200, min_warmup=1,
                    warmup_s=0.1)
        return cls(**{**base, **{k: v for k, v in changes.items() if v is not None}})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batch_sizes"] = list(self.batch_sizes)
        d["runtimes"] = list(self.runtimes) if self.runtimes is not None else None
        return d


@dataclass
class _Cell:
    """One model in one (runtime, batch size) cell while it is being measured."""

    model: BenchModel
    call: object = None
    times: list[float] = field(default_factory=list)
    warmup: int = 0
    peak_gpu_mb: float | None = None
    status: str = "ok"  # "ok" | "skipped" (does not apply here) | "failed" (tried and broke)
    reason: str | None = None


def measure(models: list[BenchModel], runtimes: list[Runtime], settings: Settings, ctx: Context,
            show: bool = True) -> list[dict]:
    """Result rows (see RESULT_KEYS) for every model × runtime × batch size; speed-ups vs models[0]."""
    rows: list[dict] = []
    total = len(models) * len(runtimes) * len(settings.batch_sizes)
    with progress(transient=True, show=show) as bar:
        task = bar.add_task("bench", total=total, status="")
        for runtime in runtimes:
            try:
                runtime.check(ctx)
            except Skipped as s:
                rows += [_skipped(m, runtime, bs, str(s)) for bs in settings.batch_sizes for m in models]
                bar.advance(task, len(models) * len(settings.batch_sizes))
                continue
            loaded, load_errors = {}, {}
            for m in models:
                bar.update(task, status=f"{runtime.name}: preparing {m.name}")
                try:
                    loaded[m.name] = runtime.load(m, ctx)
                except Skipped as s:
                    load_errors[m.name] = ("skipped", str(s))
                except Failed as f:
                    load_errors[m.name] = ("failed", str(f))
                except Exception as e:  # a session or conversion that fails: its rows say so, the rest run
                    load_errors[m.name] = ("failed", f"{type(e).__name__}: {_first_line(e)}")
            for bs in settings.batch_sizes:
                bar.update(task, status=f"{runtime.name} batch {bs}")
                rows += _measure_cell(models, runtime, bs, loaded, load_errors, settings, ctx)
                bar.advance(task, len(models))
            del loaded
            _free(ctx)
    return add_int8_speedups(add_speedups(rows, models[0].name), models[0].name)


def _measure_cell(models, runtime: Runtime, bs: int, loaded: dict, load_errors: dict, settings: Settings,
                  ctx: Context) -> list[dict]:
    why = runtime.skip_batch(bs)
    if why:
        return [_skipped(m, runtime, bs, why) for m in models]
    clock = CudaClock() if runtime.clock_for(ctx) == "cuda" else WallClock()
    track_memory = runtime.uses_torch and runtime.on_cuda(ctx)
    cells = [_Cell(m, status=load_errors.get(m.name, ("ok", None))[0], reason=load_errors.get(m.name, ("ok", None))[1])
             for m in models]
    for c in cells:  # prepare and warm up one model at a time (peak memory is per model)
        if c.status != "ok":
            continue
        try:
            base = _memory_start(track_memory)
            c.call = runtime.call(loaded[c.model.name], c.model, bs, ctx)
            _warm_up(c, clock, settings)
            c.peak_gpu_mb = _memory_peak(track_memory, base, loaded[c.model.name])
        except Skipped as s:
            c.status, c.reason, c.call = "skipped", str(s), None
        except torch.cuda.OutOfMemoryError:
            c.status, c.reason, c.call = "skipped", f"out of GPU memory at batch {bs}", None
        except Failed as f:
            c.status, c.reason, c.call = "failed", str(f), None
        except Exception as e:  # a runtime that fails at inference: say so in its row, keep the others
            c.status, c.reason, c.call = "failed", f"{type(e).__name__}: {_first_line(e)}", None
        _free(ctx)
    live = [c for c in cells if c.call is not None]
    gc.collect()
    gc.disable()
    try:
        for b in range(settings.blocks):
            order = live[b % len(live):] + live[: b % len(live)] if live else []
            for c in order:
                _timed_block(c, clock, settings, b)
    finally:
        gc.enable()
    rows = []
    for c in cells:
        if c.call is None:
            rows.append(_skipped(c.model, runtime, bs, c.reason, c.status))
            continue
        stats = summarize(c.times)
        rows.append({"model": c.model.name, "runtime": runtime.name, "batch_size": bs, "status": "ok",
                     "reason": None, **stats, "images_per_s": bs / (stats["median_ms"] / 1e3),
                     "speedup_vs_dense": None, "speedup_vs_dense_fp32": None, "speedup_vs_fp32": None,
                     "peak_gpu_mb": c.peak_gpu_mb, "repeats": len(c.times),
                     "warmup": c.warmup, "clock": clock.kind})
        c.call = None
    return rows


def _warm_up(c: _Cell, clock, settings: Settings) -> None:
    """Untimed calls: `settings.warmup` of them, or (adaptive) at least `min_warmup` and, after
    the first (cold) call, at least `warmup_s` seconds of them."""
    start = None
    while True:
        n = c.warmup
        if settings.warmup is not None:
            if n >= settings.warmup:
                break
        elif n >= max(1, settings.min_warmup) and (time.perf_counter() - start >= settings.warmup_s or n >= 200):
            break
        clock.time(c.call)
        c.warmup += 1
        if start is None:
            start = time.perf_counter()
    clock.sync()


def _timed_block(c: _Cell, clock, settings: Settings, block: int) -> None:
    """This model's share of the timed calls in round-robin block `block`.

    Fixed `repeats`: spread evenly over the blocks. Adaptive: calls for budget_s/blocks
    seconds, at least min_repeats/blocks and at most max_repeats/blocks of them.
    """
    left = settings.blocks - block
    if settings.repeats:
        for _ in range(math.ceil((settings.repeats - len(c.times)) / left)):
            c.times.append(clock.time(c.call))
        return
    least = math.ceil(settings.min_repeats / settings.blocks)
    most = max(least, settings.max_repeats // settings.blocks)
    deadline = time.perf_counter() + settings.budget_s / settings.blocks
    n = 0
    while n < most and (n < least or time.perf_counter() < deadline):
        c.times.append(clock.time(c.call))
        n += 1


def add_int8_speedups(rows: list[dict], reference: str) -> list[dict]:
    """INT8 rows also against fp32 in ONNX Runtime CPU, same batch: vs the dense fp32 model
    (what a deployment replaces) and vs the same model in fp32 (what quantization adds)."""
    fp32 = {(r["model"], r["batch_size"]): r["median_ms"] for r in rows
            if r["runtime"] == "ort-cpu" and r["status"] == "ok"}
    for r in rows:
        if r["runtime"] == "ort-cpu-int8" and r["status"] == "ok":
            dense, same = fp32.get((reference, r["batch_size"])), fp32.get((r["model"], r["batch_size"]))
            r["speedup_vs_dense_fp32"] = dense / r["median_ms"] if dense else None
            r["speedup_vs_fp32"] = same / r["median_ms"] if same else None
    return rows


def add_speedups(rows: list[dict], reference: str) -> list[dict]:
    """speedup_vs_dense = reference median / model median, within each (runtime, batch size)."""
    ref = {(r["runtime"], r["batch_size"]): r["median_ms"] for r in rows
           if r["model"] == reference and r["status"] == "ok"}
    for r in rows:
        base = ref.get((r["runtime"], r["batch_size"]))
        if r["status"] == "ok" and base:
            r["speedup_vs_dense"] = 1.0 if r["model"] == reference else base / r["median_ms"]
    return rows


def _skipped(m: BenchModel, runtime: Runtime, bs: int, reason: str, status: str = "skipped") -> dict:
    """A row that was not measured: "skipped" (not applicable here) or "failed" (tried and broke)."""
    row = dict.fromkeys(RESULT_KEYS)
    row.update(model=m.name, runtime=runtime.name, batch_size=bs, status=status, reason=reason)
    return row


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0][:200] if str(e) else ""


def _memory_start(track: bool) -> int:
    if not track:
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def _memory_peak(track: bool, base: int, loaded) -> float | None:
    """Peak GPU memory of this model's inference (MiB): its weights plus its activations' peak."""
    if not track:
        return None
    torch.cuda.synchronize()
    module = getattr(loaded, "_orig_mod", loaded)  # torch.compile wraps the module
    weights = sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))
    return (torch.cuda.max_memory_allocated() - base + weights) / 2**20


def _free(ctx: Context) -> None:
    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()

"""What `compress sweep` / `run_sweep`, `compress sensitivity` / `run_sensitivity` and `compress plan`
/ `make_plan` (and `filter --speedup`) take, declared once: each field's default, flag, help and choices, from which the CLI builds its arguments
(`compress.options`). A plain module: building the parser does not import torch."""
from __future__ import annotations

import math
from dataclasses import dataclass

from compress.analysis.goals import latency_value, speedup_value
from compress.console import counted
from compress.errors import CompressError, did_you_mean
from compress.kinds import ALLOCATIONS, CRITERIA, CRITERION, PLAN_COSTS, PLAN_SEARCHES
from compress.options import comma_list, non_negative_int, number, number_list, option, positive_int

KINDS = ("unstructured", "filter")
# Unstructured: the range where a trained CNN goes from "no loss" to "collapsed".
# Filter: whole filters go much sooner (a pruned filter removes a feature map everything
# downstream reads), so the interesting part starts near 5% and is over well before 90%;
# 0.01 steps are about one filter of a 64-filter layer.
DEFAULT_GRID = {"unstructured": (0.80, 0.98, 0.002), "filter": (0.05, 0.90, 0.01)}
MAX_POINTS = 1000


def _per_kind(i: int) -> str:
    return ", ".join(f"{DEFAULT_GRID[k][i]:g} {k}" for k in KINDS)


@dataclass
class SweepOptions:
    kind: str = option("unstructured", "--kind", "what is pruned", choices=KINDS)
    start: float | None = option(None, "--start", "first sparsity; under torchrun write --first (torchrun's own parser "
                                 "reads --start as its --start-method)", parse=number, metavar="S",
                                 default_text=_per_kind(0), aliases=("--first",))
    stop: float | None = option(None, "--stop", "last sparsity", parse=number, metavar="S", default_text=_per_kind(1))
    step: float | None = option(None, "--step", "step", parse=number, metavar="S", default_text=_per_kind(2))
    allocation: str = option("global", "--allocation", "global: one ranking over all layers decides where to prune "
                             "(layers of small weights lose more); uniform: the same ratio for every layer",
                             choices=ALLOCATIONS)
    criteria: tuple[str, ...] = option((CRITERION,), "--criterion", f"{', '.join(CRITERIA)}; comma-separated for "
                                       "several (one curve each, one figure)", metavar="LIST", from_text=comma_list)
    recalibrate_bn: int = option(4, "--recalibrate-bn", "re-estimate BatchNorm statistics on N batches of 128 training "
                                 "images after pruning each point, the weights staying one-shot: without it a "
                                 "BatchNorm network's curve mostly measures stale statistics; 0: pure one-shot",
                                 parse=non_negative_int, metavar="N")
    finetune_steps: int = option(0, "--finetune-steps", "masked SGD steps (batch 128) after pruning each point, before "
                                 "evaluating; 0: one-shot", parse=non_negative_int, metavar="N")
    finetune_lr: float = option(0.01, "--finetune-lr", "constant lr of that fine-tune at batch 128, a tenth of the "
                                "dense peak", parse=number, metavar="LR")
    max_drop: float | None = option(None, "--max-drop", "accuracy points below dense still acceptable at the trade-off",
                                    parse=number, metavar="POINTS",
                                    default_text="1 point, or two standard errors of an accuracy on the validation "
                                                 "split when that is larger: 3.1 on the sample's 814 validation "
                                                 "images, where one point is noise")
    finetune_batch: int = 128
    seed: int = 0

    def grid(self) -> list[float]:
        start, stop, step = DEFAULT_GRID.get(self.kind, DEFAULT_GRID["unstructured"])
        return sparsity_grid(self.start if self.start is not None else start,
                             self.stop if self.stop is not None else stop,
                             self.step if self.step is not None else step)

    def validate(self) -> None:
        from compress.prune.criteria import get_criterion  # torch: only when a sweep is about to run

        if self.kind not in KINDS:
            raise CompressError(f"a sweep prunes unstructured or filter, not {self.kind!r}",
                                did_you_mean(self.kind, KINDS))
        if self.allocation not in ALLOCATIONS:
            raise CompressError(f"unknown allocation {self.allocation!r}", did_you_mean(self.allocation, ALLOCATIONS))
        if not self.criteria:
            raise CompressError("no criterion given", f"e.g. --criterion {','.join(CRITERIA)}")
        for c in self.criteria:
            get_criterion(c)
        if len(set(self.criteria)) != len(self.criteria):
            raise CompressError(f"criteria listed twice: {','.join(self.criteria)}", "name each criterion once")
        if self.max_drop is not None and not (math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise CompressError(f"--max-drop must be a number of accuracy points >= 0 (got {self.max_drop})",
                                "e.g. --max-drop 1.0 for 'within one point of dense'")
        if self.finetune_steps < 0:
            raise CompressError(f"--finetune-steps must be >= 0 (got {self.finetune_steps})")
        if self.recalibrate_bn < 0:
            raise CompressError(f"--recalibrate-bn must be >= 0 (got {self.recalibrate_bn})")
        self.grid()

    @property
    def treatment(self) -> str:
        """What happens to each pruned point before it is measured, in words ('' for nothing)."""
        parts = []
        if self.recalibrate_bn:
            parts.append(f"BatchNorm re-estimated on {self.recalibrate_bn * self.finetune_batch} images")
        if self.finetune_steps:
            parts.append(counted(self.finetune_steps, "masked fine-tune step"))
        return " + ".join(parts)


DEFAULT_RATIOS = {"unstructured": (0.3, 0.5, 0.7, 0.8, 0.9, 0.95), "filter": (0.1, 0.25, 0.4, 0.55, 0.7, 0.85)}
DEFAULT_TARGET = {"unstructured": 0.8, "filter": 0.4}


@dataclass
class SensitivityOptions:
    kind: str = option("unstructured", "--kind", "what is pruned", choices=KINDS)
    ratios: tuple[float, ...] | None = option(
        None, "--ratios", "ratios each layer is pruned at", parse=number_list, metavar="LIST",
        default_text="; ".join(f"{','.join(f'{r:g}' for r in v)} {k}" for k, v in DEFAULT_RATIOS.items()))
    target: float | None = option(None, "--target", "overall sparsity the proposed ratios reach", parse=number,
                                  metavar="S", default_text=", ".join(f"{v:g} {k}" for k, v in DEFAULT_TARGET.items()))
    criterion: str = option(CRITERION, "--criterion", "importance score", choices=CRITERIA)
    recalibrate_bn: int = option(0, "--recalibrate-bn", "re-estimate BatchNorm statistics on N batches of 128 "
                                 "training images after each pruning", parse=non_negative_int, metavar="N")

    def resolved(self) -> tuple[list[float], float]:
        from compress.prune.criteria import get_criterion  # torch: only when an analysis is about to run

        if self.kind not in KINDS:
            raise CompressError(f"sensitivity analyses unstructured or filter pruning, not {self.kind!r}",
                                did_you_mean(self.kind, KINDS))
        get_criterion(self.criterion)  # an unknown name is an error here, before any work
        ratios = sorted(set(self.ratios or DEFAULT_RATIOS[self.kind]))
        if not ratios or any(not (math.isfinite(r) and 0 < r < 1) for r in ratios):
            raise CompressError(f"--ratios must be numbers in (0, 1), got {','.join(map(str, self.ratios or []))}",
                                "e.g. --ratios 0.3,0.5,0.7,0.9")
        if self.recalibrate_bn < 0:
            raise CompressError(f"--recalibrate-bn must be >= 0 (got {self.recalibrate_bn})")
        target = DEFAULT_TARGET[self.kind] if self.target is None else self.target
        if not (math.isfinite(target) and 0 < target < 1):
            raise CompressError(f"--target {target} is not a sparsity in (0, 1)", "e.g. --target 0.8")
        if target > ratios[-1]:
            raise CompressError(f"--target {target} is above the highest measured ratio {ratios[-1]}",
                                "no layer's drop is known that far; add a higher ratio to --ratios")
        return ratios, target


def sparsity_grid(start: float, stop: float, step: float) -> list[float]:
    """start, start+step, ... up to stop inclusive (when it lies on the grid), rounded to 1e-6."""
    for name, v in (("start", start), ("stop", stop)):
        if not (math.isfinite(v) and 0 <= v < 1):
            raise CompressError(f"--{name} {v} is not a sparsity in [0, 1)", "e.g. --start 0.80 --stop 0.98")
    if start > stop:
        raise CompressError(f"--start {start} is above --stop {stop}", "the sweep goes from low to high sparsity")
    if not (math.isfinite(step) and step > 0):
        raise CompressError(f"--step must be positive (got {step})", "e.g. --step 0.002")
    n = int(math.floor((stop - start) / step + 1e-6)) + 1
    if n > MAX_POINTS:
        raise CompressError(f"that grid has {n} points (more than {MAX_POINTS})", "use a larger --step")
    return [round(start + i * step, 6) for i in range(n)]


@dataclass
class PlanRequest:
    """What the user asked the latency planner for: `speedup` or `latency_ms` (one of them)."""

    speedup: float | None = option(None, "--speedup", "prune to X times the dense model's speed, measured on "
                                   "--runtime at --latency-batch (per-layer widths chosen from a measured latency "
                                   "table, then verified)", parse=speedup_value, metavar="X")
    latency_ms: float | None = option(None, "--latency-ms", "prune until one batch of --latency-batch images takes at "
                                      "most MS milliseconds on --runtime (within --speedup-tolerance: measured times "
                                      "move by a few percent between runs)", parse=latency_value, metavar="MS")
    runtime: str = option("ort-cpu", "--runtime", "where latency is measured: ort-cpu, ort-cpu-int8, openvino-cpu, "
                          "torch (CPU or --device), torch-bf16 (CUDA), ... (the names `compress bench --runtimes` "
                          "takes)", metavar="NAME")
    batch: int = option(64, "--latency-batch", "batch size the latency is measured at (not the training batch)",
                        parse=positive_int, metavar="N")
    threads: int | None = option(None, "--threads", "CPU threads of the runtime", parse=positive_int, metavar="N",
                                 default_text="torch's setting")
    round_to: int = option(16, "--round-to", "kept widths are multiples of M", parse=positive_int, metavar="M")
    criterion: str = CRITERION  # which filters of a group go (the command's --criterion)
    cost: str = option("loss", "--cost", "what cutting a layer costs: loss (the training loss increase when that "
                       "layer alone is cut, on 512 training images) or score (the --criterion scores of the filters "
                       "cut)", choices=PLAN_COSTS)
    search: str = option("greedy", "--search", "greedy (NetAdapt's rule: narrow the layer that costs least per ms "
                         "saved, on the fitted latency model) or exact (a knapsack over single-layer savings, "
                         "re-aimed)", choices=PLAN_SEARCHES)
    tolerance: float = option(0.05, "--speedup-tolerance", "a measured speed-up within this fraction of the target "
                              "(or a time within this fraction above --latency-ms) is a hit", parse=number,
                              metavar="FRACTION")
    attempts: int = 4  # end-to-end measurements at most
    device: str = "cpu"  # where torch runtimes run (ONNX Runtime CPU ignores it)
    use_cache: bool = True
    budget_s: float = 1.0  # timed seconds per model in the table; each verification gets twice that

    def validate(self) -> None:
        """Every value checked, and the runtime tried once, before any baseline trains."""
        from pathlib import Path

        from compress.env import resolve_device  # torch: only when a plan is about to be made
        from compress.prune.criteria import get_criterion
        from compress.timing.registry import get_runtimes
        from compress.timing.runtimes import Context, Skipped

        if (self.speedup is None) == (self.latency_ms is None):
            raise CompressError("give one target: --speedup X or --latency-ms MS", "e.g. --speedup 2.5")
        if self.speedup is not None:
            speedup_value(str(self.speedup))
        if self.latency_ms is not None:
            latency_value(str(self.latency_ms))
        if self.batch < 1:
            raise CompressError(f"--latency-batch must be >= 1 (got {self.batch})", "e.g. --latency-batch 64")
        if self.round_to < 1:
            raise CompressError(f"--round-to must be >= 1 (got {self.round_to})", "e.g. --round-to 16")
        if not 0 < self.tolerance < 0.5:
            raise CompressError(f"--speedup-tolerance {self.tolerance} is outside (0, 0.5)",
                                "e.g. --speedup-tolerance 0.05")
        get_criterion(self.criterion)  # an unknown name is an error here, before any work
        if self.cost not in PLAN_COSTS:
            raise CompressError(f"unknown cost {self.cost!r}", f"choose one of: {', '.join(PLAN_COSTS)}")
        if self.search not in PLAN_SEARCHES:
            raise CompressError(f"unknown search {self.search!r}", f"choose one of: {', '.join(PLAN_SEARCHES)}")

        runtime = get_runtimes([self.runtime])[0]
        try:  # before any baseline is trained: a runtime that cannot run here is a plain error
            runtime.check(Context(device=resolve_device(self.device), threads=1, workdir=Path(".")))
            why = runtime.skip_batch(self.batch)
        except Skipped as e:
            why = str(e)
        if why:
            raise CompressError(f"runtime {self.runtime} cannot run here: {why}",
                                "choose a runtime this machine has (ort-cpu and torch run on any CPU)")

    def describe(self) -> str:
        goal = f"{self.speedup:g}x faster than dense" if self.speedup else f"{self.latency_ms:g} ms per batch"
        return f"{goal} on {self.runtime}, batch {self.batch}"

"""What `compress sweep` / `run_sweep` and `compress sensitivity` / `run_sensitivity` take, declared
once: each field's default, flag, help and choices, from which the CLI builds its arguments
(`compress.options`). A plain module: building the parser does not import torch."""
from __future__ import annotations

import math
from dataclasses import dataclass

from compress.errors import CompressError, did_you_mean
from compress.kinds import ALLOCATIONS, CRITERIA, CRITERION
from compress.options import comma_list, non_negative_int, number, number_list, option

KINDS = ("unstructured", "filter")
# Unstructured: the lab's range, where a trained CNN goes from "no loss" to "collapsed".
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
    allocation: str = option("global", "--allocation", "global: one ranking over all layers decides where to prune, "
                             "as the lab's MATLAB example; uniform: the same ratio for every layer",
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
            parts.append(f"{self.finetune_steps} masked fine-tune step{'s' if self.finetune_steps != 1 else ''}")
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

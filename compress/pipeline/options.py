"""What a pruning run takes (`run_prune`, `run_all`; `compress unstructured|filter|nm|all`),
declared once: each option's default, flag, help and choices sit on its field, and the CLI builds
its arguments from them (`compress.options`). A plain module: building the parser does not
import torch.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from compress.errors import CompressError
from compress.kinds import ALLOCATIONS, CRITERIA, CRITERION, REWIND, REWINDS, SCHEDULE, SCHEDULES, STAGES, Kind
from compress.options import non_negative_int, number, option, positive_int, sparsity

DEFAULT_MODEL = "vgg13"


def nm_pattern(text: str) -> tuple[int, int]:
    """'2:4' -> (2, 4): keep N of every M."""
    try:
        n, m = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N:M, e.g. 2:4") from None
    if not 0 < n < m:
        raise argparse.ArgumentTypeError(f"{text!r}: N:M keeps N of every M weights, 0 < N < M (e.g. 2:4)")
    return n, m


def _dense_recipe():
    from compress.presets import dense_config  # torch: only when options are built without one

    return dense_config(DEFAULT_MODEL)


def _retrain_recipe():
    from compress.presets import retrain_config

    return retrain_config(DEFAULT_MODEL)


@dataclass
class PruneOptions:
    kind: str
    ratio: float | None = option(None, "--ratio", "overall target sparsity, e.g. 0.8 (unstructured) or 0.4 (filter); "
                                 "this, --config or (filter) --speedup is required", parse=sparsity, metavar="S")
    config: Path | None = option(None, "--config", "layer ratios file (prune_ratios: {param name: ratio}); see "
                                 "configs/", parse=Path, metavar="YAML")
    allocation: str = option("auto", "--allocation", "layer ratios without --config: auto (a shipped ratio file for "
                             "this model and ratio when there is one, else uniform), uniform (the same ratio for "
                             "every layer), or global (one ranking over all layers)", choices=("auto", *ALLOCATIONS))
    round_to: int = option(0, "--round-to", "keep a multiple of M filters per layer (8, 16: faster kernels); overall "
                           "sparsity stays >= --ratio; 0: any width", parse=non_negative_int, metavar="M",
                           default_text="0; 16 with filter --speedup")
    method: str = "omp"  # omp | imp: the CLI's --omp / --imp K
    rounds: int = 1
    schedule: str = option(SCHEDULE, "--schedule", f"IMP round targets: {' or '.join(SCHEDULES)} "
                           "(1-(1-s)^(k/K) or evenly spaced), or a list like 0.5,0.7,0.8", metavar="SCHEDULE")
    rewind: str = option(REWIND, "--rewind", "retraining each round: finetune (small constant lr), lr (rewind the lr "
                         "schedule), weights (lottery ticket: rewind weights to an early dense epoch)", choices=REWINDS)
    criterion: str = option(CRITERION, "--criterion", "importance score: magnitude (|w|, or a filter's L2 norm), "
                            "taylor or synflow", choices=CRITERIA)
    nm: tuple[int, int] = option((2, 4), "--nm", "N:M pattern: keep N of every M input weights", parse=nm_pattern,
                                 metavar="N:M", default_text="2:4")
    model: str | None = None  # model source; None: the checkpoint's own, else vgg13
    model_args: dict = field(default_factory=dict)
    width: float = 1.0
    checkpoint: Path | None = None
    trust_pickle: bool = False
    dense: object = field(default_factory=_dense_recipe)  # a TrainConfig: the recipes of presets.py
    retrain: object = field(default_factory=_retrain_recipe)
    out: Path | None = None
    resume: bool = False
    force: bool = False
    # quantize runs by default: INT8 is where CPU inference speed is, and it costs seconds
    # (calibration on 512 training images, two passes over the test split per model)
    stages: tuple[str, ...] = STAGES
    max_drop: float = option(1.0, "--max-drop", "an INT8 model losing more top-1 than this many points against its "
                             "fp32 model fails the quantize stage (no INT8 file for it)", parse=number,
                             metavar="POINTS")
    sync_bn: bool = False  # under torchrun: BatchNorm over the global batch
    val_split: float | None = None  # --val-split for a model trained here (None: auto); a checkpoint keeps its own
    val_data: str | None = None  # --val-data: a separate dataset as the validation split (imported weights)
    plan: object | None = None  # a planner.PlanRequest: ratios chosen for a measured speed-up (filter only)
    distill: object | None = None  # a train.Distill: retraining distils from a teacher (None: cross-entropy only)
    show: bool = True
    command: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Options that contradict each other or are missing: an error before any data loads or
        model trains."""
        if self.plan is not None and (self.ratio is not None or self.config is not None):
            raise CompressError("--speedup/--latency-ms choose the layer ratios themselves",
                                "drop --ratio/--config, or drop --speedup/--latency-ms")
        if self.kind in (Kind.UNSTRUCTURED, Kind.FILTER) and self.plan is None and self.ratio is None \
                and self.config is None:
            raise CompressError(f"{self.kind} pruning needs --ratio R or --config YAML"
                                + (" (or --speedup X)" if self.kind == Kind.FILTER else ""), "e.g. --ratio 0.8")
        if self.method not in ("omp", "imp") or self.rounds < 1 or (self.method == "omp" and self.rounds != 1):
            raise CompressError(f"method {self.method!r} with {self.rounds} rounds",
                                "omp with rounds=1, or imp with rounds >= 1")


@dataclass
class SuiteOptions:
    """What `compress all` / `run_all` adds to PruneOptions: the assignment's two ratios and
    IMP's rounds (the four runs are OMP and IMP at each)."""
    unstructured_ratio: float = option(0.8, "--unstructured-ratio", "sparsity of the two unstructured runs",
                                       parse=sparsity, metavar="S")
    filter_ratio: float = option(0.4, "--filter-ratio", "sparsity of the two filter runs", parse=sparsity,
                                 metavar="S")
    imp: int = option(3, "--imp", "rounds of the two IMP runs", parse=positive_int, metavar="K")

    @property
    def ratios(self) -> dict[str, float]:
        return {"unstructured": self.unstructured_ratio, "filter": self.filter_ratio}

"""What a pruning run removes, as a type rather than a string compared in many places.

`Kind` is a `str` enum: it equals its value ("filter" == Kind.FILTER), so manifests, checkpoints
and command lines keep their plain strings and `Kind(text)` reads them back.
"""
from __future__ import annotations

from enum import Enum

# The vocabulary of a pruning run, named once: the library's defaults and the CLI's choices read
# these (a plain module, so building the parser does not import torch's model zoo)
CRITERIA = ("magnitude", "taylor", "synflow")  # prune.criteria.CRITERIA implements each
CRITERION = "magnitude"  # default
REWINDS = ("finetune", "lr", "weights")  # what IMP rewinds between rounds
REWIND = "lr"  # default
SCHEDULES = ("geometric", "linear")  # IMP round targets (or an explicit list)
SCHEDULE = "geometric"  # default
STAGES = ("slim", "export", "quantize", "bench", "report")  # after pruning, in order
ALLOCATIONS = ("uniform", "global")  # how an overall ratio is spread over layers (prune.ratios.allocate)
PLAN_COSTS = ("loss", "score")  # what narrowing a layer costs the latency planner (analysis.plan_costs)
PLAN_SEARCHES = ("exact", "greedy")  # how the planner picks widths (prune.width_search)


class Kind(str, Enum):
    UNSTRUCTURED = "unstructured"  # single weights, per-weight masks
    FILTER = "filter"  # whole output filters (and what is coupled to them): removable by slim
    NM = "nm"  # N of every M consecutive input weights (2:4 for sparse tensor cores)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def definition(self) -> str:
        """The sparsity definition it is measured by: filters for filter pruning, weights otherwise
        (a plain string: it goes into files, and checkpoints load with weights_only)."""
        return "filter" if self is Kind.FILTER else "unstructured"

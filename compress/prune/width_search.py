"""Choose per-group filter widths that save a given latency at the least cost.

The input is one `GroupCurve` per prunable channel group (Torch-Pruning's coupling: the convs
of a residual stage move together): its candidate widths, the latency each saves when that
group alone is cut, and what each costs (the loss increase it causes, or its filters' scores).

Two searches over the same curves:
- `greedy` (the planner's default): NetAdapt's rule: from full width, repeatedly narrow the
  group that costs least per millisecond saved, until the need is met; each step's saving can
  come from a non-additive latency model (`saving=`), evaluated at the current widths.
- `exact`: a multiple-choice knapsack solved by dynamic programming over the latency to save,
  cut into `bins` steps (savings rounded down, so a solution found saves at least the need):
  the least total cost of any choice of widths when savings add up, which they only roughly do.
On VGG13 (`python -m compress.bench.speedup_planner`) greedy on the latency model reached each target at
a lower cost than exact on the additive savings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from compress.kinds import PLAN_SEARCHES

SEARCHES = PLAN_SEARCHES
Saving = Callable[[dict[str, int]], float]  # widths by group -> latency saved (ms)


@dataclass
class GroupCurve:
    """Candidate widths of one channel group, narrowest first, ending at the full width."""

    name: str  # the group's root conv (module name)
    convs: list[str]  # conv weight names whose output channels this group is
    channels: int
    widths: list[int]
    saving_ms: list[float]  # predicted latency saved at each width (0 at full width)
    cost: list[float]  # importance removed at each width (0 at full width)

    def __post_init__(self):
        if not (len(self.widths) == len(self.saving_ms) == len(self.cost)) or self.widths[-1] != self.channels:
            raise ValueError(f"curve {self.name}: widths, savings and costs must align and end at full width")

    def at(self, width: int) -> int:
        return self.widths.index(width)


@dataclass
class Allocation:
    widths: dict[str, int]  # group name -> kept channels
    saving_ms: float
    cost: float


def full(curves: list[GroupCurve]) -> dict[str, int]:
    return {c.name: c.channels for c in curves}


def narrowest(curves: list[GroupCurve], saving: Saving | None = None) -> Allocation:
    """Every group at its narrowest candidate: the most this table can save."""
    return _total(curves, {c.name: c.widths[0] for c in curves}, saving)


def search_widths(curves: list[GroupCurve], need_ms: float, search: str = "greedy", bins: int = 400,
             saving: Saving | None = None) -> Allocation | None:
    """Widths that save at least `need_ms` with the least cost; None if none can.

    `saving(widths) -> ms` replaces the curves' additive savings where a latency model knows
    better (the greedy search uses it at every step; the exact one is additive by nature and
    is corrected by the caller)."""
    if need_ms <= 0:
        return _total(curves, full(curves), saving)
    if search == "exact":  # additive: feasible when the narrowest widths' savings add up to the need
        return _exact(curves, need_ms, bins) if narrowest(curves).saving_ms >= need_ms else None
    if search == "greedy":
        return _greedy(curves, need_ms, saving)
    raise ValueError(f"unknown search {search!r}; choose one of {SEARCHES}")


def _total(curves: list[GroupCurve], widths: dict[str, int], saving: Saving | None = None) -> Allocation:
    saved = saving(widths) if saving else sum(c.saving_ms[c.at(widths[c.name])] for c in curves)
    cost = sum(c.cost[c.at(widths[c.name])] for c in curves)
    return Allocation(dict(widths), saved, cost)


def _exact(curves: list[GroupCurve], need_ms: float, bins: int) -> Allocation | None:
    unit = need_ms / bins
    inf = math.inf
    best = [0.0] + [inf] * bins  # best[b]: least cost that saves >= b units (b == bins: >= the need)
    back: list[list[tuple[int, int]]] = []
    for c in curves:
        options = [(min(bins, int(math.floor(s / unit + 1e-9))), cost, i)
                   for i, (s, cost) in enumerate(zip(c.saving_ms, c.cost))]
        nxt = [inf] * (bins + 1)
        step = [(-1, -1)] * (bins + 1)
        for b, have in enumerate(best):
            if have == inf:
                continue
            for units, cost, i in options:
                nb = min(bins, b + units)
                total = have + cost
                if total < nxt[nb] - 1e-12:
                    nxt[nb], step[nb] = total, (b, i)
        best = nxt
        back.append(step)
    if best[bins] == inf:  # the rounding down lost too much: the need sits at the edge of the table
        return _greedy(curves, need_ms)
    widths, b = {}, bins
    for c, step in zip(reversed(curves), reversed(back)):
        b, i = step[b]
        widths[c.name] = c.widths[i]
    return _total(curves, widths)


def _greedy(curves: list[GroupCurve], need_ms: float, saving: Saving | None = None) -> Allocation | None:
    at = {c.name: len(c.widths) - 1 for c in curves}

    def saved(position: dict[str, int]) -> float:
        if saving:
            return saving({c.name: c.widths[position[c.name]] for c in curves})
        return sum(c.saving_ms[position[c.name]] for c in curves)

    now = saved(at)
    while now < need_ms - 1e-12:
        choice = None
        for c in curves:
            i = at[c.name]
            for j in range(i - 1, -1, -1):  # the next narrower width that saves anything more
                gain = saved({**at, c.name: j}) - now
                if gain > 1e-12:
                    rate = (c.cost[j] - c.cost[i]) / gain
                    if choice is None or rate < choice[0]:
                        choice = (rate, c, j, gain)
                    break
        if choice is None:
            return None
        _, c, j, gain = choice
        at[c.name], now = j, now + gain
    # the last step may overshoot: give back the widths that cost most and are no longer needed
    while True:
        back = [(c.cost[at[c.name]] - c.cost[at[c.name] + 1], c) for c in curves if at[c.name] + 1 < len(c.widths)]
        for _, c in sorted(back, key=lambda t: -t[0]):
            wider = {**at, c.name: at[c.name] + 1}
            if saved(wider) >= need_ms - 1e-12:
                at, now = wider, saved(wider)
                break
        else:
            break
    return _total(curves, {c.name: c.widths[at[c.name]] for c in curves}, saving)


def ratios_for(curves: list[GroupCurve], widths: dict[str, int]) -> dict[str, float]:
    """The ratio file for these widths: every conv of a narrowed group gets the group's ratio."""
    ratios = {}
    for c in curves:
        w = widths[c.name]
        if w < c.channels:
            for conv in c.convs:
                ratios[conv] = (c.channels - w) / c.channels
    return ratios

"""Prune to a measured speed-up: per-group filter widths chosen from latency measured on the
target runtime, then verified end to end (`compress plan`, `compress filter --speedup`).

    table   = compress.analysis.latency_table.build_table(...)   # whole network, one group narrowed at a time (cached)
    latency = table.fit(layer_links(...))            # per-layer model: predicts any mix of widths
    costs   = loss_costs(...) or score_costs(...)    # what cutting each group to each width costs
    widths  = choose(curves, latency, goal)          # least cost whose predicted speed-up reaches the goal
    measure dense vs the slim model side by side; if the measured speed-up misses the target by
    more than the tolerance, re-aim (goal x target / measured) and choose again

Prediction and measurement of every attempt are reported (`Plan.attempts`); the result is an
ordinary ratio file with the numbers in its comments.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch.nn as nn

from compress.analysis.latency_table import SideBySide, build_table, layer_links, narrowed
from compress.analysis.options import PlanRequest
from compress.analysis.plan_costs import curves_for, loss_costs, score_costs
from compress.console import out
from compress.data import Dataset
from compress.env import machine
from compress.errors import CompressError
from compress.io import atomic_write, check_writable
from compress.models import ModelSpec
from compress.prune.channels import count_macs_params
from compress.prune.criteria import get_criterion
from compress.prune.masks import filter_groups
from compress.prune.ratios import check_ratios, planned_sparsity
from compress.prune.width_search import Allocation, GroupCurve, narrowest, ratios_for, search_widths

PLAN_FILE, PLAN_JSON = "plan.yaml", "plan.json"


@dataclass
class Plan:
    request: dict
    groups: dict[str, dict]  # narrowed group root -> {"convs", "channels", "kept", "saving_ms"}
    ratios: dict[str, float]  # the ratio file
    target_speedup: float
    predicted_speedup: float
    measured_speedup: float
    measured_ms: float
    dense_ms: float
    met: bool  # the chosen attempt hit: speed-up >= target x (1 - tolerance), or ms <= budget x (1 + tolerance)
    attempts: list[dict]
    table: dict
    macs: dict
    filter_sparsity: float
    cost: float = 0.0  # the chosen widths' cost (--cost: loss increase, or scores)
    machine: dict = field(default_factory=dict)

    def summary(self) -> str:
        verdict = "met" if self.met else "NOT met"
        budget = self.request.get("latency_ms")
        goal = f"{budget:g} ms (= {self.target_speedup:.2f}x)" if budget else f"{self.target_speedup:.2f}x"
        return (f"target {goal}, predicted {self.predicted_speedup:.2f}x, measured "
                f"{self.measured_speedup:.2f}x ({self.measured_ms:.1f} vs {self.dense_ms:.1f} ms dense): {verdict}")


# --------------------------------------------------------------------------- planning
def choose(curves: list[GroupCurve], model, goal: float, search: str) -> tuple[Allocation, bool, float]:
    """The least-cost widths whose speed-up predicted by the latency model (`LayerModel`)
    reaches `goal`. greedy: NetAdapt steps on the model itself. exact: the knapsack over the
    curves' single-group savings (which add up to more than the model's joint saving), asked
    for more until the model's prediction gets there (bisection on the saving asked for).
    Returns (allocation, feasible, predicted speed-up)."""
    def predicted(a: Allocation) -> float:
        return model.dense_ms / model.predict_ms(a.widths)

    widest = narrowest(curves, model.saving_ms)
    if predicted(widest) < goal:  # the model cannot get there: every group at its narrowest
        return widest, False, predicted(widest)
    need = model.dense_ms * (1 - 1 / goal)
    found = search_widths(curves, need, search, saving=model.saving_ms)
    if found is not None and predicted(found) >= goal - 1e-9:
        return found, True, predicted(found)
    lo, hi, found = need, sum(c.saving_ms[0] for c in curves), widest
    for _ in range(16):  # the least saving asked for whose prediction still reaches the goal
        mid = (lo + hi) / 2
        a = search_widths(curves, mid, search, saving=model.saving_ms)
        if a is not None and predicted(a) >= goal:
            hi, found = mid, a
        else:
            lo = mid
    return found, True, predicted(found)


def make_plan(model: nn.Module, spec: ModelSpec, data: Dataset | None, request: PlanRequest,
              show: bool = True, reuse: dict | None = None) -> Plan:
    """Choose widths for the request, measure them end to end, re-aim when they miss.
    `reuse`: a dict kept by a caller planning the same model several times (costs are kept in it)."""
    request.validate()
    model = copy.deepcopy(model).cpu().eval()  # the caller's model stays where it is
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    groups = sorted(filter_groups(model, spec.example_input()), key=lambda g: order.get(g.root, 0))
    if not groups:
        raise CompressError(f"{spec.describe()} has no filter-prunable conv layers",
                            "`compress layers` shows why each layer cannot be filter-pruned")
    if request.cost == "loss" and data is None:
        raise CompressError("the loss cost needs training data", "pass --data, or use --cost score")
    names = {f"{c}.weight": 0.5 for g in groups for c in g.convs}
    scores = get_criterion(request.criterion).scores(model, "filter", names, data, spec.example_input())
    with SideBySide(spec, request.runtime, request.batch, threads=request.threads, device=request.device,
                    budget_s=request.budget_s, show=show) as timer:
        table, table_path, cached = build_table(model, spec, timer, round_to=request.round_to,
                                                use_cache=request.use_cache)
        if show:
            out.print(f"latency table {'(cached) ' if cached else ''}{table_path}: dense {table.dense_ms:.1f} ms")
        if request.latency_ms is not None and request.latency_ms >= table.dense_ms:
            raise CompressError(f"the dense model already runs in {table.dense_ms:.1f} ms <= {request.latency_ms:g} ms "
                                f"on {request.runtime} at batch {request.batch}", "nothing to prune for; lower --latency-ms")
        key = (request.criterion, request.cost, request.round_to)
        if reuse is not None and key in reuse:
            costs = reuse[key]
        elif request.cost == "loss":
            widths = {r: g["widths"] for r, g in table.groups.items()}
            costs = loss_costs(model, spec, groups, scores, data, widths, request.criterion, show=show)
        else:
            costs = score_costs(model, groups, scores)
        if reuse is not None:
            reuse[key] = costs
        latency = table.fit(layer_links(model, spec, groups))
        curves = curves_for(latency, groups, costs, request.round_to)
        attempts = _attempts(model, spec, groups, curves, latency, timer, request, show)
    best = _best(attempts)
    return _plan(model, spec, request, curves, best, attempts, best["target"],
                 {"file": str(table_path), "cached": cached, "dense_ms": table.dense_ms, "seconds": table.seconds,
                  "key": table.key, "fit_rms_ms": round(latency.rms_ms, 3),
                  "layer_ms": {n: round(v, 3) for n, v in latency.ms.items()}})


def _attempts(model, spec, groups, curves, latency, timer, request: PlanRequest, show: bool) -> list[dict]:
    """Choose, measure end to end, re-aim (goal x target / measured) until within tolerance."""
    target = request.speedup or latency.dense_ms / request.latency_ms
    goal, attempts, tried = target, [], set()
    full = {c.name: c.channels for c in curves}
    for k in range(request.attempts):
        choice, feasible, predicted = choose(curves, latency, goal, request.search)
        key = tuple(sorted(choice.widths.items()))
        if key in tried:
            break
        tried.add(key)
        widths = {r: w for r, w in choice.widths.items() if w < full[r]}
        slim_model = narrowed(model, spec, groups, widths)
        rows = timer.time({"dense": model, f"plan{k}": slim_model}, budget_s=2 * request.budget_s)
        dense_ms, ms = rows["dense"]["median_ms"], rows[f"plan{k}"]["median_ms"]
        if request.latency_ms is not None:  # the budget is in ms: the speed-up it needs is this run's
            target = dense_ms / request.latency_ms
        measured = dense_ms / ms
        # a hit: fast enough within the tolerance; a latency budget is judged in ms, not as a ratio
        hit = (ms <= request.latency_ms * (1 + request.tolerance) if request.latency_ms is not None
               else measured >= target * (1 - request.tolerance))
        attempts.append({"goal": round(goal, 4), "target": round(target, 4), "hit": hit, "feasible": feasible,
                         "widths": widths,
                         "predicted_speedup": round(predicted, 4), "measured_speedup": round(measured, 4),
                         "dense_ms": dense_ms, "ms": ms, "iqr_ms": rows[f"plan{k}"]["iqr_ms"],
                         "cost": round(choice.cost, 4), "macs": count_macs_params(slim_model, spec)[0]})
        if show:
            out.print(f"  attempt {k + 1}: aimed at {goal:.2f}x, predicted {predicted:.2f}x, measured {measured:.2f}x "
                      f"({ms:.1f} vs {dense_ms:.1f} ms dense)")
        if not feasible or abs(measured / target - 1) <= request.tolerance:
            break
        goal = max(1.0 + 1e-3, goal * target / measured)
    return attempts


def _plan(model, spec, request, curves, best, attempts, target, table_info) -> Plan:
    ratios = ratios_for(curves, {**{c.name: c.channels for c in curves}, **best["widths"]})
    check_ratios(ratios, model, "filter", "the plan")
    chosen = {c.name: {"convs": c.convs, "channels": c.channels, "kept": best["widths"][c.name],
                       "saving_ms": round(c.saving_ms[c.at(best["widths"][c.name])], 3)}
              for c in curves if c.name in best["widths"]}
    first = attempts[0]
    table_info["first_error"] = round(first["predicted_speedup"] / first["measured_speedup"] - 1, 4)
    return Plan(request=asdict(request), groups=chosen, ratios=ratios, target_speedup=round(target, 4),
                predicted_speedup=best["predicted_speedup"], measured_speedup=best["measured_speedup"],
                measured_ms=best["ms"], dense_ms=best["dense_ms"],
                met=best["hit"], attempts=attempts,
                table=table_info, macs={"dense": count_macs_params(model, spec)[0], "plan": best["macs"]},
                filter_sparsity=planned_sparsity(model, "filter", ratios), cost=best["cost"], machine=machine())


def _best(attempts: list[dict]) -> dict:
    """The attempt that meets the target (within tolerance) at the least cost; without one, the fastest."""
    hits = [a for a in attempts if a["hit"]]
    if hits:
        return min(hits, key=lambda a: a["cost"])
    return max(attempts, key=lambda a: a["measured_speedup"])


# --------------------------------------------------------------------------- files
def write_plan(plan: Plan, out_dir: Path, model_label: str, force: bool = False) -> tuple[Path, Path]:
    """DIR/plan.yaml (a ratio file, usable as --config, predictions in its comments) and DIR/plan.json."""
    out_dir = Path(out_dir)
    yaml_path, json_path = out_dir / PLAN_FILE, out_dir / PLAN_JSON
    for p in (yaml_path, json_path):
        check_writable(p, force=force)
    atomic_write(yaml_path, lambda tmp: tmp.write_text(ratio_file_text(plan, model_label)))
    atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(asdict(plan), indent=1)))
    return yaml_path, json_path


def ratio_file_text(plan: Plan, model_label: str) -> str:
    r = plan.request
    m = plan.machine
    head = [
        f"{model_label}: filter ratios planned for {plan.target_speedup:.2f}x on {r['runtime']}, batch {r['batch']}, "
        f"{plan.table['key']['threads']} threads, {plan.table['key'].get('gpu') or m.get('cpu')}",
        f"(compress plan; criterion {r['criterion']}, widths multiples of {r['round_to']}, {r['search']} search).",
        f"Predicted {plan.predicted_speedup:.2f}x from the latency table; measured {plan.measured_speedup:.2f}x "
        f"({plan.measured_ms:.1f} ms vs {plan.dense_ms:.1f} ms dense): target {'met' if plan.met else 'NOT met'}.",
        f"MACs {plan.macs['plan'] / plan.macs['dense']:.3f}x of dense; {100 * plan.filter_sparsity:.1f}% of filters removed.",
        "Layers not listed keep all their filters. Each line: kept/total filters.",
    ]
    lines = ["".join(f"# {h}\n" for h in head), "prune_ratios:\n"]
    for root, g in plan.groups.items():
        for conv in g["convs"]:
            lines.append(f"  {conv}: {round(plan.ratios[conv], 6)}  # keeps {g['kept']}/{g['channels']} filters; "
                         f"alone this saves ~{g['saving_ms']:.1f} ms\n")
    return "".join(lines)


def final_speedup(plan: dict, bench: dict | None) -> tuple[float, str] | None:
    """The result model's speed-up in a run's benchmark (bench.json) at the plan's runtime and
    batch size, and the model's name; None when the benchmark has no such row."""
    rows = [r for r in (bench or {}).get("results", [])
            if r["runtime"] == plan["runtime"] and r["batch_size"] == plan["batch"] and r["status"] == "ok"
            and r["model"] != "dense" and r.get("speedup_vs_dense")]
    return (rows[-1]["speedup_vs_dense"], rows[-1]["model"]) if rows else None


def bench_check(manifest: dict, run_dir: Path) -> str | None:
    """Target, predicted and measured speed-up side by side: the plan's own measurement and
    the run's final benchmark of the retrained slim model (same runtime and batch size)."""
    plan = manifest.get("plan")
    if not plan:
        return None
    line = (f"speed-up on {plan['runtime']}, batch {plan['batch']}: target {plan['target_speedup']:.2f}x, "
            f"predicted {plan['predicted_speedup']:.2f}x, measured when planned {plan['measured_speedup']:.2f}x")
    bench = Path(run_dir) / "bench" / "bench.json"
    final = final_speedup(plan, json.loads(bench.read_text()) if bench.is_file() else None)
    if final:
        line += f", measured in the final benchmark {final[0]:.2f}x ({final[1]})"
    return line

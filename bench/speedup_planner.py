"""Prune to a measured speed-up: targets met, the planner against the shipped ratio file and
against uniform widths, measured side by side.

    python -m compress.bench.speedup_planner [--checkpoint DENSE.pt] [--targets 2,3,4] [--runtime ort-cpu]
                                    [--batch 64] [--threads 2] [--out bench_results/speedup_planner]

On the trained VGG13 baseline of the bundled sample (the cached one; trained first if absent):
1. `compress plan` for each target (greedy search, the default) and, for comparison, the exact
   search at the same targets: predicted and measured speed-up, cost (training-loss increase);
2. the shipped 40% ratio file's measured speed-up, and a plan for that same speed-up (where it
   is faster than dense: on a tiny model it may not be);
3. for every plan, uniform widths with the same MACs: the same ratio for every layer, kept
   widths unrounded (as most tools do) and rounded to multiples of 16;
4. one final interleaved run of all of them against dense: the speed-ups reported;
5. the predictor check: random width mixes measured against dense beside the added-up table
   and the fitted per-layer model (`--predictor-only` runs just this).
Targets: ONNX Runtime CPU, batch 64, 2 threads: 2x, 3x and 4x each met within 10%
by the final measured speed-up; at equal MACs the planned widths run faster than uniform ones.
Accuracy after retraining needs training: the script prints the commands (README has results).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch
from rich.table import Table

from compress.analysis.latency_table import SideBySide, build_table, candidate_widths, layer_links, narrowed, slim_copy
from compress.analysis.planner import PlanRequest, make_plan, write_plan
from compress.baseline import get_baseline
from compress.checkpoint import load_checkpoint
from compress.console import err, out
from compress.data import load_dataset
from compress.env import cpu_name, machine
from compress.errors import CompressError
from compress.models import ModelSpec
from compress.presets import config_dir, dense_config
from compress.prune.channels import count_macs_params
from compress.prune.masks import filter_groups
from compress.prune.ratios import allocate, planned_sparsity, read_ratio_file, round_to_multiple, write_ratio_file
from compress.prune.rebuild import model_from_checkpoint

SHIPPED = config_dir() / "vgg13_filter_0.40.yaml"
WITHIN = 0.10


def uniform_like(model, spec, macs: int, round_to: int = 0) -> tuple[dict[str, float], torch.nn.Module]:
    """Uniform filter ratios (every layer the same; kept widths rounded to `round_to` if > 0)
    with about `macs` MACs."""
    lo, hi = 0.0, 0.95
    best = None  # (MAC difference, ratios, slim model)
    for _ in range(14):
        mid = (lo + hi) / 2
        ratios = allocate(model, "filter", mid, "uniform")
        if round_to:
            ratios = round_to_multiple(model, ratios, round_to, mid)
        slim_model = slim_copy(model, spec, ratios)
        have = count_macs_params(slim_model, spec)[0]
        if best is None or abs(have - macs) < best[0]:
            best = (abs(have - macs), ratios, slim_model)
        lo, hi = (mid, hi) if have > macs else (lo, mid)
    return best[1], best[2]


def predictor_check(model, spec: ModelSpec, args, mixes: int) -> list[dict]:
    """Random mixes of candidate widths, measured against dense, beside the two predictions: the
    table's single-group savings added up, and the fitted per-layer model (`LayerModel`)."""
    groups = filter_groups(model, spec.example_input())
    rng = random.Random(0)
    mixes_widths = {}
    for i in range(mixes):
        low = rng.uniform(0.3, 0.9)  # each mix keeps roughly this fraction, or more, per group
        mixes_widths[f"mix{i}"] = {g.root: rng.choice([w for w in candidate_widths(g, 16) if w >= 0.7 * low * g.channels]
                                                      or [g.channels]) for g in groups}
    with SideBySide(spec, args.runtime, args.batch, threads=args.threads) as timer:
        table = build_table(model, spec, timer)[0]
        latency = table.fit(layer_links(model, spec, groups))
        rows = timer.time({"dense": model, **{k: narrowed(model, spec, groups, w) for k, w in mixes_widths.items()}},
                          budget_s=args.budget)
    result = [{"mix": k, "additive": table.dense_ms / table.predict_ms(w),
               "layer_model": latency.dense_ms / latency.predict_ms(w), "measured": rows[k]["speedup_vs_dense"]}
              for k, w in mixes_widths.items()]
    for r in result:
        out.print(f"{r['mix']}: measured {r['measured']:.2f}x; predicted by the layer model {r['layer_model']:.2f}x "
                  f"({100 * (r['layer_model'] / r['measured'] - 1):+.1f}%), by the added table "
                  f"{r['additive']:.2f}x ({100 * (r['additive'] / r['measured'] - 1):+.1f}%)")
    return result


def dense_checkpoint(path: Path | None) -> dict:
    if path is not None:
        return load_checkpoint(path, kinds=("dense",))

    data = load_dataset("sample", quiet=True)
    spec = ModelSpec("vgg13", data.num_classes, 1.0, data.image_size)
    return get_baseline(spec, data, dense_config("vgg13"), device=torch.device("cpu"))[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compress.bench.speedup_planner", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=None, help="trained dense model (default: the cached VGG13 baseline)")
    p.add_argument("--targets", default="2,3,4", help="speed-ups to plan for (default 2,3,4)")
    p.add_argument("--runtime", default="ort-cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--budget", type=float, default=2.0, help="timed seconds per model in the final run (default 2)")
    p.add_argument("--mixes", type=int, default=8, help="random width mixes for the predictor check (default 8)")
    p.add_argument("--predictor-only", action="store_true", help="only the predictor check (step 5)")
    p.add_argument("--out", type=Path, default=Path("bench_results/speedup_planner"))
    args = p.parse_args(argv)
    try:
        if args.predictor_only:
            ckpt = dense_checkpoint(args.checkpoint)
            model = model_from_checkpoint(ckpt).cpu().eval()
            report = {"predictor": predictor_check(model, ModelSpec.from_dict(ckpt["model"]), args, args.mixes)}
        else:
            report = run(args)
    except CompressError as e:
        err.print(f"[bold red]error:[/bold red] {e}")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    name = "predictor_check.json" if args.predictor_only else "speedup_planner.json"
    (args.out / name).write_text(json.dumps(report, indent=1))
    out.print(f"wrote {args.out}/{name}")
    return 0


def run(args) -> dict:
    ckpt = dense_checkpoint(args.checkpoint)
    spec = ModelSpec.from_dict(ckpt["model"])
    model = model_from_checkpoint(ckpt).cpu().eval()
    try:  # before any plan is made or written: the comparison needs the shipped VGG13 file to fit
        shipped = read_ratio_file(SHIPPED, model, "filter")
    except CompressError as e:
        raise CompressError(f"{spec.name} does not take the shipped {SHIPPED.name} ({e.message})",
                            "this benchmark compares plans with that file: pass a VGG13 checkpoint, or plan your "
                            "model with `compress plan CHECKPOINT --speedup 2`") from None
    data = load_dataset(ckpt["meta"].get("dataset", {}).get("source", "sample"), quiet=True)
    base = dict(runtime=args.runtime, batch=args.batch, threads=args.threads)
    plans, variants, reuse = {}, {"dense": model}, {}

    def plan(name: str, speedup: float, search: str = "greedy"):
        out.print(f"[bold]{name}[/bold]: plan for {speedup:.2f}x ({search})")
        made = make_plan(model, spec, data, PlanRequest(speedup=speedup, search=search, **base), reuse=reuse)
        write_plan(made, args.out / name, spec.describe(), force=True)
        plans[name] = made
        variants[name] = slim_copy(model, spec, made.ratios)

    targets = [float(t) for t in args.targets.split(",")]
    for t in targets:
        plan(f"plan_{t:g}x", t)
        plan(f"exact_{t:g}x", t, "exact")
    variants["shipped"] = slim_copy(model, spec, shipped)
    with SideBySide(spec, args.runtime, args.batch, threads=args.threads) as timer:
        ship_speedup = timer.time({"dense": model, "shipped": variants["shipped"]}, budget_s=3.0)["shipped"]["speedup_vs_dense"]
    at_shipped = round(ship_speedup, 2)  # the target as planned
    if at_shipped > 1:
        plan("plan_at_shipped", at_shipped)
    else:  # unrounded widths can run slower than dense on ONNX Runtime: nothing to plan for
        out.print(f"[yellow]the shipped 40% ratio file measured {ship_speedup:.2f}x, no faster than dense on this "
                  "machine: no plan_at_shipped[/yellow]")
    for name in [n for n in plans if not n.startswith("exact")]:
        for label, round_to in ((f"uniform_like_{name}", 0), (f"uniform16_like_{name}", 16)):
            ratios, variants[label] = uniform_like(model, spec, plans[name].macs["plan"], round_to)
            write_ratio_file(args.out / f"{label}.yaml", ratios, f"uniform filter ratios with the MACs of {name}"
                             + (f", kept widths multiples of {round_to}" if round_to else ""))
    out.print("[bold]final run[/bold]: every variant against dense, interleaved")
    with SideBySide(spec, args.runtime, args.batch, threads=args.threads, budget_s=args.budget) as timer:
        rows = timer.time(variants)
        threads = timer.threads
    dense_macs = count_macs_params(model, spec)[0]
    table = []
    for name, m in variants.items():
        made = plans.get(name)
        row = {"variant": name, "target": made.target_speedup if made else None,
               "predicted": made.predicted_speedup if made else None,
               "measured_when_planned": made.measured_speedup if made else None,
               "measured": round(rows[name]["speedup_vs_dense"], 3), "ms": rows[name]["median_ms"],
               "iqr_ms": rows[name]["iqr_ms"], "macs": count_macs_params(m, spec)[0] / dense_macs,
               "cost": made.cost if made else None,
               "filters_removed": planned_sparsity(model, "filter", made.ratios) if made else None}
        if made and name.startswith(("plan_", "exact_")) and name != "plan_at_shipped":
            row["within_10pct"] = abs(row["measured"] / made.target_speedup - 1) <= WITHIN
        table.append(row)
    _print(table, spec, args, threads, ship_speedup, "plan_at_shipped" if "plan_at_shipped" in plans else next(iter(plans)))

    return {"machine": machine(), "runtime": args.runtime, "batch": args.batch, "threads": threads,
            "shipped_speedup_measured_first": ship_speedup, "rows": table,
            "predictor": predictor_check(model, spec, args, args.mixes),
            "plans": {n: str(args.out / n / "plan.yaml") for n in plans}}


def _print(table, spec, args, threads, ship_speedup, example: str) -> None:
    """The final table, then how to retrain `example` (the plan at the shipped file's speed-up, if made)."""
    t = Table(title=f"{spec.describe()}: {args.runtime}, batch {args.batch}, {threads} threads, {cpu_name()}",
              title_justify="left")
    for col in ("variant", "target", "predicted", "measured (planning)", "measured (final run)", "MACs",
                "cost", "within 10%"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for r in table:
        def f(v, fmt="{:.2f}x"):
            return "" if v is None else fmt.format(v)
        t.add_row(r["variant"], f(r["target"]), f(r["predicted"]), f(r["measured_when_planned"]), f(r["measured"]),
                  f"{r['macs']:.3f}x", f(r["cost"], "{:.3g}"), {True: "yes", False: "NO"}.get(r.get("within_10pct"), ""))
    out.print(t)
    out.print(f"shipped 40% ratio file measured first at {ship_speedup:.2f}x"
              + ("; plan_at_shipped aims there" if example == "plan_at_shipped" else ", no faster than dense")
              + ". Retrain each plan with the same budget to compare accuracy, e.g.:")
    out.print(f"  compress filter --config {args.out}/{example}/plan.yaml --omp --checkpoint DENSE.pt "
              f"--out runs/{example} --no-quantize")


if __name__ == "__main__":
    sys.exit(main())

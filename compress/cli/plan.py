"""`compress plan`: a filter ratio file for a measured speed-up, without training (parsing and printing only)."""
from __future__ import annotations

from pathlib import Path

from compress.cli.args import add_data_args, add_plan_args, checkpoint_data, plan_request
from compress.cli.base import Command, command
from compress.console import out
from compress.errors import CompressError
from compress.options import add_options
from compress.pipeline.options import PruneOptions


def attempts_table(plan):
    from rich.table import Table

    t = Table(title=f"plan: {plan.request['runtime']}, batch {plan.request['batch']} (each attempt measured "
                    "side by side with dense)", title_justify="left")
    for col in ("attempt", "aimed at", "predicted", "measured", "ms (dense)", "MACs", f"cost ({plan.request['cost']})"):
        t.add_column(col, justify="right")
    for k, a in enumerate(plan.attempts, 1):
        t.add_row(str(k), f"{a['goal']:.2f}x", f"{a['predicted_speedup']:.2f}x", f"{a['measured_speedup']:.2f}x",
                  f"{a['ms']:.1f} ({a['dense_ms']:.1f})", f"{a['macs'] / plan.macs['dense']:.3f}x",
                  f"{a['cost']:.3g}" + (" (narrowest)" if not a["feasible"] else ""))
    return t


@command
class PlanCommand(Command):
    name = "plan"
    help = "choose filter ratios for a speed-up measured on a runtime (a ratio file for --config; no training)"

    def add_arguments(self, p):
        p.add_argument("model", type=Path, metavar="DENSE.pt",
                       help="trained dense model of ours (compress train, RUN/dense.pt, or `compress import` of yours)")
        add_plan_args(p)
        add_options(p, PruneOptions, "criterion")
        p.add_argument("--no-cache", action="store_true", help="measure the latency table again even if cached")
        p.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="where plan.yaml and plan.json go (default plans/LABEL_Xx_RUNTIME_bN)")
        p.add_argument("--force", action="store_true", help="overwrite an existing plan in --out")
        add_data_args(p)

    def run(self, args) -> int:
        from compress.analysis.planner import PLAN_FILE, PLAN_JSON, make_plan, write_plan
        from compress.checkpoint import load_checkpoint
        from compress.io import check_writable
        from compress.models import ModelSpec
        from compress.prune.criteria import get_criterion
        from compress.prune.rebuild import model_from_checkpoint
        from compress.report.tables import ratio_table

        request = plan_request(args, args.round_to)
        if request is None:
            raise CompressError("compress plan needs a target", "pass --speedup X or --latency-ms MS")
        request.use_cache = not args.no_cache
        request.validate()
        ckpt = load_checkpoint(args.model, kinds=("dense",))
        spec = ModelSpec.from_dict(ckpt["model"])
        goal = f"{args.speedup:g}x" if args.speedup else f"{args.latency_ms:g}ms"
        folder = args.out or Path("plans") / f"{spec.label}_{goal}_{request.runtime}_b{request.batch}"
        for name in (PLAN_FILE, PLAN_JSON):  # refuse before measuring for minutes
            check_writable(folder / name, force=args.force)
        data = checkpoint_data(args, ckpt) if get_criterion(request.criterion).needs_data or request.cost == "loss" else None
        model = model_from_checkpoint(ckpt)
        out.print(f"[bold]plan[/bold] {spec.describe()}: {request.describe()}", soft_wrap=True)
        plan = make_plan(model, spec, data, request)
        out.print(attempts_table(plan))
        out.print(ratio_table(model, "filter", plan.ratios, f"latency plan ({goal})"))
        yaml_path, json_path = write_plan(plan, folder, spec.describe(), force=args.force)
        out.print(plan.summary())
        out.print(f"wrote {yaml_path} (use it as --config) and {json_path}")
        if not plan.met:
            out.print(f"[bold red]the target cannot be met[/bold red]: the best measured is {plan.measured_speedup:.2f}x; "
                      "the ratio file holds that plan. Lower --speedup, or remove whole layers (not done here).")
            return 1
        return 0

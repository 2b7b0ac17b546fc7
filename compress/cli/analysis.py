"""Analysis subcommands (`compress sweep`, `compress sensitivity`, `compress report`): parsing and printing only."""
from __future__ import annotations

import sys
from pathlib import Path

from compress.analysis.options import SensitivityOptions, SweepOptions
from compress.cli.args import Renamed, add_data_args, checkpoint_data
from compress.cli.base import Command, command
from compress.console import out
from compress.options import add_options, from_args, number


def _command_line() -> list[str] | None:
    """The argv that started us, when it was the `compress` command (not a test runner)."""
    if Path(sys.argv[0]).name in ("compress", "__main__.py"):
        return ["compress", *sys.argv[1:]]
    return None


def _load(args, kinds=("dense",)):
    """The checkpoint, and the data it was trained on unless --data says otherwise (under
    torchrun: this rank's device, the points dealt across ranks)."""
    from compress.checkpoint import load_checkpoint
    from compress.cli.args import data_parallel

    ckpt = load_checkpoint(args.model, kinds=kinds)
    _, device = data_parallel(args)
    return ckpt, checkpoint_data(args, ckpt).to(device), device


@command
class Sweep(Command):
    name = "sweep"
    help = "one-shot prune a trained model at many sparsities; accuracy curve and a proposed trade-off"

    def add_arguments(self, p):
        p.add_argument("model", type=Path, metavar="MODEL.pt", help="trained dense model (compress train, or RUN/dense.pt)")
        # names, choices, defaults and help come from SweepOptions (compress/analysis/sweep_options.py)
        add_options(p, SweepOptions, "kind")
        g = p.add_argument_group("grid (overall sparsity, fractions)")
        add_options(g, SweepOptions, "start", "stop", "step", "allocation", "criteria")
        g.add_argument("--criteria", dest="criteria", action=Renamed, new="--criterion")
        f = p.add_argument_group("per point")
        add_options(f, SweepOptions, "recalibrate_bn", "finetune_steps", "finetune_lr", "max_drop")
        f.add_argument("--tolerance", type=number, dest="max_drop", action=Renamed, new="--max-drop")
        o = p.add_argument_group("output")
        o.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder (default MODEL_sweep_KIND beside the model)")
        o.add_argument("--force", action="store_true", help="overwrite existing sweep files in --out")
        add_data_args(p)

    def run(self, args) -> int:
        from rich.table import Table

        from compress.analysis.sweep import run_sweep

        opts = from_args(SweepOptions, args)
        opts.validate()  # bad ranges fail before any file is read
        out_dir = args.out or args.model.with_name(f"{args.model.stem}_sweep_{args.kind}")
        ckpt, data, device = _load(args)
        res = run_sweep(ckpt, data, opts, out_dir, device=device, source=str(args.model), force=args.force,
                        command=_command_line())
        if not res.files:  # a rank other than 0 under torchrun: its points went to rank 0
            return 0
        from compress.stats import with_ci

        s = res.summary
        ev = s["evaluator"]
        on = "validation" if ev["split"] == "val" else "test"
        t = Table(title=f"one-shot {s['kind']} sweep of {s['model']['name']}: {s['grid']['points']} points "
                        f"{100 * s['grid']['start']:g}–{100 * s['grid']['stop']:g}% · dense {on} "
                        f"{with_ci(s['dense_accuracy'], ev['images'])}")
        for col in ("criterion", "trade-off sparsity", f"{on} accuracy (95% CI)", "vs dense", "test accuracy (95% CI)",
                    "first point beyond tolerance"):
            t.add_column(col, justify="left" if col == "criterion" else "right")
        for c, tr in s["tradeoffs"].items():
            br = s["breakdown"][c]
            chosen = (f"{100 * tr['sparsity']:.2f}%" + (" (knee)" if tr.get("by") == "knee" else "")) if tr else "none"
            t.add_row(c, chosen, with_ci(tr["accuracy"], ev["images"]) if tr else "",
                      f"{-tr['drop']:+.2f}" if tr else "",
                      with_ci(tr["test_accuracy"], ev["test_images"]) if tr else "",
                      f"{100 * br['sparsity']:.2f}% → {br['accuracy']:.2f}%" if br else "none (all within)")
        t.caption = (f"chosen on the {s['choices_on']} split; test is reported, never read  ·  "
                     f"rule: {s['rule']} (tolerance {s['tolerance']:g}: {s['tolerance_source']}); one standard error of an accuracy here: {s['standard_error']:.1f} points  ·  "
                     f"{s['seconds']:.0f} s ({s['seconds_per_point']:.2f} s/point)  ·  "
                     f"{out_dir}/{{sweep.csv, sweep.json, sweep.png, tradeoff_layers.json, tradeoff_layers.png}}")
        out.print(t)
        import json

        for e in json.loads((out_dir / "tradeoff_layers.json").read_text())["tradeoffs"]:
            for line in e["observations"]:
                out.print(f"  {e['criterion']}: {line}")
        if any(tr is None or tr.get("by") == "knee" for tr in s["tradeoffs"].values()):
            from compress.console import notice

            if not opts.treatment:
                notice("accuracy is already more than the tolerance below dense at the first point; with BatchNorm, "
                       "much of a one-shot drop is stale statistics: try --recalibrate-bn 4, or a lower --start")
            else:
                notice("no swept point is within the tolerance of dense, so the marked point is only the curve's knee "
                       "(where the fall steepens), not an acceptable accuracy: this much one-shot pruning needs "
                       "retraining (the prune commands' --omp/--imp), or try --finetune-steps or a lower --start")
        return 0


@command
class Sensitivity(Command):
    name = "sensitivity"
    help = "prune each layer alone at several ratios; heat map, CSV and proposed layer ratios (YAML)"

    def add_arguments(self, p):
        p.add_argument("model", type=Path, metavar="MODEL.pt", help="trained dense model")
        add_options(p, SensitivityOptions)  # names, choices, defaults and help: compress/analysis/options.py
        p.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="output folder (default MODEL_sensitivity_KIND beside the model)")
        p.add_argument("--force", action="store_true", help="overwrite existing files in --out")
        add_data_args(p)

    def run(self, args) -> int:
        from rich.table import Table

        from compress.analysis.sensitivity import run_sensitivity

        opts = from_args(SensitivityOptions, args)
        opts.resolved()
        out_dir = args.out or args.model.with_name(f"{args.model.stem}_sensitivity_{args.kind}")
        ckpt, data, device = _load(args)
        res = run_sensitivity(ckpt, data, opts, out_dir, device=device, source=str(args.model), force=args.force,
                              command=_command_line())
        if not res.files:  # a rank other than 0 under torchrun: its cells went to rank 0
            return 0
        s = res.summary
        t = Table(title=f"{s['kind']} sensitivity of {s['model']['name']} · dense {s['dense_accuracy']:.2f}% · "
                        f"{s['choices_on'].split(' ')[0]} accuracy drop (points, {s['images']} images) with one "
                        f"layer pruned")
        t.add_column("layer")
        for r in s["ratios"]:
            t.add_column(f"{100 * r:g}%", justify="right")
        t.add_column("proposed", justify="right")
        for l in s["layers"]:
            t.add_row(l["label"], *[f"{l['drop'][f'{r:g}']:.2f}" for r in s["ratios"]], f"{100 * l['proposed']:.1f}%")
        p = s["proposal"]
        t.caption = (f"proposed: {100 * p['planned_sparsity']:.2f}% overall, predicted drop {p['predicted_drop']:.2f} "
                     f"(uniform {100 * s['target']:g}%: {p['uniform_predicted_drop']:.2f})  ·  {s['seconds']:.0f} s  ·  "
                     f"{out_dir}/{{sensitivity.csv, sensitivity.json, sensitivity.png, proposed.yaml}}")
        out.print(t)
        out.print(f"next: compress {s['kind']} --config {out_dir / 'proposed.yaml'} --checkpoint {args.model}")
        return 0


@command
class Report(Command):
    name = "report"
    help = "gather a run (or suite) folder into report.md with figures"

    def add_arguments(self, p):
        p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder (compress unstructured|filter), suite folder (compress all), or a --seeds folder")
        p.add_argument("--layer", default=None, metavar="NAME",
                       help="conv weight shown in the mask figures (default: a mid-network conv, e.g. features.14.weight)")

    def run(self, args) -> int:
        from compress.report.writer import write_report

        if (args.run_dir / "seeds.json").is_file():  # a --seeds folder: each seed's report, then the summary
            from compress.pipeline.seeds import rewrite_summary

            for folder in sorted(args.run_dir.glob("seed_*")):
                write_report(folder, mask_layer=args.layer)
            rewrite_summary(args.run_dir)
            out.print(f"report: {args.run_dir / 'report.md'}")
            return 0
        path = write_report(args.run_dir, mask_layer=args.layer)
        figures = sorted((path.parent / "figures").glob("*.png"))
        out.print(f"report: {path}")
        for f in figures:
            out.print(f"  figure: {f}")
        return 0


@command
class Compare(Command):
    name = "compare"
    help = "models scored on the same images: accuracy with its Wilson interval, and McNemar's paired test"

    def add_arguments(self, p):
        p.add_argument("models", type=Path, nargs="+", metavar="MODEL.pt",
                       help="checkpoints of ours (dense, pruned, slim); the first is the reference")
        p.add_argument("--evaluate-on", choices=("test", "val"), default="test",
                       help="test (default): report; val: choose between recipes without reading the test split")
        add_data_args(p)

    def run(self, args) -> int:
        from rich.table import Table

        from compress.analysis.comparisons import sentence
        from compress.checkpoint import load_checkpoint
        from compress.env import resolve_device
        from compress.errors import CompressError
        from compress.prune.rebuild import model_from_checkpoint
        from compress.stats import paired, wilson
        from compress.train import correct_per_image

        if len(args.models) < 2:
            raise CompressError("compare needs at least two models", "e.g. compress compare A.pt B.pt")
        device = resolve_device(args.device)
        ckpts = [load_checkpoint(m) for m in args.models]
        data = checkpoint_data(args, ckpts[0]).to(device)
        prints = {c.get("meta", {}).get("dataset", {}).get("fingerprint") for c in ckpts} - {None}
        if len(prints) > 1 and args.data == "auto":
            raise CompressError("the models were trained on different datasets",
                                "pass --data to score them all on the same test images")
        right = [correct_per_image(model_from_checkpoint(c).to(device), data, device, split=args.evaluate_on) for c in ckpts]
        n = len(right[0])
        t = Table(title=f"top-1 on {n} {'validation' if args.evaluate_on == 'val' else 'test'} images ({data.name})",
                  title_justify="left")
        for col in ("model", "accuracy", "95% interval (Wilson)"):
            t.add_column(col, justify="left" if col == "model" else "right")
        # a relative path as typed (its folder often says what the model is), an absolute one by its name
        labels = [p.name if p.is_absolute() else str(p) for p in args.models]
        for label, r in zip(labels, right):
            lo, hi = wilson(sum(r), n)
            t.add_row(label, f"{100 * sum(r) / n:.2f}%", f"{100 * lo:.1f} – {100 * hi:.1f}%")
        out.print(t)
        for label, r in zip(labels[1:], right[1:]):
            out.print(sentence({"a": label, "b": labels[0], **paired(r, right[0])}), soft_wrap=True)
        return 0


"""`compress unstructured | filter | nm` (one pruning run), `compress slim` and `compress all`
(the assignment's suite).

The library is imported inside each command and helper, deliberately: `compress --help` then
starts in 0.1 s instead of the 2 s that importing torch takes.
"""
from __future__ import annotations

import json
from pathlib import Path

from compress.cli.args import (
    STAGE_NAMES,
    Deprecated,
    add_data_args,
    add_distill_args,
    add_model_args,
    add_plan_args,
    add_seeds_args,
    add_train_args,
    checkpoint_data,
    data_parallel,
    distill_config,
    load_data,
    model_source,
    plan_request,
    train_config,
)
from compress.cli.base import Command, command
from compress.console import out
from compress.kinds import Kind
from compress.options import add_options, from_args, non_negative_int, positive_int
from compress.pipeline.options import PruneOptions, SuiteOptions


class _Prune(Command):
    """Shared options of `compress unstructured|filter|nm`."""

    kind = ""

    def add_arguments(self, p):
        g = p.add_argument_group("what to prune")
        if self.kind == Kind.NM:
            add_options(g, PruneOptions, "nm")
        else:
            add_options(g, PruneOptions, "ratio", "config", "allocation")
        if self.kind == Kind.FILTER:
            add_options(g, PruneOptions, "round_to")
        add_options(g, PruneOptions, "criterion")
        s = p.add_argument_group("schedule")
        add_method_args(s)
        # N:M has one sparsity: no round targets to schedule
        add_options(s, PruneOptions, *(("schedule",) if self.kind != Kind.NM else ()), "rewind")
        if self.kind == Kind.FILTER:
            add_plan_args(p.add_argument_group("prune to a measured speed-up (instead of --ratio/--config)"),
                          round_to=False)
        d = p.add_argument_group("dense model")
        add_dense_args(d)
        add_data_args(p)
        add_train_args(p, title=RETRAINING)
        add_distill_args(p)
        o = p.add_argument_group("output")
        o.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="run folder (default runs/MODEL_KIND_RATIO_SCHEDULE)")
        o.add_argument("--resume", action="store_true", help="continue an interrupted run from its last round")
        o.add_argument("--force", action="store_true", help="replace an existing run folder")
        for stage in STAGE_NAMES:
            if stage != "slim" or self.kind == Kind.FILTER:  # only filter pruning has channels to remove
                o.add_argument(f"--no-{stage}", action="store_true", help=f"skip the {stage} stage")
            else:
                o.add_argument("--no-slim", action=Deprecated, why=f"{self.kind} pruning removes no channels: "
                                                                    "there is no slim stage")
        add_options(o, PruneOptions, "max_drop")
        add_seeds_args(p)

    def run(self, args) -> int:
        from compress.pipeline.run import run_prune
        from compress.presets import retrain_config
        from compress.report.tables import artifacts_table, prune_summary

        world, device = data_parallel(args)
        source, model_args = model_source(args)
        retrain = train_config(args, retrain_config(source))
        dense = dense_recipe(args, source)
        opts = from_args(
            PruneOptions, args, kind=self.kind, method="imp" if args.imp else "omp", rounds=args.imp or 1,
            model=source, model_args=model_args, width=args.width, checkpoint=args.checkpoint,
            trust_pickle=args.trust_pickle, dense=dense, retrain=retrain, out=args.out, resume=args.resume,
            force=args.force, stages=stages_kept(args), command=args.argv, val_split=args.val_split,
            val_data=args.val_data, sync_bn=args.sync_bn, distill=distill_config(args),
            plan=plan_request(args, args.round_to or 16) if self.kind == Kind.FILTER else None)
        opts.check()  # before the data loads
        data = load_data(args, device)
        if args.seeds:
            return self.run_seeds(args, opts, data, device)
        manifest = run_prune(opts, data, device)
        if not world.main:
            return 0
        from compress.prune.sparsity import sparsity_table

        sparsity = json.loads((Path(manifest["run_dir"]) / "sparsity.json").read_text())
        out.print(sparsity_table(sparsity, f"sparsity of {manifest['result']['path']}"))
        out.print(prune_summary(manifest))
        print_comparisons({"run": manifest})
        out.print(artifacts_table(manifest))
        if manifest.get("plan"):
            from compress.analysis.planner import bench_check

            out.print(bench_check(manifest, Path(manifest["run_dir"])), soft_wrap=True)
        from compress.report.runs import failed_stages

        return report_failures(failed_stages(manifest))


    @staticmethod
    def run_seeds(args, opts, data, device) -> int:
        """The command once per --seeds seed, then the summary over seeds."""
        import dataclasses

        from compress.pipeline.run import resolve_dense, run_prune, seeds_root
        from compress.pipeline.seeds import finished, for_seed, run_seeds
        from compress.report.tables import prune_summary

        spec, _, data = resolve_dense(opts, data, device)  # weights checked before any folder exists
        name = f"{opts.method}_{opts.kind}"

        def run_one(seed: int, folder: Path) -> dict:
            if args.resume and (done := finished(folder)):
                return done
            one = for_seed(opts, seed, args.seeds[0], args.seed_dense, folder)
            manifest = run_prune(dataclasses.replace(one, resume=args.resume and folder.exists(), force=False),
                                 data, device)
            out.print(prune_summary(manifest))
            return {name: manifest}

        root = args.out or seeds_root(opts, spec)
        summary = run_seeds(run_one, args.seeds, root, resume=args.resume,
                            force=args.force, what=f"{opts.method.upper()} {opts.kind} pruning",
                            seed_dense=args.seed_dense, shared_checkpoint=opts.checkpoint is not None,
                            command=args.argv)
        return seed_failures(root) if summary["models"] else 1


def report_failures(failed: dict[str, str]) -> int:
    """The exit code of a run: 1, with one line per failed stage, when any stage was tried and
    broke (the files of the stages that worked stand); 0 otherwise."""
    from compress.console import err

    for stage, error in failed.items():
        err.print(f"[bold red]failed:[/bold red] stage {stage}: {error}", soft_wrap=True)
    if failed:
        err.print(f"[bold red]error:[/bold red] {len(failed)} stage(s) failed (above); the run is not complete",
                  soft_wrap=True)
    return 1 if failed else 0


def seed_failures(root: Path) -> int:
    """`report_failures` over every run and suite manifest under a --seeds folder."""
    from compress.report.runs import failed_stages, read_json

    failed = {}
    for path in sorted(Path(root).rglob("manifest.json")):
        for stage, error in failed_stages(read_json(path) or {}).items():
            failed[f"{path.parent.relative_to(root)}/{stage}"] = error
    return report_failures(failed)


def print_comparisons(manifests: dict[str, dict]) -> None:
    """The paired sentences (McNemar on the test images) for the runs just made."""
    from compress.analysis.comparisons import correctness, one_seed, sentence

    found = correctness({k: m for k, m in manifests.items() if m.get("status") == "complete"})
    for r in one_seed(found) if len(found) > 1 else []:
        out.print(sentence(r), soft_wrap=True)


@command
class Unstructured(_Prune):
    name = kind = "unstructured"
    help = "unstructured magnitude pruning (per-weight masks), OMP or IMP"


@command
class Filter(_Prune):
    name = kind = "filter"
    help = "filter pruning (whole output filters, by L2 norm unless --criterion says otherwise), OMP or IMP"


@command
class NM(_Prune):
    name = kind = "nm"
    help = "N:M semi-structured pruning (2:4 by default), OMP or IMP"


RETRAINING = ("retraining (--epochs is the total over all rounds: --imp 3 --epochs 30 retrains 10 epochs after each "
              "round; default: the recipe's)")


def add_method_args(p) -> None:
    """OMP or IMP: PruneOptions' method and rounds, as one choice."""
    m = p.add_mutually_exclusive_group()
    m.add_argument("--omp", action="store_true", help="one-shot: prune once, then retrain (default)")
    m.add_argument("--imp", type=positive_int, metavar="K", help="iterative: K prune/retrain rounds (K >= 3 advised)")


def add_dense_args(p) -> None:
    """The dense model a run starts from: a model source and, optionally, its weights."""
    add_model_args(p, weights=True)
    p.add_argument("--checkpoint", "--weights", type=Path, default=None, metavar="WEIGHTS",
                   help="dense model to prune: a checkpoint of this toolchain, or your own weights with --model "
                        "(state dict .pt/.pth/.bin, a training script's nested dict, .safetensors) "
                        "(default: train one, cached and reused)")
    p.add_argument("--dense-epochs", type=positive_int, default=None, metavar="N",
                   help="epochs for a baseline trained here (default: the model's recipe, compress/presets.py)")


def dense_recipe(args, source: str | None):
    """The recipe of a baseline trained here: the model's, with --seed and --dense-epochs."""
    import dataclasses

    from compress.presets import dense_config

    dense = dense_config(source)
    return dataclasses.replace(dense, seed=args.seed, epochs=args.dense_epochs or dense.epochs)


def stages_kept(args) -> tuple[str, ...]:
    """The deployment stages not switched off by --no-STAGE."""
    return tuple(s for s in STAGE_NAMES if not getattr(args, f"no_{s}", False))


@command
class Slim(Command):
    name = "slim"
    help = "physically remove pruned filters and everything coupled to them (Torch-Pruning)"

    def add_arguments(self, p):
        p.add_argument("model", type=Path, help="filter-pruned model (e.g. Imp_filter_0.40_acc_70.12.pt)")
        p.add_argument("--out", type=Path, default=None, metavar="FILE", help="slim model path (default: MODEL_slim.pt beside it)")
        p.add_argument("--round-to", type=non_negative_int, default=0, metavar="M",
                       help="also remove the weakest live filters so every layer keeps a multiple of M "
                            "(faster kernels; accuracy can change and is re-measured; default 0: only dead filters)")
        p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
        add_data_args(p)

    def run(self, args) -> int:
        from compress.env import resolve_device
        from compress.prune.slim import slim_file
        from compress.report.tables import slim_summary

        path, result = slim_file(args.model, args.out, lambda ckpt: checkpoint_data(args, ckpt), round_to=args.round_to,
                                 device=resolve_device(args.device), force=args.force)
        out.print(slim_summary(result.stats, path))
        return 0


@command
class All(Command):
    name = "all"
    help = "the full comparison: dense, OMP/IMP x unstructured/filter, slim, ONNX, benchmark, report; --seeds repeats it"

    def add_arguments(self, p):
        add_dense_args(p)
        add_options(p, SuiteOptions)
        # --config is per run: ratio files of your own go to `compress unstructured/filter --config`
        add_options(p, PruneOptions, "allocation", "round_to", "criterion", "schedule", "rewind")
        add_data_args(p)
        add_train_args(p, title=RETRAINING)
        add_distill_args(p)
        p.add_argument("--out", type=Path, default=None, metavar="DIR", help="suite folder (default runs/MODEL_all)")
        p.add_argument("--resume", action="store_true", help="continue an interrupted suite")
        p.add_argument("--force", action="store_true", help="replace an existing suite folder")
        for stage in STAGE_NAMES:
            p.add_argument(f"--no-{stage}", action="store_true", help=f"skip the {stage} stage")
        add_options(p, PruneOptions, "max_drop")
        add_seeds_args(p)

    @staticmethod
    def run_seeds(args, base, suite, data, device, root: Path) -> int:
        """The suite once per --seeds seed, then the summary over seeds."""
        import dataclasses

        from compress.pipeline.run import resolve_dense, run_all
        from compress.pipeline.seeds import finished, for_seed, load_seed_manifests, run_seeds
        from compress.report.tables import suite_summary

        _, _, data = resolve_dense(base, data, device)  # weights checked before any folder exists

        def run_one(seed: int, folder: Path) -> dict:
            if args.resume and (done := finished(folder)):
                return done
            one = for_seed(base, seed, args.seeds[0], args.seed_dense, None)
            one = dataclasses.replace(one, resume=args.resume and folder.exists(), force=False)
            manifest = run_all(one, suite.ratios, data, device, folder, rounds=suite.imp)
            out.print(suite_summary(manifest, folder))
            return load_seed_manifests(folder)

        summary = run_seeds(run_one, args.seeds, root, resume=args.resume, force=args.force,
                            what="OMP/IMP × unstructured/filter (compress all)", seed_dense=args.seed_dense,
                            shared_checkpoint=base.checkpoint is not None, command=args.argv)
        return seed_failures(root) if summary["models"] else 1

    def run(self, args) -> int:
        from compress.models import ModelSpec
        from compress.pipeline.run import run_all
        from compress.presets import retrain_config
        from compress.report.tables import suite_summary

        world, device = data_parallel(args)
        source, model_args = model_source(args)
        dense = dense_recipe(args, source)
        base = from_args(PruneOptions, args, kind="", model=source, model_args=model_args, width=args.width,
                         checkpoint=args.checkpoint, trust_pickle=args.trust_pickle, dense=dense,
                         retrain=train_config(args, retrain_config(source)), resume=args.resume, force=args.force,
                         command=args.argv, val_split=args.val_split, val_data=args.val_data, stages=stages_kept(args),
                         sync_bn=args.sync_bn, distill=distill_config(args))
        suite = from_args(SuiteOptions, args)
        data = load_data(args, device)
        suite_dir = args.out or Path("runs") / f"{ModelSpec(source or 'vgg13').label}_all"
        if args.seeds:
            return self.run_seeds(args, base, suite, data, device, suite_dir.with_name(suite_dir.name + "_seeds")
                                  if args.out is None else suite_dir)
        manifest = run_all(base, suite.ratios, data, device, suite_dir, rounds=suite.imp)
        if not world.main:
            return 0
        out.print(suite_summary(manifest, suite_dir))
        from compress.pipeline.seeds import load_seed_manifests

        print_comparisons(load_seed_manifests(suite_dir))
        return report_failures(manifest.get("failed") or {})

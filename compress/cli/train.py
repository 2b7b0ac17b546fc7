"""`compress models`, `compress train`, `compress sparsity`: the registry, dense training, and a
model's sparsity.

The library is imported inside each command and helper, deliberately: `compress --help` then
starts in 0.1 s instead of the 2 s that importing torch takes.
"""
from __future__ import annotations

from pathlib import Path

from compress.cli.args import (
    add_data_args,
    add_model_args,
    add_train_args,
    data_parallel,
    load_data,
    model_source,
    split_data,
    train_config,
)
from compress.cli.base import Command, command
from compress.console import out
from compress.kinds import Kind


@command
class Models(Command):
    name = "models"
    help = "list the registered architectures"

    def run(self, args) -> int:
        from rich.table import Table

        from compress.models import describe_models

        t = Table(title="registered models")
        t.add_column("name")
        t.add_column("description")
        for n, d in describe_models().items():
            t.add_row(n, d)
        out.print(t)
        return 0


@command
class Train(Command):
    name = "train"
    help = "train a dense baseline from scratch"

    def add_arguments(self, p):
        add_model_args(p)
        add_data_args(p)
        add_train_args(p)
        p.add_argument("--out", type=Path, default=None, metavar="FILE",
                       help="checkpoint path (default runs/dense/MODEL_dense_eEPOCHS_sSEED.pt)")
        p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
        p.add_argument("--resume", action="store_true",
                       help="continue the unfinished checkpoint at --out after its last saved epoch, with its optimiser, "
                            "schedule and random state (the same options it was started with)")

    def run(self, args) -> int:
        from compress.baseline import train_baseline
        from compress.io import check_writable
        from compress.models import ModelSpec
        from compress.presets import dense_config

        source, model_args = model_source(args)
        source = source or "vgg13"
        cfg = train_config(args, dense_config(source))
        label = ModelSpec(source).label
        world, device = data_parallel(args)
        path = args.out or Path("runs/dense") / f"{label}_dense_e{cfg.epochs}_s{cfg.seed}.pt"
        check_writable(path, force=args.force or args.resume)
        data = split_data(args, load_data(args, device))
        spec = ModelSpec(source, data.num_classes, args.width, data.image_size, args=model_args)
        if world.distributed:
            out.print(f"data-parallel: {world.size} processes ({'NCCL' if device.type == 'cuda' else 'Gloo'}), global "
                      f"batch {cfg.batch_size} = {cfg.batch_size // world.size} per process"
                      f"{', BatchNorm synchronised' if args.sync_bn else ', BatchNorm per process'}")
        ckpt = train_baseline(spec, data, cfg, path, device=device, force=args.force, sync_bn=args.sync_bn,
                              resume=args.resume)
        if not world.main:
            return 0
        from compress.report.tables import training_summary

        out.print(training_summary(ckpt, path))
        return 0


@command
class Sparsity(Command):
    name = "sparsity"
    help = "per-layer and overall sparsity of a model (zeros over weights, as docs/concepts.md defines it), as a table and JSON"

    def add_arguments(self, p):
        p.add_argument("model", type=Path, help="any checkpoint of ours")
        p.add_argument("--kind", choices=("unstructured", "filter"), default=None,
                       help="definition to use (default: the kind the model was pruned with)")
        p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the report to this JSON file")

    def run(self, args) -> int:
        from compress.checkpoint import load_checkpoint
        from compress.prune.rebuild import model_from_checkpoint
        from compress.prune.sparsity import sparsity_report, sparsity_table, write_report

        ckpt = load_checkpoint(args.model)
        kind = args.kind or Kind(ckpt.get("meta", {}).get("prune_kind") or Kind.UNSTRUCTURED).definition
        report = sparsity_report(model_from_checkpoint(ckpt), kind)
        out.print(sparsity_table(report, f"{kind} sparsity of {args.model.name}"))
        if args.json:
            write_report(report, args.json)
        return 0

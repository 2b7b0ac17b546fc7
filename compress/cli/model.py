"""Subcommands about the user's own model (`compress layers`, `compress import`): parsing and printing only."""
from __future__ import annotations

from pathlib import Path

from compress.cli.args import add_data_args, add_model_args, load_data, model_source
from compress.cli.base import Command, command
from compress.console import notice, out
from compress.errors import CompressError
from compress.kinds import Kind
from compress.options import positive_int, sparsity


def _spec(args, num_classes: int, image_size: int):
    from compress.models import ModelSpec

    source, model_args = model_source(args)
    return ModelSpec(source or "vgg13", num_classes, args.width, image_size, args=model_args)


@command
class Layers(Command):
    name = "layers"
    help = "list a model's prunable layers (names for ratio files, shares of parameters and MACs) and write a ratio template"

    def add_arguments(self, p):
        add_model_args(p, weights=True, normalisation=False)
        p.add_argument("--checkpoint", "--weights", type=Path, default=None, metavar="WEIGHTS",
                       help="weights (ours or yours) for --allocation global; also names the model if it is ours")
        p.add_argument("--num-classes", type=positive_int, default=10, metavar="N", help="classes the model predicts (default 10)")
        p.add_argument("--image-size", type=positive_int, default=32, metavar="N", help="input size in px (default 32)")
        p.add_argument("--kind", choices=("unstructured", "filter"), default="filter",
                       help="which pruning the template is for (default filter)")
        p.add_argument("--template", type=sparsity, default=None, metavar="RATIO",
                       help="write a ratio file with every prunable layer at RATIO (or --allocation global)")
        p.add_argument("--allocation", choices=("uniform", "global"), default="uniform",
                       help="template ratios: uniform (default), or one magnitude ranking over all layers (needs --checkpoint)")
        p.add_argument("--out", type=Path, default=None, metavar="FILE.yaml",
                       help="template path (default LABEL_KIND_RATIO.yaml in the current folder)")
        p.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    def run(self, args) -> int:
        from rich.table import Table

        from compress.checkpoint import build_spec, load_dense
        from compress.io import check_writable
        from compress.models import ModelSpec
        from compress.models.structure import layer_rows
        from compress.prune.ratios import allocate, write_ratio_file
        from compress.prune.rebuild import model_from_checkpoint

        spec = _spec(args, args.num_classes, args.image_size)
        if args.checkpoint is not None:
            ckpt = load_dense(args.checkpoint, spec if args.model else None, trust_pickle=args.trust_pickle)
            spec = ModelSpec.from_dict(ckpt["model"])
            model = model_from_checkpoint(ckpt)
        else:
            model = build_spec(spec)
        path = None
        if args.template is not None:
            if args.allocation == "global" and args.checkpoint is None:
                raise CompressError("--allocation global ranks trained weights", "pass --checkpoint WEIGHTS")
            path = args.out or Path(f"{spec.label}_{args.kind}_{args.template:.2f}.yaml")
            check_writable(path, force=args.force)
        rows = layer_rows(model, spec.example_input())
        t = Table(title=f"layers of {spec.describe()} ({spec.image_size} px, {spec.num_classes} classes)")
        for col in ("parameter", "type", "shape", "params %", "MACs %", "filter pruning"):
            t.add_column(col, justify="right" if "%" in col else "left", overflow="fold")
        for r in rows:
            kind = r["type"] + (f" (groups {r['groups']})" if r["groups"] > 1 else "")
            t.add_row(r["name"], kind, "×".join(map(str, r["shape"])), f"{100 * r['param_share']:.2f}",
                      f"{100 * r['mac_share']:.2f}", "yes" if r["filter"] else f"no: {r['why_not']}")
        total_macs = sum(r["macs"] for r in rows)
        t.caption = (f"{sum(p.numel() for p in model.parameters()):,} parameters · {total_macs / 1e6:.1f}M MACs per image "
                     f"(conv and linear) · unstructured pruning may touch every row; filter pruning the rows marked yes")
        out.print(t)
        if path is not None:
            ratios = allocate(model, args.kind, args.template, args.allocation)
            skipped = [r for r in rows if args.kind == Kind.FILTER and r["type"] == "Conv2d" and not r["filter"]]
            header = (f"{args.kind} ratios for {spec.name} ({args.allocation} allocation, target {args.template}),\n"
                      f"written by `compress layers --template`: edit the ratios, then pass this file as --config.\n"
                      + "".join(f"left out: {r['name']}: {r['why_not']}\n" for r in skipped))
            write_ratio_file(path, ratios, header)
            out.print(f"ratio template: {path} ({len(ratios)} layers)")
        return 0


@command
class Import(Command):
    name = "import"
    help = "bring your own weights: check them against the model, evaluate, save as a dense checkpoint of ours"

    def add_arguments(self, p):
        add_model_args(p, weights=True)
        p.add_argument("--checkpoint", "--weights", type=Path, required=True, metavar="WEIGHTS",
                       help="state dict (.pt/.pth/.bin), a training script's nested dict, or .safetensors")
        add_data_args(p)
        p.add_argument("--out", type=Path, required=True, metavar="DENSE.pt",
                       help="where to write the checkpoint (usable by every command: sweep, sensitivity, export, ...)")
        p.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    def run(self, args) -> int:
        from compress.checkpoint import save_checkpoint
        from compress.env import resolve_device
        from compress.io import check_writable
        from compress.pipeline.run import PruneOptions, resolve_dense

        if args.model is None:
            raise CompressError("import needs --model: the weights file does not say which architecture it fits",
                                "e.g. --model my_vgg.py:vgg13 or --model torchvision:resnet18")
        check_writable(args.out, force=args.force)
        device = resolve_device(args.device)
        data = load_data(args, device)
        source, model_args = model_source(args)
        opts = PruneOptions(kind="", model=source, model_args=model_args, width=args.width,
                            checkpoint=args.checkpoint, trust_pickle=args.trust_pickle, val_split=args.val_split,
                            val_data=args.val_data)
        spec, dense, data = resolve_dense(opts, data, device)
        if "imported" not in dense["meta"]:
            notice(f"{args.checkpoint} is already a checkpoint of ours; copying it")
        save_checkpoint(args.out, dense)
        out.print(f"saved {args.out}: next, e.g. `compress sweep {args.out}` or "
                  f"`compress filter --ratio 0.4 --checkpoint {args.out}`")
        return 0

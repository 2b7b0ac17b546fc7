"""The `compress` command: argument parsing and printing only; every subcommand calls the library.

Errors a user can fix are `CompressError`s: one line on stderr, exit code 2. `--debug` shows
the traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .console import err, out
from .errors import CompressError

COMMANDS: dict[str, "Command"] = {}


class Command:
    """A subcommand: `add_arguments(parser)` and `run(args) -> exit code`."""

    name = ""
    help = ""

    def add_arguments(self, p: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def command(cls):
    COMMANDS[cls.name] = cls()
    return cls


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors that point at --help (exit code 2, like every user error)."""

    def error(self, message: str):
        err.print(f"[bold red]error:[/bold red] {self.prog}: {message}; see `{self.prog} --help`", soft_wrap=True)
        sys.exit(2)


# --------------------------------------------------------------------------- shared options
def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer (got {v})")
    return v


def ratio(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"a sparsity ratio must be in [0, 1) (got {v}); e.g. 0.8 for 80%")
    return v


def val_split_value(text: str) -> float | None:
    from .data import parse_val_split

    return parse_val_split(text)


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="auto", metavar="SOURCE",
                   help="CIFAR-10 folder (cifar-10-batches-py), 'sample' (bundled 4068/1017 images), 'cifar10' "
                        "(cache or download), 'imagefolder:PATH', or 'auto' (cache, download, else sample)")
    p.add_argument("--image-size", type=positive_int, default=None, metavar="N",
                   help="resize images to N x N px (image folders: default their own size when all share one, "
                        "else 64; CIFAR: 32)")
    p.add_argument("--val-split", type=_arg_type(val_split_value), default=None, metavar="F",
                   help="fraction of the training images held out (seeded, per class) for every choice the tool "
                        "makes; the test split is only reported. auto (default): 10%%, at least 1000 images "
                        "(at most a fifth), at most 5000; 0: none, choices then read the test split (said). "
                        "A checkpoint of ours keeps the split it was trained beside")
    p.add_argument("--stream", action="store_true",
                   help="image folders: read the images from disk each epoch through DataLoader worker processes "
                        "instead of holding them decoded in memory (automatic above a quarter of RAM, or of GPU "
                        "memory; COMPRESS_STREAM_ABOVE_MB sets the limit). Results are the same either way")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="DataLoader processes per training process for a streamed folder (default: the CPUs "
                        "shared among torchrun's processes on this node, at most 8)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: cuda when available)")


def add_train_args(p: argparse.ArgumentParser, epochs: int | None, lr: float | None,
                   title: str = "training") -> None:
    g = p.add_argument_group(title)
    g.add_argument("--epochs", type=positive_int, default=epochs,
                   help="epochs of the training set (default: the recipe's, see compress/presets.py)")
    g.add_argument("--lr", type=float, default=lr,
                   help="peak learning rate per 128 images of the global batch, scaled with --batch-size "
                        "(default: the recipe's); the same value on 1 or N processes")
    g.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per step (default: the recipe's); under torchrun the global batch over all "
                        "processes, each taking an equal share of it (it must divide evenly)")
    g.add_argument("--seed", type=int, default=0, help="seed for init, shuffling and augmentation (default 0)")
    g.add_argument("--sync-bn", action="store_true",
                   help="under torchrun: BatchNorm statistics over the global batch, not each process's share "
                        "(for small per-process batches)")


def add_seeds_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("repeated seeds")
    g.add_argument("--seeds", type=_arg_type(seeds_value), default=None, metavar="LIST",
                   help="run once per seed (e.g. 0,1,2) into OUT/seed_N, then OUT/report.md and OUT/seeds.json: "
                        "mean ± sd per model and paired comparisons pooled over seeds and test images")
    g.add_argument("--seed-dense", choices=("each", "shared"), default="each",
                   help="each (default): a dense baseline per seed, so the spread holds its noise too; shared: one "
                        "baseline (the first seed's) for all, cheaper. A --checkpoint is always shared")


def seeds_value(text: str) -> tuple[int, ...]:
    from .seeds import parse_seeds

    return parse_seeds(text)


def floats(text: str) -> tuple[float, ...]:
    """'0.5,0.5,0.5' -> (0.5, 0.5, 0.5)."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 0.5,0.5,0.5") from None


def add_model_args(p: argparse.ArgumentParser, weights: bool = False) -> None:
    p.add_argument("--model", default=None, metavar="SOURCE",
                   help="a registered name (`compress models`), torchvision:NAME (any torchvision classifier, "
                        "random init), FILE.py:CALLABLE or package.module:CALLABLE returning an nn.Module "
                        "(default: the checkpoint's own model, else vgg13)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument for the model's builder, a YAML scalar (repeatable)")
    p.add_argument("--width", type=float, default=1.0,
                   help="channel width multiplier of registered models (default 1.0; tests use 0.125)")
    p.add_argument("--mean", type=floats, default=None, metavar="R,G,B",
                   help="input normalisation the model expects, per channel in [0, 1] units (default: the data's own)")
    p.add_argument("--std", type=floats, default=None, metavar="R,G,B", help="see --mean")
    if weights:
        p.add_argument("--trust-pickle", action="store_true",
                       help="allow --checkpoint to be a whole pickled module (torch.save(model, f)); unpickling "
                            "runs code from the file, so only for files you trust. Recorded in the manifest")


def model_source(args) -> tuple[str | None, dict]:
    """--model and --model-arg as (canonical source or None, builder arguments); a source that
    names no builder fails here, before any data is read."""
    from .models import create_model
    from .models.sources import canonical, check_source, kind_of, parse_model_args

    model_args = parse_model_args(args.model_arg)
    if not args.model:
        return None, model_args
    if kind_of(args.model) == "registry":
        create_model(args.model, width=args.width)
    else:
        check_source(args.model)
    return canonical(args.model), model_args


def load_data(args, device):
    """--data with --image-size, normalised by --mean/--std when given, on the device."""
    from .data import load_dataset

    data = load_dataset(args.data, image_size=args.image_size, stream=args.stream, workers=args.workers)
    if getattr(args, "mean", None) or getattr(args, "std", None):
        data = data.normalised(args.mean, args.std)
    return data.to(device)


def data_parallel(args) -> tuple:
    """Join torchrun's process group (a world of one otherwise) and this rank's device. Ranks other
    than 0 train in step with it but write only to a private scratch folder, removed at exit, and
    skip the deployment stages: the files a user sees are rank 0's alone."""
    import atexit
    import shutil
    import tempfile

    from .distributed import setup
    from .env import resolve_device

    world, device = setup(resolve_device(args.device))
    if world.distributed:
        if getattr(args, "speedup", None) or getattr(args, "latency_ms", None):
            raise CompressError("--speedup/--latency-ms do not run under torchrun (every rank would time the "
                                "runtime at once)", "run compress plan as one process, then --config plan.yaml")
        if getattr(args, "resume", False) and args.out is None:
            raise CompressError("--resume under torchrun needs --out", "pass the run folder to continue")
    if world.main:
        return world, device
    scratch = Path(tempfile.mkdtemp(prefix=f".compress-rank{world.rank}-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    if getattr(args, "out", None) is not None:
        target = scratch / "out" / Path(args.out).name
        if getattr(args, "resume", False) and Path(args.out).exists():  # the same state rank 0 resumes from
            shutil.copytree(args.out, target)
        args.out = target
    elif hasattr(args, "out"):
        args.out = scratch / "out" / "run"
    for stage in STAGE_NAMES:
        setattr(args, f"no_{stage}", True)
    return world, device


def split_data(args, data, ckpt: dict | None = None):
    """`data` with its validation split: the checkpoint's own, else --val-split's."""
    from .checkpoint import split_for

    return split_for(data, ckpt, getattr(args, "val_split", None))


def checkpoint_data(args, ckpt: dict):
    """--data, or else the dataset the checkpoint was trained on, at the model's image size and
    with its recorded normalisation (on the CPU; callers move it)."""
    from .checkpoint import with_contract
    from .data import load_dataset

    source = args.data if args.data != "auto" else ckpt.get("meta", {}).get("dataset", {}).get("source", "auto")
    data = load_dataset(source, quiet=True, image_size=getattr(args, "image_size", None) or ckpt["model"].get("image_size"),
                        stream=getattr(args, "stream", False), workers=getattr(args, "workers", None))
    return split_data(args, with_contract(data, ckpt), ckpt)


STAGE_NAMES = ("slim", "export", "quantize", "bench", "report")


def add_quantize_args(p) -> None:
    p.add_argument("--quantize", choices=("int8",), default="int8",
                   help="after export, INT8 ONNX files (ONNX Runtime static QDQ, calibrated on 512 training images) "
                        "with their accuracy on the whole test split (default int8; --no-quantize skips it)")
    p.add_argument("--max-drop", type=float, default=1.0, metavar="POINTS",
                   help="an INT8 model losing more top-1 than this vs its fp32 model fails the quantize stage "
                        "(no INT8 file for it; default 1.0)")


def _arg_type(check):
    """An argparse type from a checker that raises CompressError (one message for CLI and API)."""
    def parse(text: str):
        try:
            return check(text)
        except CompressError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = check.__name__.replace("_value", "")
    return parse


def add_plan_args(p, round_to_default: int | None = 16) -> None:
    """The latency target of `compress plan` and `compress filter --speedup`."""
    from .planner import latency_value, speedup_value

    t = p.add_mutually_exclusive_group()
    t.add_argument("--speedup", type=_arg_type(speedup_value), default=None, metavar="X",
                   help="prune to X times the dense model's speed, measured on --runtime at --at-batch "
                        "(per-layer widths chosen from a measured latency table, then verified)")
    t.add_argument("--latency-ms", type=_arg_type(latency_value), default=None, metavar="MS",
                   help="prune until one batch of --at-batch images takes at most MS milliseconds on --runtime "
                        "(within --tolerance: measured times move by a few %% between runs)")
    p.add_argument("--runtime", default="ort-cpu",
                   help="where latency is measured: ort-cpu (default), torch (CPU or --device), torch-bf16 (CUDA), ...")
    p.add_argument("--at-batch", type=positive_int, default=64, metavar="N",
                   help="batch size the latency is measured at (not the training batch; default 64)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads of the runtime (default: torch's)")
    if round_to_default is not None:
        p.add_argument("--round-to", type=positive_int, default=round_to_default, metavar="M",
                       help=f"kept widths are multiples of M (default {round_to_default})")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="a measured speed-up within this fraction of the target (or a time within this "
                        "fraction above --latency-ms) is a hit (default 0.05)")
    p.add_argument("--cost", choices=("loss", "score"), default="loss",
                   help="what cutting a layer costs: loss (default: the training loss increase when that layer alone "
                        "is cut, on 512 training images) or score (the --criterion scores of the filters cut)")
    p.add_argument("--search", choices=("greedy", "exact"), default="greedy",
                   help="greedy (default: NetAdapt's rule, narrow the layer that costs least per ms saved, on the "
                        "fitted latency model) or exact (a knapsack over single-layer savings, re-aimed)")


def plan_request(args, round_to: int):
    """A PlanRequest from `add_plan_args` options, or None when no target was given."""
    from .planner import PlanRequest

    if args.speedup is None and args.latency_ms is None:
        return None
    return PlanRequest(speedup=args.speedup, latency_ms=args.latency_ms, runtime=args.runtime, batch=args.at_batch,
                       threads=args.threads, round_to=round_to, criterion=args.criterion, cost=args.cost, search=args.search,
                       tolerance=args.tolerance, device=args.device)


def train_config(args, base=None):
    from .train import TrainConfig

    cfg = base or TrainConfig()
    changes = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size),
                                 ("seed", args.seed)) if v is not None}
    return type(cfg)(**{**cfg.to_dict(), **changes})


# --------------------------------------------------------------------------- commands
@command
class Models(Command):
    name = "models"
    help = "list the registered architectures"

    def run(self, args) -> int:
        from rich.table import Table

        from .models import describe_models

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
        add_train_args(p, epochs=None, lr=None)
        p.add_argument("--out", type=Path, default=None,
                       help="checkpoint path (default runs/dense/MODEL_dense_eEPOCHS_sSEED.pt)")
        p.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    def run(self, args) -> int:
        from .baseline import train_baseline
        from .checkpoint import check_writable
        from .env import resolve_device
        from .models import ModelSpec
        from .presets import dense_config

        source, model_args = model_source(args)
        source = source or "vgg13"
        cfg = train_config(args, dense_config(source))
        label = ModelSpec(source).label
        world, device = data_parallel(args)
        path = args.out or Path("runs/dense") / f"{label}_dense_e{cfg.epochs}_s{cfg.seed}.pt"
        check_writable(path, force=args.force)
        data = split_data(args, load_data(args, device))
        spec = ModelSpec(source, data.num_classes, args.width, data.image_size, args=model_args)
        if world.distributed:
            out.print(f"data-parallel: {world.size} processes ({'NCCL' if device.type == 'cuda' else 'Gloo'}), global "
                      f"batch {cfg.batch_size} = {cfg.batch_size // world.size} per process"
                      f"{', BatchNorm synchronised' if args.sync_bn else ', BatchNorm per process'}")
        ckpt = train_baseline(spec, data, cfg, path, device=device, force=args.force, sync_bn=args.sync_bn)
        if not world.main:
            return 0
        from .render import training_summary

        out.print(training_summary(ckpt, path))
        return 0


@command
class Sparsity(Command):
    name = "sparsity"
    help = "per-layer and overall sparsity of a model (the assignment's test_sparity), as a table and JSON"

    def add_arguments(self, p):
        p.add_argument("model", type=Path, help="any checkpoint of ours")
        p.add_argument("--kind", choices=("unstructured", "filter"), default=None,
                       help="definition to use (default: the kind the model was pruned with)")
        p.add_argument("--json", type=Path, default=None, help="also write the report to this JSON file")

    def run(self, args) -> int:
        from .checkpoint import load_checkpoint, model_from_checkpoint
        from .sparsity import sparsity_report, sparsity_table, write_report

        ckpt = load_checkpoint(args.model)
        kind = args.kind or ("filter" if ckpt.get("meta", {}).get("prune_kind") == "filter" else "unstructured")
        report = sparsity_report(model_from_checkpoint(ckpt), kind)
        out.print(sparsity_table(report, f"{kind} sparsity of {args.model.name}"))
        if args.json:
            write_report(report, args.json)
        return 0


class _Prune(Command):
    """Shared options of `compress unstructured|filter|nm`."""

    kind = ""

    def add_arguments(self, p):
        g = p.add_argument_group("what to prune")
        if self.kind != "nm":
            g.add_argument("--ratio", type=ratio, default=None,
                           help="overall target sparsity, e.g. 0.8 (unstructured) or 0.4 (filter)")
            g.add_argument("--config", type=Path, default=None, metavar="YAML",
                           help="layer ratios file (prune_ratios: {param name: ratio}); see configs/")
            g.add_argument("--allocation", choices=("auto", "uniform", "global"), default="auto",
                           help="layer ratios without --config: auto (a shipped ratio file for this model and "
                                "ratio when there is one, else uniform), uniform, or global ranking")
        if self.kind == "filter":
            g.add_argument("--round-to", type=int, default=0, metavar="M",
                           help="keep a multiple of M filters per layer (8, 16: faster kernels); overall "
                                "sparsity stays >= --ratio (with --speedup: default 16)")
        if self.kind == "nm":
            g.add_argument("--nm", default="2:4", help="N:M pattern: keep N of every M input channels (default 2:4)")
        g.add_argument("--criterion", choices=("magnitude", "taylor", "synflow"), default="magnitude",
                       help="importance score (default magnitude: |w|, or filter L2 norm)")
        s = p.add_argument_group("schedule")
        m = s.add_mutually_exclusive_group()
        m.add_argument("--omp", action="store_true", help="one-shot: prune once, then retrain (default)")
        m.add_argument("--imp", type=positive_int, metavar="K", help="iterative: K prune/retrain rounds (K >= 3 advised)")
        s.add_argument("--schedule", default="geometric",
                       help="IMP round targets: geometric (1-(1-s)^(k/K)), linear, or a list like 0.5,0.7,0.8")
        s.add_argument("--rewind", choices=("finetune", "lr", "weights"), default="lr",
                       help="retraining each round: finetune (small constant lr), lr (rewind the lr schedule; "
                            "default), weights (lottery ticket: rewind weights to an early dense epoch)")
        if self.kind == "filter":
            add_plan_args(p.add_argument_group("prune to a measured speed-up (instead of --ratio/--config)"),
                          round_to_default=None)
        d = p.add_argument_group("dense model")
        add_model_args(d, weights=True)
        d.add_argument("--checkpoint", "--weights", type=Path, default=None, metavar="WEIGHTS",
                       help="dense model to prune: a checkpoint of this toolchain, or your own weights with --model "
                            "(state dict .pt/.pth/.bin, a training script's nested dict, .safetensors) "
                            "(default: train one, cached and reused)")
        d.add_argument("--dense-epochs", type=positive_int, default=None,
                       help="epochs for a baseline trained here (default from presets)")
        add_data_args(p)
        add_train_args(p, epochs=None, lr=None, title="retraining (--epochs is the total over all rounds)")
        o = p.add_argument_group("output")
        o.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="run folder (default runs/MODEL_KIND_RATIO_SCHEDULE)")
        o.add_argument("--resume", action="store_true", help="continue an interrupted run from its last round")
        o.add_argument("--force", action="store_true", help="replace an existing run folder")
        for stage in STAGE_NAMES:
            o.add_argument(f"--no-{stage}", action="store_true", help=f"skip the {stage} stage")
        add_quantize_args(o)
        add_seeds_args(p)

    def run(self, args) -> int:
        from .pipeline import PruneOptions, run_prune
        from .presets import dense_config, retrain_config
        from .render import artifacts_table, prune_summary

        world, device = data_parallel(args)
        source, model_args = model_source(args)
        retrain = train_config(args, retrain_config(source))
        dense = dense_config(source)
        if args.dense_epochs:
            dense = type(dense)(**{**dense.to_dict(), "epochs": args.dense_epochs, "seed": args.seed})
        else:
            dense = type(dense)(**{**dense.to_dict(), "seed": args.seed})
        opts = PruneOptions(
            kind=self.kind, ratio=getattr(args, "ratio", None), config=getattr(args, "config", None),
            allocation=getattr(args, "allocation", "auto"), round_to=getattr(args, "round_to", 0),
            method="imp" if args.imp else "omp", rounds=args.imp or 1, schedule=args.schedule,
            rewind=args.rewind, criterion=args.criterion, nm=parse_nm(getattr(args, "nm", "2:4")),
            model=source, model_args=model_args, width=args.width, checkpoint=args.checkpoint,
            trust_pickle=args.trust_pickle, dense=dense, retrain=retrain, out=args.out, resume=args.resume, force=args.force,
            stages=tuple(s for s in STAGE_NAMES if not getattr(args, f"no_{s}")), max_drop=args.max_drop,
            command=args.argv, val_split=args.val_split, sync_bn=args.sync_bn,
            plan=plan_request(args, args.round_to or 16) if self.kind == "filter" else None)
        data = load_data(args, device)
        if args.seeds:
            return self.run_seeds(args, opts, data, device)
        manifest = run_prune(opts, data, device)
        if not world.main:
            return 0
        from .sparsity import sparsity_table

        sparsity = json.loads((Path(manifest["run_dir"]) / "sparsity.json").read_text())
        out.print(sparsity_table(sparsity, f"sparsity of {manifest['result']['path']}"))
        out.print(prune_summary(manifest))
        print_comparisons({"run": manifest})
        out.print(artifacts_table(manifest))
        if manifest.get("plan"):
            from .planner import bench_check

            out.print(bench_check(manifest, Path(manifest["run_dir"])), soft_wrap=True)
        failed = [k for k, v in manifest.get("stages", {}).items() if v["status"] == "failed"]
        return 1 if failed else 0


    @staticmethod
    def run_seeds(args, opts, data, device) -> int:
        """The command once per --seeds seed, then the summary over seeds."""
        import dataclasses

        from .pipeline import resolve_dense, run_prune, seeds_root
        from .render import prune_summary
        from .seeds import finished, for_seed, run_seeds

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

        summary = run_seeds(run_one, args.seeds, args.out or seeds_root(opts, spec), resume=args.resume,
                            force=args.force, what=f"{opts.method.upper()} {opts.kind} pruning",
                            seed_dense=args.seed_dense, shared_checkpoint=opts.checkpoint is not None,
                            command=args.argv)
        return 0 if summary["models"] else 1


def print_comparisons(manifests: dict[str, dict]) -> None:
    """The paired sentences (McNemar on the test images) for the runs just made."""
    from .comparisons import correctness, one_seed, sentence

    found = correctness({k: m for k, m in manifests.items() if m.get("status") == "complete"})
    for r in one_seed(found) if len(found) > 1 else []:
        out.print(sentence(r), soft_wrap=True)


def parse_nm(text: str) -> tuple[int, int]:
    try:
        n, m = (int(v) for v in text.split(":"))
    except ValueError:
        raise CompressError(f"--nm {text!r} is not N:M", "e.g. --nm 2:4") from None
    return n, m


@command
class Unstructured(_Prune):
    name = kind = "unstructured"
    help = "unstructured magnitude pruning (per-weight masks), OMP or IMP"


@command
class Filter(_Prune):
    name = kind = "filter"
    help = "filter pruning (whole output filters by L2 norm), OMP or IMP"


@command
class NM(_Prune):
    name = kind = "nm"
    help = "N:M semi-structured pruning (2:4 by default), OMP or IMP"


@command
class Slim(Command):
    name = "slim"
    help = "physically remove pruned filters and everything coupled to them (Torch-Pruning)"

    def add_arguments(self, p):
        p.add_argument("model", type=Path, help="filter-pruned model (e.g. Imp_filter_0.40_acc_70.12.pt)")
        p.add_argument("--out", type=Path, default=None, help="slim model path (default: MODEL_slim.pt beside it)")
        p.add_argument("--round-to", type=int, default=0, metavar="M",
                       help="also remove the weakest live filters so every layer keeps a multiple of M "
                            "(faster kernels; accuracy can change and is re-measured)")
        p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
        add_data_args(p)

    def run(self, args) -> int:
        from .checkpoint import check_writable, load_checkpoint, save_checkpoint
        from .env import resolve_device
        from .render import slim_summary
        from .slim import slim_checkpoint

        ckpt = load_checkpoint(args.model, kinds=("pruned", "dense", "slim"))
        path = args.out or args.model.with_name(args.model.stem + "_slim.pt")
        check_writable(path, force=args.force)
        device = resolve_device(args.device)
        data = checkpoint_data(args, ckpt).to(device)
        payload, result = slim_checkpoint(ckpt, data, round_to=args.round_to, device=device)
        save_checkpoint(path, payload)
        out.print(slim_summary(result.stats, path))
        return 0


@command
class All(Command):
    name = "all"
    help = "the assignment's full set: dense, OMP/IMP x unstructured/filter, slim, ONNX, benchmark, report"

    def add_arguments(self, p):
        add_model_args(p, weights=True)
        p.add_argument("--checkpoint", "--weights", type=Path, default=None, metavar="WEIGHTS",
                       help="dense model: a checkpoint of ours, or your own weights with --model "
                            "(default: train one, cached and reused)")
        p.add_argument("--dense-epochs", type=positive_int, default=None, help="epochs of a baseline trained here")
        p.add_argument("--unstructured-ratio", type=ratio, default=0.8, help="default 0.8")
        p.add_argument("--filter-ratio", type=ratio, default=0.4, help="default 0.4")
        p.add_argument("--imp", type=positive_int, default=3, metavar="K", help="IMP rounds (default 3)")
        p.add_argument("--allocation", choices=("auto", "uniform", "global"), default="auto",
                       help="layer ratios: auto (shipped ratio files when they exist), uniform or global")
        add_data_args(p)
        add_train_args(p, epochs=None, lr=None)
        p.add_argument("--out", type=Path, default=None, help="suite folder (default runs/MODEL_all)")
        p.add_argument("--resume", action="store_true", help="continue an interrupted suite")
        p.add_argument("--force", action="store_true", help="replace an existing suite folder")
        for stage in STAGE_NAMES:
            p.add_argument(f"--no-{stage}", action="store_true", help=f"skip the {stage} stage")
        add_quantize_args(p)
        add_seeds_args(p)

    @staticmethod
    def run_seeds(args, base, data, device, root: Path) -> int:
        """The suite once per --seeds seed, then the summary over seeds."""
        import dataclasses

        from .pipeline import resolve_dense, run_all
        from .render import suite_summary
        from .seeds import finished, for_seed, load_seed_manifests, run_seeds

        _, _, data = resolve_dense(base, data, device)  # weights checked before any folder exists

        def run_one(seed: int, folder: Path) -> dict:
            if args.resume and (done := finished(folder)):
                return done
            one = for_seed(base, seed, args.seeds[0], args.seed_dense, None)
            one = dataclasses.replace(one, resume=args.resume and folder.exists(), force=False)
            manifest = run_all(one, {"unstructured": args.unstructured_ratio, "filter": args.filter_ratio}, data,
                               device, folder, rounds=args.imp)
            out.print(suite_summary(manifest, folder))
            return load_seed_manifests(folder)

        summary = run_seeds(run_one, args.seeds, root, resume=args.resume, force=args.force,
                            what="OMP/IMP × unstructured/filter (compress all)", seed_dense=args.seed_dense,
                            shared_checkpoint=base.checkpoint is not None, command=args.argv)
        return 0 if summary["models"] else 1

    def run(self, args) -> int:
        from .models import ModelSpec
        from .pipeline import PruneOptions, run_all
        from .presets import dense_config, retrain_config
        from .render import suite_summary

        world, device = data_parallel(args)
        source, model_args = model_source(args)
        dense = dense_config(source)
        dense = type(dense)(**{**dense.to_dict(), "seed": args.seed,
                               **({"epochs": args.dense_epochs} if args.dense_epochs else {})})
        base = PruneOptions(kind="", allocation=args.allocation, model=source, model_args=model_args, width=args.width,
                            checkpoint=args.checkpoint, trust_pickle=args.trust_pickle, dense=dense,
                            retrain=train_config(args, retrain_config(source)),
                            resume=args.resume, force=args.force, command=args.argv, val_split=args.val_split,
                            stages=tuple(s for s in STAGE_NAMES if not getattr(args, f"no_{s}")),
                            max_drop=args.max_drop, sync_bn=args.sync_bn)
        data = load_data(args, device)
        suite_dir = args.out or Path("runs") / f"{ModelSpec(source or 'vgg13').label}_all"
        if args.seeds:
            return self.run_seeds(args, base, data, device, suite_dir.with_name(suite_dir.name + "_seeds")
                                  if args.out is None else suite_dir)
        manifest = run_all(base, {"unstructured": args.unstructured_ratio, "filter": args.filter_ratio}, data, device,
                           suite_dir, rounds=args.imp)
        if not world.main:
            return 0
        out.print(suite_summary(manifest, suite_dir))
        from .seeds import load_seed_manifests

        print_comparisons(load_seed_manifests(suite_dir))
        return 0


# --------------------------------------------------------------------------- entry point
DATA_PARALLEL = ("train", "unstructured", "filter", "nm", "all", "sweep", "sensitivity")  # the commands that run under torchrun
COMMAND_MODULES = ("compress.cli_deploy", "compress.cli_analysis", "compress.cli_model", "compress.cli_plan")  # register more subcommands on import


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from . import __version__

    for module in COMMAND_MODULES:
        importlib.import_module(module)

    parser = Parser(
        prog="compress",
        description="Prune CNNs, physically remove what was pruned, export slim ONNX models and measure them.",
        epilog="Run `compress COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"compress {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
        cmd.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (already printed)
        return int(e.code or 0)
    if not args.command:
        parser.print_help()
        return 2
    args.argv = ["compress", *(sys.argv[1:] if argv is None else argv)]
    from . import distributed

    if distributed.launched() and args.command not in DATA_PARALLEL:
        err.print(f"[bold red]error:[/bold red] `compress {args.command}` does not run under torchrun yet; "
                  f"run it as one process (data-parallel so far: {', '.join(DATA_PARALLEL)})", soft_wrap=True)
        return 2
    rank = int(os.environ.get("RANK", "0"))
    if rank:  # under torchrun rank 0 speaks for all; the others only report their own errors
        out.quiet = err.quiet = True
    try:
        return COMMANDS[args.command].run(args) or 0
    except CompressError as e:
        if args.debug:
            raise
        if rank:
            print(f"error: (rank {rank}) {e}", file=sys.stderr)
        else:
            err.print(f"[bold red]error:[/bold red] {e}", soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted; finished files are intact, unfinished ones were not written")
        return 130
    except RuntimeError as e:
        if not distributed.launched() or args.debug:
            raise
        print(f"error: (rank {rank}) the process group failed: {str(e).splitlines()[0]}; the other ranks stop "
              f"too (within {distributed.TIMEOUT_S} s at most, COMPRESS_DIST_TIMEOUT)", file=sys.stderr)
        return 1
    finally:
        distributed.teardown()


if __name__ == "__main__":
    sys.exit(main())

"""Options the subcommands share (data, model, training, seeds, stages, plans) and turning them into
data, configs and the data-parallel world.

The library is imported inside each command and helper, deliberately: `compress --help` then
starts in 0.1 s instead of the 2 s that importing torch takes.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from compress.errors import CompressError
from compress.kinds import STAGES
from compress.options import add_options, argparse_type, from_args, positive_int


# --------------------------------------------------------------------------- shared options
def add_data_args(p: argparse.ArgumentParser, only: tuple[str, ...] | None = None, **helps: str) -> None:
    """DataOptions' options in the group 'data and device'; `only` names the ones a command uses
    (an option that would do nothing is not offered), `helps` a command's own help for one."""
    from compress.data_options import DataOptions

    names = [f.name for f in dataclasses.fields(DataOptions) if only is None or f.name in only]
    add_options(p.add_argument_group("data and device"), DataOptions, *names, helps=helps)


def data_options(args):
    """The data options a command was given (DataOptions' defaults for those it does not offer)."""
    from compress.data_options import DataOptions

    return from_args(DataOptions, args)


def add_train_args(p: argparse.ArgumentParser, title: str = "training") -> None:
    """TrainOverrides' options (each replaces one number of the command's recipe), and --sync-bn."""
    from compress.train_config import TrainOverrides

    g = p.add_argument_group(title)
    add_options(g, TrainOverrides)
    g.add_argument("--sync-bn", action="store_true",
                   help="under torchrun: BatchNorm statistics over the global batch, not each process's share "
                        "(for small per-process batches)")


def add_seeds_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("repeated seeds")
    g.add_argument("--seeds", type=argparse_type(seeds_value), default=None, metavar="LIST",
                   help="run once per seed (e.g. 0,1,2) into OUT/seed_N, then OUT/report.md and OUT/seeds.json: "
                        "mean ± sd per model and paired comparisons pooled over seeds and test images")
    g.add_argument("--seed-dense", choices=("each", "shared"), default="each",
                   help="each (default): a dense baseline per seed, so the spread holds its noise too; shared: one "
                        "baseline (the first seed's) for all, cheaper. A --checkpoint is always shared")


def seeds_value(text: str) -> tuple[int, ...]:
    from compress.pipeline.seeds import parse_seeds

    return parse_seeds(text)


def add_model_args(p: argparse.ArgumentParser, weights: bool = False, normalisation: bool = True) -> None:
    """ModelOptions' options: --mean/--std for commands that read images (`normalisation`),
    --trust-pickle for those that read weights."""
    from compress.model_options import ModelOptions

    names = ["model", "model_arg", "width", *(("mean", "std") if normalisation else ()),
             *(("trust_pickle",) if weights else ())]
    add_options(p, ModelOptions, *names)


def model_options(args):
    """The model options a command was given (ModelOptions' defaults for those it does not offer)."""
    from compress.model_options import ModelOptions

    return from_args(ModelOptions, args)


def model_source(args) -> tuple[str | None, dict]:
    """--model and --model-arg as (canonical source or None, builder arguments); a source that
    names no builder fails here, before any data is read."""
    from compress.models import create_model
    from compress.models.sources import canonical, check_source, kind_of, parse_model_args

    opts = model_options(args)
    model_args = parse_model_args(list(opts.model_arg))
    if not opts.model:
        return None, model_args
    if kind_of(opts.model) == "registry":
        create_model(opts.model, width=opts.width)
    else:
        check_source(opts.model)
    return canonical(opts.model), model_args


def load_data(args, device):
    """--data with --image-size (for `auto` and a checkpoint of ours, the dataset it was trained
    on), normalised by --mean/--std when given, on the device."""
    from compress.checkpoint import starting_data

    opts = data_options(args)
    data = starting_data(opts.data, getattr(args, "checkpoint", None), image_size=opts.image_size,
                         stream=opts.stream, workers=opts.workers)
    model = model_options(args)
    if model.mean or model.std:
        data = data.normalised(model.mean, model.std)
    return data.to(device)


def data_parallel(args) -> tuple:
    """Join torchrun's process group (a world of one otherwise) and this rank's device. Ranks other
    than 0 train in step with it but write only to a private scratch folder, removed at exit, and
    skip the deployment stages: the files a user sees are rank 0's alone."""
    import atexit
    import shutil
    import tempfile

    from compress.distributed import setup
    from compress.env import resolve_device

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
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if Path(args.out).is_dir() else shutil.copy2)(args.out, target)
        args.out = target
    elif hasattr(args, "out"):
        args.out = scratch / "out" / "run"
    for stage in STAGE_NAMES:
        setattr(args, f"no_{stage}", True)
    return world, device


def split_data(args, data, ckpt: dict | None = None):
    """`data` with its validation split: the checkpoint's own, else --val-split's."""
    from compress.checkpoint import split_for

    opts = data_options(args)
    return split_for(data, ckpt, opts.val_split, opts.val_data)


def checkpoint_data(args, ckpt: dict):
    """--data, or else the dataset the checkpoint was trained on (`checkpoint.checkpoint_dataset`)."""
    from compress.checkpoint import checkpoint_dataset

    opts = data_options(args)
    return checkpoint_dataset(ckpt, opts.data, val_split=opts.val_split, val_data=opts.val_data,
                              image_size=opts.image_size, stream=opts.stream, workers=opts.workers)


STAGE_NAMES = STAGES  # the pipeline's stages (compress.kinds)


def add_distill_args(p: argparse.ArgumentParser) -> None:
    """Knowledge distillation during retraining (compress.train_config.Distill)."""
    from compress.train_config import Distill

    d = Distill()
    g = p.add_argument_group("distillation (retraining learns from a teacher's logits as well as the labels)")
    g.add_argument("--distill", action=argparse.BooleanOptionalAction, default=None,
                   help="loss = (1 - alpha)·cross-entropy + alpha·T²·KL(teacher ‖ student) at temperature T, the "
                        "teacher (default: the dense model being pruned) in eval mode on the same augmented "
                        "batches; its time per epoch is printed and recorded (default: off; what it buys: "
                        "docs/results/distill.md)")
    g.add_argument("--teacher", type=Path, default=None, metavar="CHECKPOINT",
                   help="distil from this checkpoint of ours (dense, pruned or slim, e.g. a wider or longer-trained "
                        "network) instead of the dense model; implies --distill. What each teacher buys: "
                        "docs/results/distill.md")
    g.add_argument("--distill-alpha", type=float, default=None, metavar="A",
                   help=f"weight of the teacher's term, in [0, 1] (default {d.alpha:g}); implies --distill")
    g.add_argument("--distill-temperature", type=float, default=None, metavar="T",
                   help=f"softening temperature of both logits, > 0 (default {d.temperature:g}); implies --distill")


def distill_config(args):
    """The Distill settings the options ask for, or None (cross-entropy only)."""
    from compress.train_config import Distill

    implied = args.teacher is not None or args.distill_alpha is not None or args.distill_temperature is not None
    if args.distill is False:
        if implied:
            raise CompressError("--no-distill contradicts --teacher/--distill-alpha/--distill-temperature",
                                "drop one of them")
        return None
    if not (args.distill or implied):
        return None
    d = Distill()
    cfg = Distill(alpha=d.alpha if args.distill_alpha is None else args.distill_alpha,
                  temperature=d.temperature if args.distill_temperature is None else args.distill_temperature,
                  teacher=str(args.teacher) if args.teacher is not None else None)
    cfg.validate()
    if args.teacher is not None and not args.teacher.is_file():
        raise CompressError(f"the teacher {args.teacher} does not exist", "pass a checkpoint written by this toolchain")
    return cfg


class Deprecated(argparse.Action):
    """An option that does nothing for this command: accepted, with a notice that says why
    (scripts that pass one set of stage flags to every prune command keep working), hidden from help."""

    def __init__(self, option_strings, dest, why: str = "", **kw):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        self.why = why

    def __call__(self, parser, namespace, values, option_string=None):
        from compress.console import notice

        notice(f"{option_string} does nothing here ({self.why}) and will be removed; drop it")


class Renamed(argparse.Action):
    """An option's old name: still accepted, so scripts keep working, its value stored under the
    new name with a notice; hidden from help. (`Deprecated` is for an option that does nothing.)"""

    def __init__(self, option_strings, dest, new: str = "", **kw):
        kw["default"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kw)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        from compress.console import notice

        notice(f"{option_string} is now {self.new} (the old name will be removed)")
        setattr(namespace, self.dest, values)


def add_plan_args(p, round_to: bool = True) -> None:
    """The latency target of `compress plan` and `compress filter --speedup`, from PlanRequest's
    fields (filter has its own --round-to, which a plan rounds to 16 when it is 0)."""
    from compress.analysis.options import PlanRequest

    add_options(p.add_mutually_exclusive_group(), PlanRequest, "speedup", "latency_ms")
    add_options(p, PlanRequest, "runtime", "batch", "threads", *(("round_to",) if round_to else ()), "tolerance",
                "cost", "search")
    p.add_argument("--at-batch", type=positive_int, dest="batch", action=Renamed, new="--latency-batch")
    p.add_argument("--tolerance", type=float, dest="tolerance", action=Renamed, new="--speedup-tolerance")


def plan_request(args, round_to: int):
    """A PlanRequest from `add_plan_args` options, or None when no target was given."""
    from compress.analysis.options import PlanRequest

    if args.speedup is None and args.latency_ms is None:
        return None
    return from_args(PlanRequest, args, round_to=round_to, criterion=args.criterion, device=args.device)


def train_config(args, recipe=None):
    """The recipe (TrainConfig's defaults when None) with the training options given in place."""
    from compress.train_config import TrainConfig, TrainOverrides

    return from_args(TrainOverrides, args).apply(recipe or TrainConfig())

"""From a command's options to a finished run: dense baseline, ratios, prune, then the
deployment stages (slim, export, bench, figures, report). The CLI only parses and prints."""
from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .baseline import get_baseline
from .console import notice, out
from .data import Dataset
from .errors import CompressError
from .models import ModelSpec, create_model
from .presets import dense_config, shipped_config
from .ratios import allocate, planned_sparsity, read_ratio_file, round_to_multiple
from .schedule import PruneJob, prune
from .train import TrainConfig

STAGES = ("slim", "export", "bench", "report")


@dataclass
class PruneOptions:
    kind: str
    ratio: float | None = None
    config: Path | None = None
    allocation: str = "auto"
    round_to: int = 0
    method: str = "omp"
    rounds: int = 1
    schedule: str = "geometric"
    rewind: str = "lr"
    criterion: str = "magnitude"
    nm: tuple[int, int] = (2, 4)
    model: str = "vgg13"
    width: float = 1.0
    checkpoint: Path | None = None
    dense: TrainConfig | None = None
    retrain: TrainConfig = field(default_factory=TrainConfig)
    out: Path | None = None
    resume: bool = False
    force: bool = False
    stages: tuple[str, ...] = STAGES
    show: bool = True


def resolve_ratios(opts: PruneOptions, model: torch.nn.Module) -> tuple[dict[str, float], float, str]:
    """(layer ratios, overall target, where they came from)."""
    kind = "unstructured" if opts.kind == "nm" else opts.kind
    if opts.kind == "nm":
        from .masks import nm_layers

        n, m = opts.nm
        names = nm_layers(model, m)
        ratios = {name: 1 - n / m for name in names}
        return ratios, planned_sparsity(model, kind, ratios), f"{n}:{m} on {len(names)} layers"
    config = opts.config
    source = "file"
    if config is None and opts.allocation == "auto" and opts.ratio is not None:
        config = shipped_config(opts.model, kind, opts.ratio)
        source = "shipped"
    if config is not None:
        ratios = read_ratio_file(config, model, kind)
        if opts.round_to:
            ratios = round_to_multiple(model, ratios, opts.round_to, opts.ratio or 0.0)
        reached = planned_sparsity(model, kind, ratios)
        if opts.ratio is not None and reached < opts.ratio - 5e-3:
            raise CompressError(f"the ratio file {config} reaches {reached:.4f} overall {kind} sparsity, "
                                f"below --ratio {opts.ratio}", "raise its ratios, or lower --ratio")
        target = opts.ratio if opts.ratio is not None else math.floor(reached * 100 + 1e-9) / 100
        return ratios, target, f"{'shipped ' if source == 'shipped' else ''}ratio file {config}"
    if opts.ratio is None:
        raise CompressError(f"{opts.kind} pruning needs --ratio R or --config YAML", "e.g. --ratio 0.8")
    method = "uniform" if opts.allocation == "auto" else opts.allocation
    ratios = allocate(model, kind, opts.ratio, method)
    if opts.round_to:
        ratios = round_to_multiple(model, ratios, opts.round_to, opts.ratio)
    return ratios, opts.ratio, f"{method} allocation" + (f", widths rounded to {opts.round_to}" if opts.round_to else "")


def default_run_dir(opts: PruneOptions, target: float) -> Path:
    sched = "omp" if opts.method == "omp" else f"imp{opts.rounds}"
    kind = f"nm{opts.nm[0]}{opts.nm[1]}" if opts.kind == "nm" else opts.kind
    return Path("runs") / f"{opts.model}_{kind}_{target:.2f}_{sched}"


def open_run_dir(path: Path, resume: bool, force: bool) -> Path:
    if path.exists() and any(path.iterdir()):
        if resume:
            return path
        if not force:
            raise CompressError(f"run folder {path} already exists",
                                "pass --resume to continue it, --force to start it afresh, or --out DIR")
        shutil.rmtree(path)
    elif resume:
        raise CompressError(f"nothing to resume in {path}", "drop --resume to start the run")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_prune(opts: PruneOptions, data: Dataset, device: torch.device) -> dict:
    """The whole prune command; returns the run manifest (with paths of every artifact)."""
    # ---- checks that need no training come first: a bad ratio file must not cost a baseline
    if opts.checkpoint is not None:
        from .checkpoint import load_checkpoint

        dense_meta = load_checkpoint(opts.checkpoint, kinds=("dense",))
        spec = ModelSpec.from_dict(dense_meta["model"])
        if spec.num_classes != data.num_classes:
            raise CompressError(f"{opts.checkpoint} predicts {spec.num_classes} classes but the data has "
                                f"{data.num_classes}", "pass the --data it was trained on")
    else:
        spec = ModelSpec(opts.model, data.num_classes, opts.width, data.image_size)
    opts.model = spec.name
    probe = create_model(spec.name, num_classes=spec.num_classes, width=spec.width, image_size=spec.image_size)
    ratios, target, source = resolve_ratios(opts, probe)
    if opts.kind != "nm":
        from .render import ratio_table

        out.print(ratio_table(probe, "unstructured" if opts.kind == "nm" else opts.kind, ratios, source))
    run_dir = open_run_dir(opts.out or default_run_dir(opts, target), opts.resume, opts.force)

    # ---- the dense model: given, cached, or trained now
    dense_cfg = opts.dense or dense_config(spec.name)
    dense, dense_path = get_baseline(spec, data, dense_cfg, device=device, checkpoint=opts.checkpoint, show=opts.show)
    local_dense = run_dir / "dense.pt"
    if not local_dense.exists():
        _link_or_copy(dense_path, local_dense)

    job = PruneJob(kind=opts.kind, method=opts.method, target=target, ratios=ratios, rounds=opts.rounds,
                   schedule=opts.schedule, rewind=opts.rewind, criterion=opts.criterion, retrain=opts.retrain,
                   nm=opts.nm)
    manifest = prune(job, dense, data, run_dir, device=device, resume=opts.resume, show=opts.show,
                     dense_path=dense_path)
    manifest["ratio_source"] = source
    return manifest


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        dst.hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)
